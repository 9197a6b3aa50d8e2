"""What this ComfyUI offers, probed by feature (a symbol, a signature, an attribute), never by version string.

Every place where Pyra's behaviour depends on the host asks here, so the host matrix (0.3.76-dev, 0.8.1, 0.33.0
and any COMFYUI_PATH host) is handled in one module. The version is only reported, in messages and logs.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("pyra")


@functools.cache
def comfyui_version() -> str:
    """The host's version string for messages ("unknown" where comfyui_version.py is absent)."""
    try:
        from comfyui_version import __version__
    except ImportError:
        return "unknown"
    return str(__version__)
