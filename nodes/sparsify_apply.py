"""2:4 sparsification of a ModelPatcher's linear layers as per-clone object patches, and its report.

Kept apart from the node class so that benchmarks can use it without `comfy_api` (and its video imports).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import comfy.model_management
import comfy.patcher_extension
import torch
import torch.nn.functional as F

from ..core.sparse import compile_filter, lowrank_compensation, prune_nm
from ..kernels.sparse24_linear import Sparse24Linear, fast_backend_reason, sparse24_linear
from .sparse_linear import PyraSparseLinear

_DENSE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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


def _median_ms(fn, repeats: int = 7, inner: int = 3) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def speed_check(sparse: torch.Tensor, lowrank, tokens: int) -> tuple[float, float] | None:
    """(dense ms, sparse ms) for one call at `tokens` on the GPU, or None when no fast kernel applies."""
    op = Sparse24Linear(sparse, None, lowrank)
    if op.backend != "cusparselt":
        return None
    x = torch.randn(tokens, sparse.shape[1], device=sparse.device, dtype=sparse.dtype)
    return _median_ms(lambda: F.linear(x, sparse)), _median_ms(lambda: op(x))


def prepare_layer(mod: torch.nn.Linear, name: str, device: torch.device, rank: int, check_tokens: int):
    """(LayerResult, replacement module or None). Work happens on `device`; the result lives beside `mod`."""
    w = mod.weight.detach()
    res = LayerResult(name, tuple(w.shape), "sparse")
    work = w.to(device)
    sparse, mask = prune_nm(work, 2, 4)
    lowrank = lowrank_compensation(work, sparse, rank) if rank else None
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, w.shape[1], device=device, generator=g)
    ref = x @ work.float().T
    out = sparse24_linear(x, sparse.float(), None, None if lowrank is None else tuple(t.float() for t in lowrank))
    res.rel_err = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    if check_tokens and device.type == "cuda":
        timing = speed_check(sparse, lowrank, check_tokens)
        if timing is not None:
            res.dense_ms, res.sparse_ms = timing
            if res.sparse_ms >= res.dense_ms:
                res.status, res.reason = "dense", "sparse kernel not faster at this shape"
                return res, None
    home = w.device
    new = PyraSparseLinear.from_linear(mod, sparse.to(home), mask.to(home),
                                       None if lowrank is None else tuple(t.to(home) for t in lowrank))
    return res, new


def sparsify_model(model, layers: str = "all", name_regex: str = "", rank: int = 0, check_tokens: int = 4096):
    """A clone of `model` with the selected linears 2:4-sparsified (object patches) and a list of LayerResult."""
    keep = compile_filter(layers, name_regex)
    patched = model.clone()
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
        res, new = prepare_layer(mod, name, device, rank, check_tokens)
        results.append(res)
        if new is not None:
            patched.add_object_patch(key, new)
            modules.append(new)

    def invalidate(*_args, **_kwargs):  # weights may have been rewritten in place during a load
        for mod in modules:
            mod.invalidate()

    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, "pyra_sparsify", invalidate)
    return patched, results


def format_report(results: list[LayerResult], rank: int, backend_note: str) -> str:
    sparse = [r for r in results if r.status == "sparse"]
    lines = [f"PyraSparsify 2:4 (magnitude){f', rank-{rank} compensation' if rank else ''}; {backend_note}",
             f"sparsified {len(sparse)} of {len(results)} selected linear layers; "
             f"kept dense by the speed check: {sum(r.status == 'dense' for r in results)}; "
             f"skipped: {sum(r.status == 'skipped' for r in results)}"]
    if sparse:
        errs = [r.rel_err for r in sparse]
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
