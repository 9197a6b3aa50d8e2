"""Trainable sparse (SaRA) and Householder (HRA) adapters, and SaRA's optimizer step.

Each adapter is a callable w -> w' (the host applies it as a weight wrapper at cast time) holding only its own
parameters, as SaRA's "unstructural backprop" does: the sparse adapter keeps a 1-D delta for the selected entries,
so gradients and optimizer moments exist for those entries only (ALGORITHMS.md 3 b 5).

`SaraOptimizer.step()` follows SaRA's adamw2 (the variant whose low-rank term works, 3 f 2): it first
back-propagates lambda * ||M||_* for one random 2-D weight with min(shape) > 64 and more than 100 selected
entries (M = the weight's selected entries, others zero), then takes the AdamW step, restores frozen entries,
and at `reselect_step` freezes the entries whose weight |w + delta| has grown to >= threshold (progressive
parameter adjustment, 3 b 4). Deviation: weight decay pulls the delta (not the absolute weight) towards 0.
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor, nn

from .householder import apply_hra, init_vectors
from .sparse import SparseDelta, select_small

NUCLEAR_MIN_DIM, NUCLEAR_MIN_ENTRIES = 64, 100


class _Trainable(nn.Module):
    def passive_memory_usage(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.parameters(), *self.buffers()])

    def move_to(self, device) -> int:
        self.to(device)
        return self.passive_memory_usage()


class SparseTrainable(_Trainable):
    """w -> w with `delta` added at the entries where the base had |w| < threshold (chosen in fp32)."""

    def __init__(self, weight: Tensor, threshold: float):
        super().__init__()
        idx = select_small(weight, threshold)
        self.shape = tuple(weight.shape)
        self.register_buffer("idx", idx)
        self.register_buffer("base", weight.detach().float().flatten()[idx].cpu())
        self.register_buffer("frozen", torch.zeros(idx.numel(), dtype=torch.bool))
        self.delta = nn.Parameter(torch.zeros(idx.numel()))

    def __call__(self, w: Tensor) -> Tensor:
        return w.flatten().index_add(0, self.idx, self.delta.to(w.dtype)).view(w.shape)

    def selected(self) -> Tensor:
        """M of the nuclear-norm term: the selected entries' current weights, zero elsewhere (2-D)."""
        m = torch.zeros(math.prod(self.shape), dtype=self.delta.dtype, device=self.delta.device)
        return m.index_put((self.idx,), self.base + self.delta).view(self.shape[0], -1)

    def result(self) -> SparseDelta:
        return SparseDelta(self.idx.cpu(), self.delta.detach().float().cpu(), self.shape)


class HouseholderTrainable(_Trainable):
    """w -> w H_1 ... H_r with the paper's identity init (pairs of equal vectors); `hra_u` is the file key."""

    def __init__(self, weight: Tensor, reflections: int, generator: torch.Generator | None = None):
        super().__init__()
        self.hra_u = nn.Parameter(init_vectors(math.prod(weight.shape[1:]), reflections, generator))

    def __call__(self, w: Tensor) -> Tensor:
        return apply_hra(w, self.hra_u)


class SaraOptimizer:
    """AdamW over sparse deltas with SaRA's nuclear-norm term and progressive reselection (module docstring)."""

    def __init__(self, adapters: list[SparseTrainable], threshold: float, lr: float, lambda_rank: float,
                 reselect_step: int, seed: int = 0, weight_decay: float = 1e-2):
        self.adapters, self.threshold = adapters, threshold
        self.lambda_rank, self.reselect_step = lambda_rank, reselect_step
        self.inner = torch.optim.AdamW([a.delta for a in adapters], lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                       weight_decay=weight_decay)
        self.matrices = [a for a in adapters if len(a.shape) == 2 and min(a.shape) > NUCLEAR_MIN_DIM
                         and a.idx.numel() > NUCLEAR_MIN_ENTRIES]
        self.rng = random.Random(seed)
        self.steps = 0
        self.rank_losses: list[float] = []

    @property
    def param_groups(self) -> list[dict]:
        """The inner AdamW's groups (the deltas), as torch optimizers expose them: trainers read them (the host's
        TrainSampler casts each gradient to its parameter's dtype there since ComfyUI 0.11)."""
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        if self.lambda_rank > 0 and self.matrices:
            with torch.enable_grad():
                loss = self.lambda_rank * torch.linalg.svdvals(self.rng.choice(self.matrices).selected()).sum()
                loss.backward()
            self.rank_losses.append(float(loss))
        kept = [a.delta[a.frozen].clone() for a in self.adapters]
        self.inner.step()
        for a, k in zip(self.adapters, kept, strict=True):
            a.delta[a.frozen] = k
        self.steps += 1
        if self.steps == self.reselect_step:
            self.reselect()

    @torch.no_grad()
    def reselect(self) -> int:
        """Freeze entries whose weight reached the threshold; returns how many were newly frozen."""
        newly = 0
        for a in self.adapters:
            grown = ((a.base + a.delta).abs() >= self.threshold) & ~a.frozen
            a.frozen |= grown
            newly += int(grown.sum())
        return newly

    def frozen_fraction(self) -> float:
        total = sum(a.idx.numel() for a in self.adapters)
        return sum(int(a.frozen.sum()) for a in self.adapters) / max(total, 1)
