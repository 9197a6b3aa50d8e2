"""Truncated SVD of a 2-D matrix: exact (the reference) and randomized (Halko, Martinsson and Tropp 2011).

Randomized SVD, HMT Algorithm 4.4 with re-orthonormalised power iterations: draw a Gaussian test matrix
Omega (n x l, l = k + p with oversampling p), take Q = orth(A Omega), refine it q times with
Q = orth(A orth(A^T Q)), then compute the SVD of the small l x n matrix B = Q^T A and truncate to k.

Error bound (HMT Theorem 10.5 for q = 0, Corollary 10.10 for q >= 1): with P = Q Q^T and p >= 2,

    E ||(I - P) A||_F <= sqrt(1 + k / (p - 1)) * sqrt(sum_{j > k} sigma_j^2)                        (q = 0)
    E ||(I - P) A||_2 <= [ (1 + sqrt(k / (p - 1))) sigma_{k+1}^(2q+1)
                           + (e sqrt(k + p) / p) sqrt(sum_{j > k} sigma_j^(2(2q+1))) ]^(1 / (2q+1))

so power iterations drive the spectral error towards sigma_{k+1}, the optimum. The rank-k truncation of Q B is
P_k A for an orthogonal projection P_k, hence ||A - P_k A||_F^2 = ||A||_F^2 - sum_{i <= k} s_i^2 exactly: the
retained energy and the error of the returned factors are known without forming the product.
`hmt_frobenius_bound` evaluates the q = 0 bound for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("randomized", "exact")


@dataclass
class Spectrum:
    """Top singular triplets of a matrix A (m x n): A ~ U diag(S) Vh, U (m, r), S (r,), Vh (r, n).

    `energy` is ||A||_F^2 of the whole matrix, so retained energy and error of any prefix follow from S.
    """

    U: Tensor
    S: Tensor
    Vh: Tensor
    energy: float

    def truncate(self, rank: int) -> Spectrum:
        return Spectrum(self.U[:, :rank], self.S[:rank], self.Vh[:rank], self.energy)

    def retained(self, rank: int) -> float:
        """Fraction of ||A||_F^2 kept by the first `rank` triplets."""
        if self.energy <= 0:
            return 1.0
        return min(1.0, float(self.S[:rank].double().square().sum()) / self.energy)

    def relative_error(self, rank: int) -> float:
        """||A - A_rank||_F / ||A||_F of the first `rank` triplets (exact for both methods, see module doc)."""
        return math.sqrt(max(0.0, 1.0 - self.retained(rank)))


def _compute_dtype(a: Tensor) -> torch.dtype:
    return torch.float64 if a.dtype == torch.float64 else torch.float32


def exact_svd(a: Tensor, rank: int) -> Spectrum:
    """Reference: the exact truncated SVD (LAPACK / cuSOLVER), `rank` clipped to min(m, n)."""
    a = a.to(_compute_dtype(a))
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    rank = min(rank, s.numel())
    return Spectrum(u[:, :rank], s[:rank], vh[:rank], float(a.double().square().sum()))


def randomized_svd(a: Tensor, rank: int, oversample: int = 10, power_iters: int = 2, seed: int = 0) -> Spectrum:
    """HMT randomized truncated SVD (see module docstring for the error bound); exact when l >= min(m, n)."""
    a = a.to(_compute_dtype(a))
    m, n = a.shape
    rank = min(rank, m, n)
    width = rank + oversample
    if width >= min(m, n):
        return exact_svd(a, rank)
    g = torch.Generator(device=a.device).manual_seed(seed)
    omega = torch.randn(n, width, generator=g, device=a.device, dtype=a.dtype)
    q = torch.linalg.qr(a @ omega).Q
    for _ in range(power_iters):
        z = torch.linalg.qr(a.mT @ q).Q
        q = torch.linalg.qr(a @ z).Q
    ub, s, vh = torch.linalg.svd(q.mT @ a, full_matrices=False)
    return Spectrum((q @ ub[:, :rank]), s[:rank], vh[:rank], float(a.double().square().sum()))


def truncated_svd(a: Tensor, rank: int, method: str = "randomized", seed: int = 0, **opts) -> Spectrum:
    """`method` "randomized" (seeded, `opts` as randomized_svd) or "exact"."""
    if method == "randomized":
        return randomized_svd(a, rank, seed=seed, **opts)
    if method == "exact":
        return exact_svd(a, rank)
    raise ValueError(f"unknown SVD method {method!r}; choose one of {', '.join(METHODS)}")


def hmt_frobenius_bound(singular_values: Tensor, rank: int, oversample: int) -> float:
    """HMT Theorem 10.5: expected ||(I - QQ^T) A||_F of the q = 0 range finder, from A's full spectrum."""
    if oversample < 2:
        raise ValueError("the bound needs oversampling p >= 2")
    tail = float(singular_values[rank:].double().square().sum())
    return math.sqrt(1 + rank / (oversample - 1)) * math.sqrt(tail)
