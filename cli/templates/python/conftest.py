"""pytest: the garden SDK and bindings generated from the WIT."""

import sys

sys.path.insert(0, "{{sdk}}")

import garden_sdk_pytest  # noqa: E402

garden_sdk_pytest.install()
