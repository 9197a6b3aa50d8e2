"""Structured weight sparsity (host-free): N:M masks by magnitude or Wanda score, low-rank compensation."""

from __future__ import annotations

from .lowrank import lowrank_compensation
from .nm import ActivationNorms, is_nm_sparse, magnitude_score, nm_mask, prune_nm, wanda_score
from .packed import PackedMask
from .select import FILTERS, compile_filter, layer_kind

SCORES = {"magnitude": magnitude_score, "wanda": wanda_score}

__all__ = [
    "FILTERS",
    "SCORES",
    "ActivationNorms",
    "PackedMask",
    "compile_filter",
    "is_nm_sparse",
    "layer_kind",
    "lowrank_compensation",
    "magnitude_score",
    "nm_mask",
    "prune_nm",
    "wanda_score",
]
