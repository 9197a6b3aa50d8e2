"""Sparse weight deltas (SaRA, Hu et al. ICLR 2025): explicit flat indices and values, file format, activation path.

File format (safetensors), per adapted parameter; the module key `x` is the parameter name without ".weight"
for weights (`diffusion_model.input_blocks.1.1.proj_in`) and the full name for anything else
(`diffusion_model.input_blocks.1.1.proj_in.bias`), which is how the host's LoRA key map names targets:
    x.sparse_idx    int64 (or int32) (n,)  flat indices into the parameter (row-major), unique
    x.sparse_val    float (n,)             the deltas at those indices: W.flatten()[idx] += strength * val
    x.sparse_shape  int64 (ndim,)          the parameter's shape, so a file made for another model is caught
Deltas (not SaRA's absolute values) make strength scaling and composition with other adapters plain addition,
and explicit indices make the file independent of the precision the base model is loaded in (ALGORITHMS.md 3 f).

Tolerance rule (`apply_sparse` vs the reference `dense_delta` + add; `sparse_linear` vs the merged weight): the
scatter adds each value once, so merged = reference bitwise in fp32 and within one rounding of the weight dtype
in fp16/bf16; the activation path differs from the merged one by the matmul's accumulation order only:
relative error <= 1e-5 (fp32), 1e-2 (bf16), 2e-3 (fp16) of the output norm (SPARSE_RTOL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IDX, VAL, SHAPE = ".sparse_idx", ".sparse_val", ".sparse_shape"
SPARSE_RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


class SparseFormatError(ValueError):
    """A sparse adapter that cannot be applied; the message names the key and says what to do."""


@dataclass
class SparseDelta:
    """delta.flatten()[idx] = val, zero elsewhere, for a parameter of `shape`."""

    idx: Tensor
    val: Tensor
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return torch.Size(self.shape).numel()


def module_key(param: str) -> str:
    """The key a file stores for parameter `param`: ".weight" dropped, anything else kept (module docstring)."""
    return param[: -len(".weight")] if param.endswith(".weight") else param


def check(delta: SparseDelta, key: str, shape: tuple[int, ...] | None = None) -> SparseDelta:
    """Validate index dtype, lengths, range and (if given) the target shape; errors name `key`."""
    idx, val = delta.idx, delta.val
    if idx.dtype not in (torch.int32, torch.int64) or idx.ndim != 1:
        raise SparseFormatError(f"{key}{IDX}: must be a 1-D int32/int64 tensor, got {idx.dtype} {tuple(idx.shape)}")
    if not val.is_floating_point() or val.shape != idx.shape:
        raise SparseFormatError(f"{key}{VAL}: must be floats of the same length as {key}{IDX} ({idx.numel()}), "
                                f"got {val.dtype} {tuple(val.shape)}")
    if shape is not None and tuple(shape) != tuple(delta.shape):
        raise SparseFormatError(f"{key}: the sparse adapter was made for shape {tuple(delta.shape)} but the model's "
                                f"weight is {tuple(shape)}: the file was made for another model")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= delta.numel):
        raise SparseFormatError(f"{key}{IDX}: indices outside [0, {delta.numel}): the file is corrupt")
    bad = int((~torch.isfinite(val)).sum())
    if bad:
        raise SparseFormatError(f"{key}{VAL}: {bad} non-finite values (NaN or inf): the file is damaged or its "
                                "training diverged")
    return delta


def from_tensors(sd: dict[str, Tensor], key: str) -> SparseDelta | None:
    """The delta stored under module key `key`, or None if `sd` has no `key.sparse_idx`."""
    if key + IDX not in sd:
        return None
    if key + VAL not in sd or key + SHAPE not in sd:
        raise SparseFormatError(f"{key}: has {IDX} but not {VAL} and {SHAPE}: the file is incomplete")
    shape = sd[key + SHAPE]
    if shape.dtype not in (torch.int32, torch.int64) or shape.ndim != 1:
        raise SparseFormatError(f"{key}{SHAPE}: must be a 1-D integer tensor")
    return check(SparseDelta(sd[key + IDX], sd[key + VAL], tuple(int(s) for s in shape)), key)


def to_tensors(key: str, delta: SparseDelta, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """The three tensors of one module key (indices int64, values in `dtype`)."""
    return {
        key + IDX: delta.idx.to(torch.int64).contiguous().cpu(),
        key + VAL: delta.val.to(dtype).contiguous().cpu(),
        key + SHAPE: torch.tensor(delta.shape, dtype=torch.int64),
    }


def dense_delta(delta: SparseDelta, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Reference: the delta as a dense tensor of `delta.shape`."""
    out = torch.zeros(delta.numel, dtype=dtype, device=device)
    out[delta.idx.to(device=device, dtype=torch.int64)] = delta.val.to(device=device, dtype=dtype)
    return out.view(delta.shape)


def apply_sparse(weight: Tensor, delta: SparseDelta, strength: float = 1.0) -> Tensor:
    """weight + strength * delta, computed in place with a scatter-add of the n values (weight is returned)."""
    idx = delta.idx.to(device=weight.device, dtype=torch.int64)
    val = delta.val.to(device=weight.device, dtype=weight.dtype)
    if weight.is_contiguous():
        weight.view(-1).index_add_(0, idx, val, alpha=strength)
    else:  # a strided view: no flat alias exists
        weight += dense_delta(delta, weight.dtype, weight.device).mul_(strength)
    return weight


def delta_matmul(x: Tensor, delta: SparseDelta, strength: float = 1.0) -> Tensor:
    """strength * x S^T for x (..., in) and S the (out, in) sparse delta as a COO matrix: (..., out), on x's device
    in fp32 or x's wider dtype (a Linear's bypass term; sparse matmul has no half-precision CPU kernel)."""
    if len(delta.shape) != 2:
        raise ValueError(f"delta_matmul needs a 2-D (Linear) delta, got shape {delta.shape}")
    out_f, in_f = delta.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    idx = delta.idx.to(device=x.device, dtype=torch.int64)
    s = torch.sparse_coo_tensor(torch.stack([idx // in_f, idx % in_f]),
                                delta.val.to(device=x.device, dtype=dtype) * strength, (out_f, in_f),
                                check_invariants=False)
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    return torch.sparse.mm(s.coalesce(), flat.t()).t().reshape(*x.shape[:-1], out_f)


def sparse_linear(x: Tensor, weight: Tensor, bias: Tensor | None, delta: SparseDelta,
                  strength: float = 1.0) -> Tensor:
    """Activation (bypass) path of a Linear: x W^T + strength * x S^T (+ b), S the sparse delta as a COO matrix."""
    if weight.ndim != 2:
        raise ValueError("sparse_linear needs a 2-D (Linear) weight")
    return F.linear(x, weight, bias) + delta_matmul(x, delta, strength).to(x.dtype)


def select_small(weight: Tensor, threshold: float) -> Tensor:
    """SaRA's selection: flat indices of |w| < threshold, decided in fp32 (int64, ascending)."""
    return torch.nonzero(weight.detach().float().abs().flatten() < threshold).flatten()
