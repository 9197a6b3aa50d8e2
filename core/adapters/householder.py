"""Householder reflection adapters (HRA, Yuan et al. NeurIPS 2024; ALGORITHMS.md 11 b'): W' = W H_1 ... H_r.

A weight W of shape (out, *in) is treated as the matrix W (out, d), d = prod(in); H_i = I - 2 u_i u_i^T / |u_i|^2
reflects the input space, so W' keeps W's singular values (H is orthogonal). Strength s interpolates the change,
W + s (W H - W), as the host does for OFT: s = 1 gives W H, s = 0 gives W.

File format (safetensors), per adapted weight, module key `x` = the parameter name without ".weight":
    x.hra_u   float (d, r)   the r reflection vectors as columns, applied in column order (u_1 first: W H_1 ...)
A zero column defines no reflection and is rejected.

Init (the paper's): r/2 random vectors each repeated twice (`repeat_interleave`), so H_{2k-1} H_{2k} = I and the
adapter starts as the identity; training moves the pairs apart.

Fast path: the compact WY form H_1 ... H_r = I - V T V^T (`compact_wy`), so `apply_hra` is three matmuls through
(out, r), O(r out d), and training keeps (out, r) tensors per layer instead of r copies of W.
Tolerance rule: `apply_hra` and `hra_linear` (reflect the activations, never forming W') against the reference
`householder_matrix` (H formed in fp64 by r rank-1 updates, then W H): relative error of the result <= 2e-5 (fp32),
2e-2 (bf16), 4e-3 (fp16) of its norm (HRA_RTOL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

U = ".hra_u"
HRA_RTOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


class HouseholderFormatError(ValueError):
    """A Householder adapter that cannot be applied; the message names the key."""


def check(u: Tensor, key: str, weight_shape: tuple[int, ...] | None = None) -> Tensor:
    """Validate the vectors of module `key` (and their length against the weight's input size, if given)."""
    if u.ndim != 2 or not u.is_floating_point():
        raise HouseholderFormatError(f"{key}{U}: must be a float (d, r) tensor, got {u.dtype} {tuple(u.shape)}")
    if weight_shape is not None:
        d = math.prod(weight_shape[1:])
        if len(weight_shape) < 2 or d != u.shape[0]:
            raise HouseholderFormatError(f"{key}: the Householder adapter has vectors of length {u.shape[0]} but "
                                         f"the model's weight is {tuple(weight_shape)}: the file was made for "
                                         "another model")
    norms = u.float().norm(dim=0)
    if bool((norms == 0).any()) or not bool(norms.isfinite().all()):
        raise HouseholderFormatError(f"{key}{U}: column {int((~(norms > 0)).nonzero()[0])} has zero or non-finite "
                                     "norm, which defines no reflection: the file is corrupt")
    return u


def init_vectors(d: int, r: int, generator: torch.Generator | None = None) -> Tensor:
    """The paper's init: r/2 random unit vectors, each repeated twice, so the product is the identity."""
    if r < 2 or r % 2:
        raise ValueError(f"HRA needs an even number of reflections >= 2 (identical pairs), got {r}")
    half = torch.randn(d, r // 2, generator=generator)
    return F.normalize(half, dim=0).repeat_interleave(2, dim=1)


def householder_matrix(u: Tensor) -> Tensor:
    """Reference: H = H_1 ... H_r as a dense (d, d) fp64 matrix."""
    u = u.double()
    h = torch.eye(u.shape[0], dtype=torch.float64, device=u.device)
    for i in range(u.shape[1]):
        v = u[:, i : i + 1]
        h = h - (2.0 / (v.mT @ v)) * (h @ v) @ v.mT
    return h


def _unit(u: Tensor, dtype: torch.dtype) -> Tensor:
    return F.normalize(u.to(dtype), dim=0)


def compact_wy(u: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(V, T) with H_1 ... H_r = I - V T V^T (compact WY form; Schreiber & Van Loan 1989): V the unit vectors
    (d, r), T upper triangular (r, r), T^-1 = diag(1/2) + striu(V^T V) (Joffrain et al. 2006, for tau = 2).
    T^-1 always has the diagonal 1/2, so it is invertible for any vectors. Built in at least fp32, returned in
    `dtype`; differentiable in u."""
    work = torch.promote_types(dtype, torch.float32)
    v = _unit(u, work)
    eye = torch.eye(v.shape[1], dtype=work, device=v.device)
    t = torch.linalg.solve_triangular(torch.triu(v.mT @ v, 1) + 0.5 * eye, eye, upper=True)
    return v.to(dtype), t.to(dtype)


def reflect_rows(w: Tensor, u: Tensor) -> Tensor:
    """W H_1 ... H_r = W - ((W V) T) V^T for W (out, d): three matmuls through (out, r). Differentiable, and what
    autograd keeps is W and (out, r) tensors, not one copy of W per reflection; no d x d matrix is formed."""
    v, t = compact_wy(u, w.dtype)
    return w - ((w @ v) @ t) @ v.mT


def apply_hra(weight: Tensor, u: Tensor, strength: float = 1.0) -> Tensor:
    """weight + strength * (weight H - weight), reshaped back; computed in `weight`'s dtype."""
    w = weight.reshape(weight.shape[0], -1)
    out = reflect_rows(w, u)
    if strength != 1.0:
        out = torch.lerp(w, out, strength)
    return out.reshape(weight.shape)


def reflect_inputs(x: Tensor, u: Tensor) -> Tensor:
    """H x = H_1 (... (H_r x)) for x (..., d), row-wise: x H^T = x - ((x V) T^T) V^T (so a Linear with weight W H
    sees W (H x))."""
    v, t = compact_wy(u, x.dtype)
    return x - ((x @ v) @ t.mT) @ v.mT


def hra_linear(x: Tensor, weight: Tensor, bias: Tensor | None, u: Tensor, strength: float = 1.0) -> Tensor:
    """Activation path of a Linear: W (H x) with H x = H_1 (... (H_r x)), blended with W x by `strength`."""
    adapted = F.linear(reflect_inputs(x, u), weight, bias)
    return adapted if strength == 1.0 else torch.lerp(F.linear(x, weight, bias), adapted, strength)
