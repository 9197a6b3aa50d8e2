"""2:4 sparsification of a ModelPatcher's linear layers as per-clone object patches, and its report."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

import comfy.model_management
import comfy.patcher_extension
import torch
import torch.nn.functional as F

from ..core.sparse import compile_filter, lowrank_compensation, prune_nm
from ..kernels.sparse24_linear import Sparse24Linear, fast_backend_reason, sparse24_linear
from ..kernels.timing import cuda_median_ms
from . import multigpu
from .features import patcher_is_dynamic
from .sparse_linear import PyraSparseLinear

_DENSE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
log = logging.getLogger("pyra.sparsify")


@dataclass
class LayerResult:
    name: str
    shape: tuple[int, int]  # (out, in)
    status: str  # "sparse", "dense" (speed check) or "skipped"
    rel_err: float | None = None
    dense_ms: float | None = None
    sparse_ms: float | None = None
    reason: str = ""


def skip_reason(mod: torch.nn.Module) -> str | None:
    """Why a Linear cannot be sparsified here (never a wrong result: the layer stays as it is)."""
    if isinstance(mod, PyraSparseLinear):
        return "already sparse"
    w = getattr(mod, "weight", None)
    if w is None:
        return "no weight"
    quantized = type(w.data) is not torch.Tensor or getattr(mod, "scale_weight", None) is not None
    if quantized or w.dtype not in _DENSE_DTYPES:
        return (f"{w.dtype} quantized/scaled weights: load the model with weight_dtype 'default' to sparsify "
                "this layer")
    if w.shape[1] % 4:
        return f"in_features {w.shape[1]} not divisible by 4"
    return None


def speed_check(sparse: torch.Tensor, lowrank, tokens: int) -> tuple[float, float] | str:
    """(dense ms, sparse ms) for one call at `tokens` on the GPU, or why no fast kernel applies."""
    op = Sparse24Linear(sparse, None, lowrank)
    if op.backend != "cusparselt":
        return op.reason
    x = torch.randn(tokens, sparse.shape[1], device=sparse.device, dtype=sparse.dtype)
    return cuda_median_ms(lambda: F.linear(x, sparse)), cuda_median_ms(lambda: op(x))


def random_input_error(w: torch.Tensor, sparse: torch.Tensor, lowrank) -> float:
    """||x S^T + (x A) B - x W^T|| / ||x W^T|| for 64 standard-normal inputs x, in fp32 on w's device."""
    x = torch.randn(64, w.shape[1], device=w.device, generator=torch.Generator(device=w.device).manual_seed(0))
    ref = x @ w.float().T
    out = sparse24_linear(x, sparse.float(), None, None if lowrank is None else tuple(t.float() for t in lowrank))
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def prepare_layer(mod: torch.nn.Linear, name: str, device: torch.device, rank: int, check_tokens: int,
                  score: str = "magnitude", home: torch.device | str = "cpu"):
    """(LayerResult, replacement module or None). Work happens on `device`; the result lives on `home` (the
    patcher's offload device: the host moves it to the GPU when it loads the model).

    score "wanda" returns a calibrating module (dense until finalize_wanda); the speed check then times the
    magnitude mask's shape, which is all that speed depends on.
    """
    w = mod.weight.detach()
    res = LayerResult(name, tuple(w.shape), "sparse")
    work = w.to(device)
    sparse, mask = prune_nm(work, 2, 4)
    if score == "wanda":
        g = torch.Generator(device=device).manual_seed(0)
        lowrank = None if not rank else (torch.randn(w.shape[1], rank, device=device, generator=g).to(w.dtype),
                                         torch.randn(rank, w.shape[0], device=device, generator=g).to(w.dtype))
    else:
        lowrank = lowrank_compensation(work, sparse, rank) if rank else None
        res.rel_err = random_input_error(work, sparse, lowrank)
    if check_tokens and device.type == "cuda":  # on a GPU, pruning that buys no speed only costs quality
        timing = speed_check(sparse, lowrank, check_tokens)
        if isinstance(timing, str):
            res.status, res.reason = "dense", f"no sparse kernel: {timing}"
            return res, None
        res.dense_ms, res.sparse_ms = timing
        if res.sparse_ms >= res.dense_ms:
            res.status, res.reason = "dense", "sparse kernel not faster at this shape"
            return res, None
    if score == "wanda":
        res.reason = "Wanda mask after calibration"
        return res, PyraSparseLinear.calibrating(mod, rank, home)
    return res, PyraSparseLinear.from_linear(mod, sparse, mask, lowrank, home)


def offload_replaced(patcher, modules: list[PyraSparseLinear]) -> None:
    """Move the base model's Linears that our modules replace (held as object-patch backups) to the offload
    device. A dense clone loaded earlier is only detached, not unloaded, when this clone loads (the host's
    `load_models_gpu`), so its Linears would stay on the GPU beside ours, unused and uncounted. The host moves
    the base modules back when it loads a model that uses them."""
    ours = {id(m) for m in modules}
    for key, old in patcher.object_patches_backup.items():
        current = patcher.object_patches.get(key)
        if id(current) in ours and isinstance(old, torch.nn.Module) and not isinstance(old, PyraSparseLinear):
            old.to(patcher.offload_device)


class WandaCalibration:
    """APPLY_MODEL wrapper: the first `steps` distinct noise levels run densely while the calibrating layers
    record their inputs; at the next noise level every layer is pruned by its Wanda score, once."""

    def __init__(self, modules: list[PyraSparseLinear], steps: int):
        self.modules, self.steps, self.seen, self.done = modules, steps, set(), False

    def __call__(self, executor, x, t, *args, **kwargs):
        if not self.done:
            sigma = float(t.flatten()[0])
            if sigma not in self.seen and len(self.seen) >= self.steps:
                self.finalize()
            else:
                self.seen.add(sigma)
        return executor(x, t, *args, **kwargs)

    def finalize(self) -> None:
        notes = [m.finalize_wanda() for m in self.modules]
        self.done = True
        log.info("PyraSparsify: %d layers pruned by Wanda score after %d calibration steps (%d by magnitude: not "
                 "run during calibration)", notes.count("wanda"), self.steps, len(notes) - notes.count("wanda"))


def sparsify_model(model, layers: str = "all", name_regex: str = "", rank: int = 0, check_tokens: int = 4096,
                   score: str = "magnitude", calibration_steps: int = 2):
    """A clone of `model` with the selected linears 2:4-sparsified (object patches) and a list of LayerResult.

    score: "magnitude" (pruned now) or "wanda" (pruned after `calibration_steps` steps of the first sampling run,
    from the input-channel norms those steps recorded; the calibration steps themselves run densely).
    """
    if score not in ("magnitude", "wanda"):
        raise ValueError(f"unknown score {score!r}: use magnitude or wanda")
    keep = compile_filter(layers, name_regex)
    patched = model.clone()
    multigpu.guard(patched, "PyraSparsify")
    device = comfy.model_management.get_torch_device()
    results, modules = [], []
    for name, base in model.get_model_object("diffusion_model").named_modules():
        if not isinstance(base, torch.nn.Linear) or not keep(name):
            continue
        key = f"diffusion_model.{name}"
        mod = model.get_model_object(key)  # an earlier object patch on this layer wins over the base module
        reason = skip_reason(mod)
        if reason:
            results.append(LayerResult(name, tuple(mod.weight.shape) if mod.weight is not None else (0, 0),
                                       "skipped", reason=reason))
            continue
        res, new = prepare_layer(mod, name, device, rank, check_tokens, score, model.offload_device)
        results.append(res)
        if new is not None:
            patched.add_object_patch(key, new)
            modules.append(new)

    def on_load(patcher, *_args, **_kwargs):
        streamed = patcher_is_dynamic(patcher)
        for mod in modules:
            # A legacy load may rewrite weights in place (`.data`, which keeps the version): ops are rebuilt. A
            # dynamic-VRAM load, which the host runs at every prompt, writes no weight of these layers: their
            # compressed ops stay while the weight and cast-time functions they were built from do (_streamed_op).
            if not streamed:
                mod.invalidate()
            mod.streamed = streamed
        if not streamed:  # dynamic VRAM moves no module: the replaced Linears are not on the GPU
            offload_replaced(patcher, modules)

    def on_detach(patcher, unpatch_all=True, *_args, **_kwargs):
        # Dynamic VRAM moves no module, so the compressed weights go here, on an unload (model_unload detaches with
        # unpatch_all). load_models_gpu also detaches, without it, a model it is about to load again (every
        # prompt), and a clone's __del__ does too: those keep the ops, as the host keeps its own vbar weights.
        if patcher_is_dynamic(patcher) and unpatch_all:
            for mod in modules:
                mod.invalidate()

    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, "pyra_sparsify", on_load)
    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, "pyra_sparsify", on_detach)
    if score == "wanda" and modules:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "pyra_sparsify",
                                     WandaCalibration(modules, calibration_steps))
    return patched, results


def format_report(results: list[LayerResult], rank: int, backend_note: str, score: str = "magnitude",
                  calibration_steps: int = 0) -> str:
    sparse = [r for r in results if r.status == "sparse"]
    how = "magnitude" if score == "magnitude" else (
        f"Wanda: the first {calibration_steps} steps of the first run are dense and calibrate the masks; "
        "errors below are not known until then")
    lines = [f"PyraSparsify 2:4 ({how}){f', rank-{rank} compensation' if rank else ''}; {backend_note}",
             f"sparsified {len(sparse)} of {len(results)} selected linear layers; "
             f"kept dense by the speed check: {sum(r.status == 'dense' for r in results)}; "
             f"skipped: {sum(r.status == 'skipped' for r in results)}"]
    errs = [r.rel_err for r in sparse if r.rel_err is not None]
    if errs:
        lines.append(f"relative output error on random inputs: mean {statistics.mean(errs):.4f}, max {max(errs):.4f}")
    lines.append("layer | out x in | status | rel. error | dense ms | sparse ms | note")
    for r in results:
        err = "" if r.rel_err is None else f"{r.rel_err:.4f}"
        ms = ["" if v is None else f"{v:.3f}" for v in (r.dense_ms, r.sparse_ms)]
        lines.append(f"{r.name} | {r.shape[0]}x{r.shape[1]} | {r.status} | {err} | {ms[0]} | {ms[1]} | {r.reason}")
    return "\n".join(lines)


def backend_note(model) -> str:
    device = comfy.model_management.get_torch_device()
    reason = fast_backend_reason(torch.empty(32, 64, device=device, dtype=model.model.get_dtype()))
    return "GPU kernel: cuSPARSELt" if reason is None else f"reference path (masked dense weights): {reason}"
