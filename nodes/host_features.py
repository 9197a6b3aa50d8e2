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


# --- Flux builders: FluxParams fields (txt_ids_dims is required from 0.8 on) -------------------------------------


@functools.cache
def flux_params_fields() -> frozenset[str]:
    """The field names of the host's `comfy.ldm.flux.model.FluxParams` dataclass."""
    import dataclasses

    from comfy.ldm.flux.model import FluxParams

    return frozenset(f.name for f in dataclasses.fields(FluxParams))


def flux_unet_config(config: dict) -> dict:
    """A copy of a Flux.1 unet_config that this host's `FluxParams` accepts.

    Hosts whose FluxParams has a required `txt_ids_dims` (the text-token axes that carry positions; Flux.2 and
    Z-Image set some) get `[]`, which is what the host's own detection gives Flux.1 (all text ids zero, as on
    hosts without the field). A value already in `config` is kept."""
    out = dict(config)
    if "txt_ids_dims" in flux_params_fields():
        out.setdefault("txt_ids_dims", [])
    return out


# --- DFM / adapter training: comfy-kitchen rope ops without an autograd formula (0.8 on) ----------------------------


@functools.cache
def kitchen_rope_references() -> dict:
    """{comfy_kitchen rope op: its eager torch reference}, for every rope op of the installed comfy_kitchen that
    has a same-named function in `comfy_kitchen.backends.eager.rope` (op packets and their overloads both).

    The host's Flux and Wan RoPE dispatch to these ops (comfy/ldm/flux/math.py: unconditionally on 0.8.x, outside
    its own trainer on 0.33), and comfy_kitchen registers no autograd formula for them, so backward through them
    fails. The eager functions are plain torch and differentiable. Empty where comfy_kitchen is absent (0.3.76-dev:
    the host's RoPE is plain torch)."""
    try:
        import comfy_kitchen  # noqa: F401  (registers torch.ops.comfy_kitchen)
        from comfy_kitchen.backends.eager import rope as eager
    except ImportError:
        return {}
    import torch

    table = {}
    for name in dir(eager):
        fn = getattr(eager, name)
        if name.startswith("_") or "rope" not in name or not callable(fn):
            continue
        try:
            packet = getattr(torch.ops.comfy_kitchen, name)
        except (AttributeError, RuntimeError):
            continue
        table[packet] = fn
        for overload in packet.overloads():
            table[getattr(packet, overload)] = fn
    if not table:
        log.warning("comfy_kitchen without rope ops found: Pyra's training uses the host's RoPE as it is")
    return table
