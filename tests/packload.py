"""The pack as package `pyra_pack` for host-free tests (core/, kernels/), without ComfyUI.

The root `__init__` is not run (it imports the host); submodules import with their relative imports intact,
as they do when the host loads the pack under its path-derived name.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

PACK_ALIAS = "pyra_pack"
REPO = Path(__file__).resolve().parent.parent


def load_pack_package() -> types.ModuleType:
    if PACK_ALIAS not in sys.modules:
        pkg = types.ModuleType(PACK_ALIAS)
        pkg.__path__ = [str(REPO)]
        pkg.__file__ = str(REPO / "__init__.py")
        sys.modules[PACK_ALIAS] = pkg
    return sys.modules[PACK_ALIAS]
