"""Per-layer rank rules: retained spectral energy, a global singular-value threshold (WeLore), a size budget.

Every rule reads a layer's top singular values S (descending) and its total energy ||A||_F^2:
- energy: the smallest rank whose triplets keep `target` of ||A||_F^2 (capped at len(S));
- threshold (WeLore, Jaiswal et al. 2024): one global tau for all layers on per-layer normalised spectra,
  keep #{i : s_i / s_1 >= tau}. WeLore min-max normalises with the layer's smallest singular value; only the
  top of the spectrum is computed here, so the floor is taken as 0 (heavy-tailed spectra still lose more rank);
- size budget: ranks for all layers at once so that sum_l rank_l * bytes_per_rank_l <= budget, chosen by
  marginal reduction of the squared relative error s_i^2 / ||A_l||_F^2 per byte. Within a layer the gains are
  non-increasing and the cost per rank is constant, so taking triplets in order of gain per byte keeps a prefix
  of each layer's spectrum and is the exact greedy optimum of sum_l err_l^2 up to the last triplet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("energy", "threshold", "size_mb", "rank")


@dataclass(frozen=True)
class RankRule:
    """`mode` one of MODES and its `value`: energy fraction, tau, file size in MB (10^6 bytes), or a fixed rank."""

    mode: str
    value: float

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown rank mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode in ("energy", "threshold") and not 0 < self.value <= 1:
            raise ValueError(f"{self.mode} must be in (0, 1], got {self.value}")
        if self.mode in ("size_mb", "rank") and self.value <= 0:
            raise ValueError(f"{self.mode} must be > 0, got {self.value}")

    @property
    def per_layer(self) -> bool:
        return self.mode != "size_mb"


def energy_rank(s: Tensor, energy: float, target: float) -> int:
    """Smallest r with sum_{i<r} s_i^2 >= target * energy; len(s) if the computed triplets fall short."""
    if energy <= 0 or s.numel() == 0:
        return 0
    cum = torch.cumsum(s.double().square(), 0)
    hit = torch.nonzero(cum >= target * energy * (1 - 1e-6))  # fp32 spectra round at about 1e-7
    return int(hit[0]) + 1 if hit.numel() else s.numel()


def threshold_rank(s: Tensor, tau: float) -> int:
    """#{i : s_i / s_1 >= tau} (s descending); 0 for an all-zero spectrum."""
    if s.numel() == 0 or float(s[0]) <= 0:
        return 0
    return int((s.double() / float(s[0]) >= tau).sum())


def layer_rank(rule: RankRule, s: Tensor, energy: float) -> int:
    """Rank of one layer under a per-layer rule."""
    if rule.mode == "energy":
        return energy_rank(s, energy, rule.value)
    if rule.mode == "threshold":
        return threshold_rank(s, rule.value)
    if rule.mode == "rank":
        return min(int(rule.value), s.numel())
    raise ValueError("size_mb allocates all layers together: use budget_ranks")


def budget_ranks(spectra: list[tuple[Tensor, float, int]], budget_bytes: float) -> list[int]:
    """Ranks for layers (S, energy, bytes per rank) so the factors fit `budget_bytes`; see module docstring."""
    gains, costs, owner = [], [], []
    for i, (s, energy, cost) in enumerate(spectra):
        if energy <= 0 or s.numel() == 0:
            continue
        gains.append(s.double().square() / (energy * cost))
        costs.append(torch.full((s.numel(),), float(cost), dtype=torch.float64))
        owner.append(torch.full((s.numel(),), i, dtype=torch.long))
    ranks = [0] * len(spectra)
    if not gains:
        return ranks
    order = torch.sort(torch.cat(gains), descending=True, stable=True).indices
    taken = torch.cumsum(torch.cat(costs)[order], 0) <= budget_bytes
    counts = torch.bincount(torch.cat(owner)[order][taken], minlength=len(spectra))
    return [int(c) for c in counts]
