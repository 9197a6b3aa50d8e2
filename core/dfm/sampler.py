"""The DFM stage-wise sampler (ALGORITHMS.md section 1, "Inference sampler"), in the host's flow convention.

Noise level sigma: 1 is pure noise, 0 clean (the paper's t = 1 - sigma). With S levels and per-stage step counts
T_1..T_S (N = sum T_k steps in all), phase k (T_k steps) activates level k:
  * level k runs from sigma = 1 down to its threshold thr_k during phase k (the last level down to 0);
  * after that it keeps moving from thr_k to 0 over the remaining N - (T_1 + ... + T_k) steps,
so every level reaches 0 on the final step. Each level follows the shape of one base schedule sigma(u),
u in [0, 1] (the host's SIGMAS, linearly interpolated): u goes 0 -> u(thr_k) in its own phase, then on to 1.
With one level this is exactly the base schedule, and Euler here is the host's `euler` step for step.

Each step is one network call returning every level's denoised estimate; levels not started are masked (input
zeroed, time 1) and not updated (update 0). `heun` is the second-order option (two calls per step, Euler where
a level lands on 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..text_lists import parse_numbers
from .levels import partial_merge

SOLVERS = ("euler", "heun")


@dataclass(frozen=True)
class StagePlan:
    """steps[k]: steps of phase k; thresholds[k]: the sigma at which level k hands over (one per level but last)."""

    steps: tuple[int, ...]
    thresholds: tuple[float, ...]

    @property
    def levels(self) -> int:
        return len(self.steps)

    @property
    def total(self) -> int:
        return sum(self.steps)

    def starts(self) -> list[int]:
        """Global step at which each level becomes active."""
        out, acc = [], 0
        for t in self.steps:
            out.append(acc)
            acc += t
        return out


def parse_plan(steps: str, thresholds: str, levels: int) -> StagePlan:
    """'20, 8' and '0.3' -> StagePlan for `levels` levels; one value repeats for every stage."""
    st = parse_numbers(steps, "stage_steps", int, example="20, 8")
    th = parse_numbers(thresholds, "thresholds", example="0.3") if levels > 1 else []
    if len(st) == 1:
        st = st * levels
    if levels > 1 and len(th) == 1:
        th = th * (levels - 1)
    if len(st) != levels:
        raise ValueError(f"give one step count per stage ({levels} for this DFM model), or one for all: "
                         f"got {steps!r}")
    if len(th) != levels - 1:
        raise ValueError(f"give one threshold per stage but the last ({levels - 1}), or one for all: "
                         f"got {thresholds!r}")
    if any(s < 1 for s in st):
        raise ValueError("every stage needs at least one step")
    if any(not 0 < t < 1 for t in th):
        raise ValueError("thresholds are noise levels strictly between 0 (clean) and 1 (pure noise)")
    return StagePlan(tuple(st), tuple(th))


def _interp(sigmas: Tensor, pos: float) -> float:
    """sigmas at fractional index `pos` (linear between entries; exact at integers)."""
    lo = min(math.floor(pos), len(sigmas) - 1)
    frac = pos - lo
    if frac == 0:
        return float(sigmas[lo])
    return float(sigmas[lo] + frac * (sigmas[lo + 1] - sigmas[lo]))


def _inverse(sigmas: Tensor, value: float) -> float:
    """Fractional index where the descending `sigmas` first reach `value`."""
    s = sigmas.double().tolist()
    for j in range(len(s) - 1):
        if s[j + 1] <= value <= s[j]:
            return j + ((s[j] - value) / (s[j] - s[j + 1]) if s[j] > s[j + 1] else 0.0)
    raise ValueError(f"threshold {value} lies outside the schedule ({s[-1]:.3g} .. {s[0]:.3g})")


def level_schedules(plan: StagePlan, sigmas: Tensor) -> Tensor:
    """(S, N + 1) float64 sigma of every level at every step boundary (levels not started: sigmas[0])."""
    sigmas = sigmas.detach().double().cpu()
    last = len(sigmas) - 1
    n_total, starts = plan.total, plan.starts()
    out = torch.empty(plan.levels, n_total + 1, dtype=torch.float64)
    for i in range(plan.levels):
        u_thr = 1.0 if i == plan.levels - 1 else _inverse(sigmas, plan.thresholds[i]) / last
        begin, end = starts[i], starts[i] + plan.steps[i]
        for n in range(n_total + 1):
            if n <= begin:
                u = 0.0
            elif n <= end:
                u = u_thr * (n - begin) / plan.steps[i]
            else:
                u = u_thr + (1 - u_thr) * (n - end) / (n_total - end)
            pos = n * last / n_total if plan.levels == 1 else u * last
            out[i, n] = _interp(sigmas, pos)
    return out


def _update(x: list[Tensor], v: list[Tensor], dt: Tensor) -> list[Tensor]:
    return [xi + vi * d.to(xi) for xi, vi, d in zip(x, v, dt, strict=True)]


def _velocity(x: list[Tensor], d: list[Tensor], s: Tensor, mask: Tensor) -> list[Tensor]:
    """(x - denoised) / sigma per active level, with 0-dim tensors as the host's `euler` (bitwise alike)."""
    return [(xi - di) / si.to(xi) if m else torch.zeros_like(xi) for xi, di, si, m in zip(x, d, s, mask, strict=True)]


def model_sigmas(s: Tensor, mask: Tensor) -> Tensor:
    """What the network sees: a level's sigma when active, 1 (pure noise, as in training) when not."""
    return torch.where(mask, s, torch.ones_like(s))


@torch.no_grad()
def sample_dfm(denoise, parts: list[Tensor], plan: StagePlan, sigmas: Tensor, solver: str = "euler",
               callback=None) -> list[Tensor]:
    """Decomposable flow matching sampler (Haji-Ali et al. 2025), stage-wise Euler or Heun.

    denoise(parts, sigmas (S,), mask (S,) bool) -> per-level denoised estimates; parts: the levels at
    sigma(0), coarse first. callback(step, parts, denoised, preview) gets the full-size partial reconstruction
    of the active levels' denoised estimates.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    sched, starts = level_schedules(plan, sigmas).float(), torch.tensor(plan.starts())
    x = list(parts)
    for n in range(plan.total):
        mask = n >= starts
        s, s_next = sched[:, n], sched[:, n + 1]
        dt = torch.where(mask, s_next - s, torch.zeros_like(s))
        d = denoise(x, model_sigmas(s, mask), mask)
        v = _velocity(x, d, s, mask)
        x_next = _update(x, v, dt)
        if solver == "heun" and bool((s_next[mask] > 0).any()):
            d2 = denoise(x_next, model_sigmas(s_next, mask), mask)
            v2 = _velocity(x_next, d2, s_next, mask & (s_next > 0))
            v = [(a + b) / 2 if float(sn) > 0 else a for a, b, sn in zip(v, v2, s_next, strict=True)]
            x_next = _update(x, v, dt)
        x = x_next
        if callback is not None:
            callback(n, x, d, partial_merge(d, int(mask.sum())))
    return x
