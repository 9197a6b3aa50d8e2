"""Structured weight sparsity (host-free): N:M masks by magnitude or Wanda score, low-rank compensation."""

from __future__ import annotations

from .lowrank import lowrank_compensation
from .nm import ActivationNorms, is_nm_sparse, magnitude_score, nm_mask, prune_nm, wanda_score

SCORES = {"magnitude": magnitude_score, "wanda": wanda_score}

__all__ = [
    "SCORES",
    "ActivationNorms",
    "is_nm_sparse",
    "lowrank_compensation",
    "magnitude_score",
    "nm_mask",
    "prune_nm",
    "wanda_score",
]
