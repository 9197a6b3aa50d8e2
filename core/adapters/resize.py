"""Exact LoRA resize and weighted merge (sum, TIES, DARE), keeping the host's alpha / rank scaling.

Resize: with delta = c * U_p D_p (U_p = up.flatten(1) (out, r), D_p = down.flatten(1) (r, in), c = alpha / r),
QR factorise U_p = Qu Ru and D_p^T = Qd Rd; then delta = Qu (c Ru Rd^T) Qd^T and the SVD of the small r x r core
c Ru Rd^T = Uc S Vc^T gives the exact SVD delta = (Qu Uc) S (Qd Vc)^T without forming the out x in product.
Truncating it is the best rank-k approximation of the delta (Eckart-Young).

Merge "sum": sum_i w_i delta_i is one LoRA whose factors are the stacked [w_i c_i U_i] and [D_i]; its exact SVD
comes from the same QR route, then the rank rule recompresses it. "ties" (Yadav et al. 2023) and "dare"
(Yu et al. 2024) act on entries of the deltas, so they form each layer's dense deltas (one layer at a time),
combine them and recompress with a truncated SVD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .extract import Extraction, Progress, build_lora
from .lora_file import LoraFile, LoraFileError, LoraModule
from .rank import RankRule
from .svd import Spectrum, truncated_svd

MERGE_MODES = ("sum", "ties", "dare")
COMPLETE = 1 << 62  # max_rank for spectra that are complete: no rank is ever capped


def factor_spectrum(up: Tensor, down: Tensor, scale: float = 1.0) -> Spectrum:
    """Exact SVD of scale * up.flatten(1) @ down.flatten(1) through QR of the factors (module docstring)."""
    dtype = torch.float64 if up.dtype == torch.float64 else torch.float32
    qu, ru = torch.linalg.qr(up.flatten(1).to(dtype))
    qd, rd = torch.linalg.qr(down.flatten(1).to(dtype).mT)
    uc, s, vch = torch.linalg.svd(scale * ru @ rd.mT, full_matrices=False)
    return Spectrum(qu @ uc, s, vch @ qd.mT, float(s.double().square().sum()))


def dense_delta(module: LoraModule) -> Tensor:
    """Reference: the full (out, in_flat) delta the host applies, scale * up @ down, in fp32."""
    return module.scale * module.up.flatten(1).float() @ module.down.flatten(1).float()


def resize_lora(lora: LoraFile, rule: RankRule, dtype: torch.dtype = torch.float16,
                budget_bytes: float | None = None, on_layer: Progress | None = None) -> Extraction:
    """Recompress every low-rank module of `lora` by `rule`; `.diff` tensors and other keys are kept as they are."""
    spectra = []
    for i, (key, module) in enumerate(lora.modules.items()):
        spectra.append((key, module.weight_shape, factor_spectrum(module.up, module.down, module.scale)))
        if on_layer is not None:
            on_layer(i + 1, len(lora.modules))
    out = build_lora(spectra, rule, COMPLETE, dtype, budget_bytes)
    for key, module in lora.modules.items():
        if module.dora_scale is not None and f"{key}.lora_up.weight" in out.tensors:
            out.tensors[f"{key}.dora_scale"] = module.dora_scale
    out.tensors.update(lora.additive)
    out.tensors.update(lora.other)
    return out


def _max_rank(spectra: Sequence[tuple[str, tuple[int, ...], Spectrum]]) -> int:
    return max((spec.S.numel() for _, _, spec in spectra), default=0)


def ties_combine(deltas: Sequence[Tensor], weights: Sequence[float], density: float) -> Tensor:
    """TIES: trim each weighted delta to its top `density` magnitudes, elect signs, average the agreeing entries."""
    trimmed = []
    for d, w in zip(deltas, weights, strict=True):
        d = w * d
        keep = max(1, math.ceil(density * d.numel()))
        cut = d.abs().flatten().kthvalue(d.numel() - keep + 1).values if keep < d.numel() else 0.0
        trimmed.append(torch.where(d.abs() >= cut, d, torch.zeros_like(d)))
    stack = torch.stack(trimmed)
    sign = torch.sign(stack.sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    return (stack * agree).sum(0) / agree.sum(0).clamp_min(1)


def dare_combine(deltas: Sequence[Tensor], weights: Sequence[float], density: float, seed: int = 0) -> Tensor:
    """DARE: keep a random `density` fraction of each delta's entries, rescale by 1 / density, weighted sum."""
    g = torch.Generator(device=deltas[0].device).manual_seed(seed)
    total = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights, strict=True):
        mask = torch.rand(d.shape, generator=g, device=d.device) < density
        total += (w / density) * d * mask
    return total


def _merged_spectrum(parts: list[tuple[LoraModule, float]], mode: str, density: float, method: str,
                     seed: int) -> Spectrum:
    if mode == "sum":
        up = torch.cat([w * m.scale * m.up.flatten(1).float() for m, w in parts], 1)
        down = torch.cat([m.down.flatten(1).float() for m, _ in parts], 0)
        return factor_spectrum(up, down)
    deltas = [dense_delta(m) for m, _ in parts]
    weights = [w for _, w in parts]
    dense = ties_combine(deltas, weights, density) if mode == "ties" else dare_combine(deltas, weights, density, seed)
    return truncated_svd(dense, sum(m.rank for m, _ in parts), method, seed=seed)


def merge_loras(loras: Sequence[LoraFile], weights: Sequence[float], rule: RankRule, mode: str = "sum",
                density: float = 1.0, dtype: torch.dtype = torch.float16, method: str = "exact",
                budget_bytes: float | None = None, on_layer: Progress | None = None, seed: int = 0) -> Extraction:
    """Weighted merge of LoRAs module by module (a module missing from a file counts as zero), recompressed."""
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; choose one of {', '.join(MERGE_MODES)}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    _check_mergeable(loras)
    keys = list(dict.fromkeys(k for lora in loras for k in lora.modules))
    spectra = []
    for i, key in enumerate(keys):
        parts = [(lora.modules[key], w) for lora, w in zip(loras, weights, strict=True) if key in lora.modules]
        shapes = {m.weight_shape for m, _ in parts}
        if len(shapes) > 1:
            raise LoraFileError(f"{key}: the LoRAs disagree on the weight shape ({sorted(shapes)}); "
                                "they were made for different models")
        spectra.append((key, parts[0][0].weight_shape, _merged_spectrum(parts, mode, density, method, seed + i)))
        if on_layer is not None:
            on_layer(i + 1, len(keys))
    # TIES/DARE results have full rank: their SVD is truncated at the summed ranks, a cap the report flags.
    out = build_lora(spectra, rule, COMPLETE if mode == "sum" else _max_rank(spectra), dtype, budget_bytes)
    for key in dict.fromkeys(k for lora in loras for k in lora.additive):
        shapes = {lora.additive[key].shape for lora in loras if key in lora.additive}
        if len(shapes) > 1:
            raise LoraFileError(f"{key}: the LoRAs disagree on its shape ({sorted(shapes)})")
        out.tensors[key] = sum(w * lora.additive[key].float() for lora, w in zip(loras, weights, strict=True)
                               if key in lora.additive).to(dtype)
    return out


def _check_mergeable(loras: Sequence[LoraFile]) -> None:
    for lora in loras:
        if lora.other:
            raise LoraFileError(f"{next(iter(lora.other))} (and {len(lora.other) - 1} more) are not LoRA factors "
                                "(LoHa, LoKr, norms...): only plain LoRAs can be merged")
        dora = [k for k, m in lora.modules.items() if m.dora_scale is not None]
        if dora:
            raise LoraFileError(f"{dora[0]}: DoRA modules cannot be merged as low-rank sums")
