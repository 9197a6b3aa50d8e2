"""Low-rank compensation of a pruning residual: a layer computes x S^T + (x A) B instead of x W^T.

A (in, r) and B (r, out) are the rank-r truncated SVD of the residual R = W - S (out, in), split symmetrically:
R ~= U_r diag(s_r) V_r^T, so R^T ~= (V_r sqrt(s_r)) (sqrt(s_r) U_r^T) = A B. By Eckart-Young this is the best
rank-r correction in Frobenius norm for inputs with identity covariance (random inputs); activation-aware
fitting is not done here.
"""

from __future__ import annotations

import torch


def lowrank_compensation(weight: torch.Tensor, sparse: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (in, r), B (r, out)) in weight's dtype, computed in fp32 (fp64 for fp64) on weight's device.

    weight, sparse: (out, in). rank is clipped to min(out, in).
    """
    if weight.shape != sparse.shape or weight.dim() != 2:
        raise ValueError(f"weight {tuple(weight.shape)} and sparse {tuple(sparse.shape)} must be the same 2-D shape")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    work = torch.promote_types(weight.dtype, torch.float32)
    residual = weight.detach().to(work) - sparse.detach().to(work)
    u, s, vh = torch.linalg.svd(residual, full_matrices=False)  # (out, k), (k,), (k, in)
    r = min(rank, s.shape[0])
    root = s[:r].sqrt()
    a = vh[:r].T * root[None, :]  # (in, r)
    b = root[:, None] * u[:, :r].T  # (r, out)
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()
