"""Sparse (SaRA) and Householder (HRA) weight adapters registered with the host, so the stock LoRA loaders read them.

Registration (HOST.md 4, "Adding a new adapter type") appends the classes to `comfy.weight_adapter.adapters` when
the pack loads; the host's `load_lora` then builds one adapter per module key from a file's tensors, and
`calculate_weight` applies it wherever the host patches weights: full loading and the low-VRAM per-forward patch
path alike. Key suffixes `.sparse_idx` / `.hra_u` are unique, so no other adapter type claims the same module.
The Householder type is also put in `adapter_maps`, which makes it an "algorithm" of the host's TrainLoraNode: its
trainable parameter is named `hra_u`, so what SaveLoRA writes is this file format.

Bypass mode (0.33.0's LoraLoaderBypass, `comfy.weight_adapter.bypass`): the host leaves the weights alone and calls
each adapter's forward-side form, g(f(x) + h(x)) or the adapter's own `bypass_forward`; the base class's h returns
zeros, so without these methods a bypass load did nothing. Sparse: h(x) = strength * x S^T (a Linear) or the conv
of x with the dense delta. Householder on a Linear: f applied to lerp(x, H x, strength) (f is affine, so this is
the blend of W x and W H x); on a conv the reflection acts on the flattened (in, *kernel) patch, which no input
transform reproduces, so the delta W H - W is computed from the module's weight and convolved.
"""

from __future__ import annotations

import comfy.model_management
import comfy.weight_adapter as weight_adapter
import torch
import torch.nn.functional as F
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

    def h(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """Bypass term: strength * x S^T (Linear), or x convolved with strength * S (conv)."""
        strength = getattr(self, "multiplier", 1.0)
        if len(self.delta.shape) < 2:
            raise RuntimeError(f"sparse adapter in bypass mode: a delta on the 1-D weight {self.delta.shape} (a norm's "
                               "scale) has no forward-side form; load this file with the regular LoRA loader "
                               "(LoraLoaderModelOnly) instead of the bypass one")
        if getattr(self, "is_conv", False):
            conv = (F.conv1d, F.conv2d, F.conv3d)[self.conv_dim - 1]
            delta = sparse.dense_delta(self.delta, x.dtype, x.device).mul_(strength)
            return conv(x, delta, None, **self.kw_dict).to(base_out.dtype)
        return sparse.delta_matmul(x, self.delta, strength).to(base_out.dtype)


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

    def bypass_forward(self, org_forward, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Bypass form: a Linear gets f(lerp(x, H x, strength)); a conv gets f(x) + conv(x, W H - W)."""
        strength = getattr(self, "multiplier", 1.0)
        u = self.weights[0].to(x.device, torch.float32)
        if not getattr(self, "is_conv", False):
            z = householder.reflect_inputs(x.float(), u)
            z = z if strength == 1.0 else torch.lerp(x.float(), z, strength)
            return org_forward(z.to(x.dtype), *args, **kwargs)
        module = getattr(org_forward, "__self__", None)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or type(weight.data) is not torch.Tensor:
            raise RuntimeError(f"Householder adapter in bypass mode: the conv layer {type(module).__name__} has no "
                               "plain weight to reflect (quantized?); load this adapter with the regular LoRA loader "
                               "(LoraLoaderModelOnly) instead of the bypass one")
        w = weight.detach().to(x.device, torch.float32)
        delta = householder.apply_hra(w, householder.check(u, "bypass", tuple(w.shape)), strength) - w
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.conv_dim - 1]
        return org_forward(x, *args, **kwargs) + conv(x, delta.to(x.dtype), None, **self.kw_dict)


ADAPTERS = (PyraSparseAdapter, PyraHouseholderAdapter)


def register() -> None:
    """Add the adapter types to the host's registries once (the pack may be imported more than once)."""
    known = {cls.name for cls in weight_adapter.adapters}
    for cls in ADAPTERS:
        if cls.name not in known:
            weight_adapter.adapters.append(cls)
    weight_adapter.adapter_maps.setdefault("Householder (Pyra)", PyraHouseholderAdapter)
