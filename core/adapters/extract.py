"""Adaptive-rank LoRA extraction from weight differences, and the text report of what was kept.

A layer's difference D (out, in, *kernel) is flattened to (out, in * prod(kernel)) as the host's extractor
does (comfy_extras/nodes_lora_extract.py), factorised by a truncated SVD, and stored as
up = U sqrt(S) with shape (out, r, 1, ...) and down = sqrt(S) Vh with shape (r, in, *kernel), alpha = r.
Splitting sqrt(S) over both factors keeps them in the same range, which suits fp16 storage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .lora_file import module_tensors
from .rank import RankRule, budget_ranks, layer_rank
from .svd import Spectrum, truncated_svd

# One layer to extract: (LoRA module base key, weight shape, a function returning the difference tensor).
Layer = tuple[str, tuple[int, ...], Callable[[], Tensor]]
# Called after each layer as on_layer(done, total); may raise to interrupt.
Progress = Callable[[int, int], None]


@dataclass
class LayerReport:
    key: str
    shape: tuple[int, ...]
    rank: int
    retained: float
    rel_error: float
    capped: bool = False


@dataclass
class Extraction:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def report(self, title: str) -> str:
        """Per-layer table (rank, retained energy, relative error) under `title`, with totals."""
        lines = [title, f"{'layer':<60} {'shape':>22} {'rank':>5} {'energy':>8} {'rel.err':>8}"]
        for r in self.layers:
            mark = "*" if r.capped else " "
            lines.append(f"{r.key:<60} {'x'.join(map(str, r.shape)):>22} {r.rank:>4}{mark} "
                         f"{r.retained:>8.4f} {r.rel_error:>8.4f}")
        if self.layers:
            mean = sum(r.rel_error for r in self.layers) / len(self.layers)
            lines.append(f"{len(self.layers)} layers, mean relative error {mean:.4f}, "
                         f"{sum(r.rank for r in self.layers)} ranks in total")
        if any(r.capped for r in self.layers):
            lines.append("* rank capped at max_rank before the rule was met: raise max_rank for more accuracy")
        if self.unchanged:
            lines.append(f"{len(self.unchanged)} layers unchanged (zero difference), not stored")
        return "\n".join(lines)


def flat_shape(shape: Sequence[int]) -> tuple[int, int]:
    out = int(shape[0])
    return out, int(torch.Size(shape[1:]).numel())


def bytes_per_rank(shape: Sequence[int], dtype: torch.dtype) -> int:
    out, inner = flat_shape(shape)
    return (out + inner) * torch.empty((), dtype=dtype).element_size()


def split_factors(spec: Spectrum, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(up, down) in the host's layout for a weight of `shape`, the singular values split as sqrt on both."""
    root = spec.S.sqrt()
    r = root.numel()
    up = (spec.U * root).reshape(shape[0], r, *([1] * (len(shape) - 2)))
    down = (root[:, None] * spec.Vh).reshape(r, *shape[1:])
    return up, down


def _capped(rule: RankRule, rank: int, max_rank: int, full: int, spec: Spectrum) -> bool:
    """Whether max_rank, not the rule, set this layer's rank."""
    if rank < max_rank or max_rank >= full or spec.relative_error(rank) == 0:
        return False
    if rule.mode == "energy":
        return spec.retained(rank) < rule.value
    return rule.mode != "rank" or rule.value > max_rank


def memory_needed(layers: Sequence[Layer], rule: RankRule, max_rank: int) -> dict[str, int]:
    """Bytes extract_lora holds at least, by what holds them: the fp32 triplets it keeps (per-layer rules keep
    each layer's chosen rank, exact for mode rank and at least 1 otherwise; size_mb keeps max_rank per layer until
    the budget is shared out) and the working set of the largest layer (its difference and the SVD's factors)."""
    kept = largest = 0
    for _, shape, _ in layers:
        rows, cols = flat_shape(shape)
        full = min(max_rank, rows, cols)
        rank = min(int(rule.value), full) if rule.mode == "rank" else 1 if rule.per_layer else full
        kept += rank * (rows + cols + 1) * 4
        largest = max(largest, (rows * cols + full * (rows + cols)) * 4)
    return {"kept singular triplets": kept, "largest layer's SVD": largest}


@torch.no_grad()
def extract_lora(layers: Sequence[Layer], rule: RankRule, max_rank: int = 256, method: str = "randomized",
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16,
                 budget_bytes: float | None = None, on_layer: Progress | None = None, seed: int = 0) -> Extraction:
    """Factorise every layer's difference; ranks by `rule` (size_mb: `budget_bytes` for all factors)."""
    spectra, unchanged = [], []
    for i, (key, shape, delta_fn) in enumerate(layers):
        if len(shape) < 2:
            raise ValueError(f"{key}: shape {tuple(shape)} has no matrix to factorise (needs 2 or more dims)")
        a = delta_fn().to(device).reshape(flat_shape(shape))
        if torch.any(a):
            spectra.append((key, tuple(shape), truncated_svd(a, max_rank, method, seed=seed + i)))
            if rule.per_layer:  # keep only what the rule needs, on the CPU
                spec = spectra[-1][2]
                spectra[-1] = (key, tuple(shape), _to_cpu(spec.truncate(layer_rank(rule, spec.S, spec.energy))))
        else:
            unchanged.append(key)
        del a
        if on_layer is not None:
            on_layer(i + 1, len(layers))
    out = build_lora(spectra, rule, max_rank, dtype, budget_bytes)
    out.unchanged = unchanged
    return out


def _to_cpu(spec: Spectrum) -> Spectrum:
    return Spectrum(spec.U.cpu(), spec.S.cpu(), spec.Vh.cpu(), spec.energy)


def build_lora(spectra: Sequence[tuple[str, tuple[int, ...], Spectrum]], rule: RankRule, max_rank: int,
               dtype: torch.dtype, budget_bytes: float | None = None) -> Extraction:
    """Choose ranks for factorised layers (key, weight shape, spectrum) and lay out the LoRA tensors."""
    if rule.per_layer:
        ranks = [layer_rank(rule, spec.S, spec.energy) for _, _, spec in spectra]
    elif budget_bytes is None:
        raise ValueError("size_mb needs budget_bytes")
    else:
        ranks = budget_ranks([(s.S, s.energy, bytes_per_rank(shape, dtype)) for _, shape, s in spectra], budget_bytes)
    out = Extraction()
    for (key, shape, spec), rank in zip(spectra, ranks, strict=True):
        capped = _capped(rule, rank, max_rank, min(flat_shape(shape)), spec)
        out.layers.append(LayerReport(key, shape, rank, spec.retained(rank), spec.relative_error(rank), capped))
        if rank > 0:
            up, down = split_factors(spec.truncate(rank), shape)
            out.tensors.update(module_tensors(key, up, down, dtype))
    return out
