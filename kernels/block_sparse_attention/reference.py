"""Block-sparse attention, the reference: SDPA over the element mask expanded from the block mask (everywhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_block_mask(block_mask: torch.Tensor, block_size: int, q_len: int, k_len: int) -> torch.Tensor:
    """Block mask (..., nq, nk) -> element mask (..., q_len, k_len) (True = attend)."""
    rows = block_mask.repeat_interleave(block_size, dim=-2)[..., :q_len, :]
    return rows.repeat_interleave(block_size, dim=-1)[..., :k_len]


def dense_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor,
                           block_size: int) -> torch.Tensor:
    """SDPA over the expanded element mask. q, k, v (B, H, N, D), block_mask (B|1, H|1, nq, nk) bool."""
    mask = expand_block_mask(block_mask, block_size, q.shape[-2], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
