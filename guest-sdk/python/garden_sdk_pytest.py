"""Plain pytest for garden modules: the WIT bindings, generated on the fly.

The SDK imports the records generated from ``wit/garden.wit``
(``wit_world``). Outside a component they are plain Python files, which
``componentize-py bindings`` writes; a ``conftest.py`` calls
:func:`install` once so module logic runs under pytest with no Wasm.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
WIT = HERE.parent.parent / "wit"


def install() -> None:
    """Generate the bindings into a temporary directory and put them, and
    the SDK, on ``sys.path``."""
    if "wit_world" in sys.modules:
        return
    out = pathlib.Path(tempfile.mkdtemp(prefix="garden-bindings-"))
    try:
        subprocess.run(
            ["componentize-py", "-d", str(WIT), "-w", "garden-module", "bindings", str(out)],
            check=True,
            capture_output=True,
        )
    except FileNotFoundError:
        raise SystemExit(
            "componentize-py is missing: pip install componentize-py==0.25.1"
        ) from None
    sys.path.insert(0, str(out))
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("GARDEN_BINDINGS", str(out))
