"""Dense attention, the reference: plain SDPA, and SDPA in query chunks whose score matrices stay under a byte
budget (the same softmax per query; memory that does not depend on which kernel torch picks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def chunked_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, budget_bytes: int) -> torch.Tensor:
    """q (B, H, N, D) in chunks of queries, keys and values whole, each chunk's (chunk, M) scores under the
    budget (three score-sized tensors counted)."""
    n, m = q.shape[-2], k.shape[-2]
    chunk = max(1, min(n, budget_bytes // (3 * m * q.element_size())))
    out = torch.empty_like(q)
    for i in range(0, n, chunk):
        out[..., i:i + chunk, :] = F.scaled_dot_product_attention(q[..., i:i + chunk, :], k, v)
    return out
