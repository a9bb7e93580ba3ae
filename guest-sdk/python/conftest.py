"""pytest: the SDK's tests run against bindings generated from wit/."""

import garden_sdk_pytest

garden_sdk_pytest.install()
