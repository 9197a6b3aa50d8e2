"""What this ComfyUI offers, probed by feature (a symbol, a signature, an attribute), never by version string.

Every place where Pyra's behaviour depends on the host asks here, so the host matrix (0.3.76-dev, 0.8.1, 0.33.0
and any COMFYUI_PATH host) is handled in one module. The version is only reported, in messages and logs.
"""

from __future__ import annotations

import contextlib
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


# --- Adapter training (PyraTrainSparseAdapter): the host's TrainSampler (fwd_bwd since 0.3.76) ---------------------

TRAIN_SAMPLER_KWARGS = ("loss_callback", "batch_size", "total_steps", "seed", "training_dtype")
FWD_BWD_PARAMS = ("model_wrap", "batch_sigmas", "batch_noise", "batch_latent", "cond", "indicies", "extra_args",
                  "dataset_size", "bwd")
OLDEST_TRAINING_HOST = "0.3.76"  # the oldest ComfyUI whose TrainSampler has all of the above (fwd_bwd is new there)


class HostFeatureMissing(RuntimeError):
    """This ComfyUI lacks a host feature a node needs; the message names the host version and what to update."""


def _parameters(fn) -> tuple[str, ...]:
    import inspect

    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


def train_sampler_missing(nodes_train=None) -> list[str]:
    """What of the host's training machinery (comfy_extras/nodes_train.py) PyraTrainSparseAdapter needs and this
    host lacks: TrainSampler with the keyword arguments above, TrainSampler.fwd_bwd(..., bwd) and
    process_cond_list. `nodes_train`: the module to probe (default: the host's)."""
    if nodes_train is None:
        try:
            import comfy_extras.nodes_train as nodes_train
        except ImportError:
            return ["comfy_extras/nodes_train.py"]
    sampler = getattr(nodes_train, "TrainSampler", None)
    if sampler is None:
        return ["comfy_extras.nodes_train.TrainSampler"]
    missing = []
    init = _parameters(sampler.__init__)
    missing += [f"TrainSampler({k}=...)" for k in TRAIN_SAMPLER_KWARGS if k not in init]
    fwd_bwd = getattr(sampler, "fwd_bwd", None)
    if fwd_bwd is None:
        missing.append("TrainSampler.fwd_bwd")
    else:
        params = _parameters(fwd_bwd)
        missing += [f"TrainSampler.fwd_bwd({k})" for k in FWD_BWD_PARAMS if k not in params]
    if not callable(getattr(nodes_train, "process_cond_list", None)):
        missing.append("comfy_extras.nodes_train.process_cond_list")
    return missing


def train_sampler_refusal(node: str, nodes_train=None) -> str | None:
    """The message refusing `node` on this host (its version, what is missing, what to update), or None."""
    missing = train_sampler_missing(nodes_train)
    if not missing:
        return None
    return (f"{node} trains with the host's TrainSampler, and this ComfyUI ({comfyui_version()}) lacks "
            f"{', '.join(missing)}: update ComfyUI to {OLDEST_TRAINING_HOST} or newer")


def require_train_sampler(node: str, nodes_train=None) -> None:
    """Raise HostFeatureMissing with train_sampler_refusal's message where the host lacks something."""
    message = train_sampler_refusal(node, nodes_train)
    if message:
        raise HostFeatureMissing(message)


# --- Building models in-process under dynamic VRAM (0.16+) ------------------------------------------------------


@contextlib.contextmanager
def materialised_weights():
    """Within this block the host's comfy.ops layers are built with their weights, as without dynamic VRAM.

    Under dynamic VRAM (`comfy.memory_management.aimdo_enabled`) the host builds layers without weights and creates
    them when a state dict loads; a model that Pyra builds and fills itself (tiny demo models, real-size random
    benchmarks) would keep `weight=None`. Its patcher still streams it as the host's loaders' models are streamed."""
    try:
        import comfy.memory_management as memory_management
    except ImportError:  # hosts before dynamic VRAM
        yield
        return
    enabled = getattr(memory_management, "aimdo_enabled", False)
    memory_management.aimdo_enabled = False
    try:
        yield
    finally:
        memory_management.aimdo_enabled = enabled
