"""pytest: the module's logic against bindings generated from wit/."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "guest-sdk" / "python"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import garden_sdk_pytest  # noqa: E402

garden_sdk_pytest.install()
