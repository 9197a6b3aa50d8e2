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


# --- Sparse inference (PyraSparsify, CUDA graphs): how the host casts, patches and streams a layer's weights ---


def patcher_is_dynamic(patcher) -> bool:
    """Whether `patcher` streams weights with dynamic VRAM (ModelPatcherDynamic, 0.16+, comfy-aimdo): every
    comfy.ops module gets comfy_cast_weights and its weight is cast into a VRAM buffer per call, from the offload
    device. `is_dynamic()` exists on 0.16+; older patchers never stream this way."""
    probe = getattr(patcher, "is_dynamic", None)
    return bool(probe()) if callable(probe) else False


def cast_time_patches(module, param: str = "weight") -> tuple:
    """The functions the host applies to `module.<param>` when it casts it for a call, in order: the LoRA of a
    dynamic-VRAM load (`<param>_lowvram_function`, 0.16+), then `<param>_function` (the LoRA of a low-VRAM load
    on every host, weight wrappers). Empty: the host casts the stored tensor unchanged."""
    lowvram = getattr(module, f"{param}_lowvram_function", None)
    return ((lowvram,) if lowvram is not None else ()) + tuple(getattr(module, f"{param}_function", ()))
