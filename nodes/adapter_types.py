"""Sparse (SaRA) and Householder (HRA) weight adapters registered with the host, so the stock LoRA loaders read them.

Registration (HOST.md 4, "Adding a new adapter type") appends the classes to `comfy.weight_adapter.adapters` when
the pack loads; the host's `load_lora` then builds one adapter per module key from a file's tensors, and
`calculate_weight` applies it wherever the host patches weights: full loading and the low-VRAM per-forward patch
path alike. Key suffixes `.sparse_idx` / `.hra_u` are unique, so no other adapter type claims the same module.
The Householder type is also put in `adapter_maps`, which makes it an "algorithm" of the host's TrainLoraNode: its
trainable parameter is named `hra_u`, so what SaveLoRA writes is this file format.
"""

from __future__ import annotations

import comfy.model_management
import comfy.weight_adapter as weight_adapter
import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..core.adapters import householder, sparse
from ..core.adapters.train import HouseholderTrainable


class PyraSparseAdapter(WeightAdapterBase):
    """W.flatten()[idx] += strength * val (core/adapters/sparse.py)."""

    name = "pyra_sparse"

    def __init__(self, loaded_keys: set[str], delta: sparse.SparseDelta):
        self.loaded_keys = loaded_keys
        self.delta = delta
        self.weights = [delta.idx, delta.val]

    @classmethod
    def load(cls, x, lora, alpha, dora_scale, loaded_keys=None):
        delta = sparse.from_tensors(lora, x)
        if delta is None:
            return None
        keys = set() if loaded_keys is None else loaded_keys
        keys.update(x + s for s in (sparse.IDX, sparse.VAL, sparse.SHAPE))
        return cls(keys, delta)

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        sparse.check(self.delta, key, tuple(weight.shape))
        if offset is not None:  # a slice of a fused weight: only the dense route can pass through `function`
            dense = sparse.dense_delta(self.delta, intermediate_dtype, weight.device)
            weight += function((strength * dense).to(weight.dtype))
            return weight
        return sparse.apply_sparse(weight, self.delta, strength)


class PyraHouseholderAdapter(WeightAdapterBase):
    """W + strength * (W H_1 ... H_r - W) (core/adapters/householder.py)."""

    name = "pyra_hra"

    def __init__(self, loaded_keys: set[str], u: torch.Tensor):
        self.loaded_keys = loaded_keys
        self.weights = [u]

    @classmethod
    def load(cls, x, lora, alpha, dora_scale, loaded_keys=None):
        if x + householder.U not in lora:
            return None
        u = householder.check(lora[x + householder.U], x)
        keys = set() if loaded_keys is None else loaded_keys
        keys.add(x + householder.U)
        return cls(keys, u)

    @classmethod
    def create_train(cls, weight, rank=2, alpha=1.0):
        """TrainLoraNode's entry: `rank` reflections, rounded up to an even number >= 2 (identity pairs)."""
        return HouseholderTrainable(weight, max(2, rank + rank % 2))

    def to_train(self):
        module = HouseholderTrainable(torch.zeros(1, self.weights[0].shape[0]), 2)
        module.hra_u = torch.nn.Parameter(self.weights[0].float().clone())
        return module

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        u = householder.check(self.weights[0], key, tuple(weight.shape))
        u = comfy.model_management.cast_to_device(u, weight.device, intermediate_dtype)
        w = weight.to(intermediate_dtype)
        weight += function((householder.apply_hra(w, u, strength) - w).to(weight.dtype))
        return weight


ADAPTERS = (PyraSparseAdapter, PyraHouseholderAdapter)


def register() -> None:
    """Add the adapter types to the host's registries once (the pack may be imported more than once)."""
    known = {cls.name for cls in weight_adapter.adapters}
    for cls in ADAPTERS:
        if cls.name not in known:
            weight_adapter.adapters.append(cls)
    weight_adapter.adapter_maps.setdefault("Householder (Pyra)", PyraHouseholderAdapter)
