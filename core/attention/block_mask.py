"""Training-free block mask from mean-pooled queries and keys (the SpargeAttn / Sparse VideoGen idea).

Per query block, key blocks are ranked by softmax(q_pool k_pool^T / sqrt(d)); the text-token blocks and the
diagonal block rank first, and the kept set is the top of that ranking up to a cumulative softmax mass or a
fixed count of blocks (keep ratio).
"""

from __future__ import annotations

import math

import torch


def pool_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, ceil(N / block_size), D) fp32: the mean over each block's real tokens.

    Sums in fp32 while reading x in its own dtype (no upcast copy of q or k: at 75k tokens that copy cost more
    than the rest of the mask prediction)."""
    n = x.shape[-2]
    full, rest = divmod(n, block_size)
    parts = []
    if full:
        head = x[..., : full * block_size, :].unflatten(-2, (full, block_size))
        parts.append(head.sum(-2, dtype=torch.float32) / block_size)
    if rest:
        parts.append(x[..., full * block_size:, :].sum(-2, keepdim=True, dtype=torch.float32) / rest)
    return torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]


def _text_blocks(tokens: int, text_tokens: int, text_at_end: bool, block_size: int) -> torch.Tensor:
    """Bool (blocks,): the blocks that hold at least one text token."""
    blocks = math.ceil(tokens / block_size)
    is_text = torch.zeros(blocks, dtype=torch.bool)
    if text_tokens > 0:
        text_tokens = min(text_tokens, tokens)
        if text_at_end:
            is_text[(tokens - text_tokens) // block_size:] = True
        else:
            is_text[: math.ceil(text_tokens / block_size)] = True
    return is_text


@torch.no_grad()
def predict_block_mask(q: torch.Tensor, k: torch.Tensor, block_size: int = 128, keep_mass: float = 0.9,
                       keep_ratio: float = 0.0, text_tokens: int = 0, text_at_end: bool = False) -> torch.Tensor:
    """Bool block mask (B, H, ceil(N / block_size), ceil(N / block_size)) for self-attention q, k (B, H, N, D).

    keep_ratio > 0 keeps round(keep_ratio * key blocks) blocks per query block (at least the forced ones);
    otherwise the top blocks whose cumulative pooled softmax mass before them is below keep_mass
    (keep_mass >= 1 keeps every block). The diagonal block and the text blocks (columns and rows) are always
    kept: `text_tokens` text tokens lead the sequence, or trail it with text_at_end.
    """
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"block masks are for self-attention: {q.shape[-2]} queries but {k.shape[-2]} keys")
    if not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must lie in [0, 1], got {keep_ratio}")
    qp, kp = pool_blocks(q, block_size), pool_blocks(k, block_size)
    probs = torch.softmax(qp @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    blocks = probs.shape[-1]
    text = _text_blocks(q.shape[-2], text_tokens, text_at_end, block_size).to(q.device)
    forced = torch.eye(blocks, dtype=torch.bool, device=q.device) | text[None, :] | text[:, None]
    order = torch.argsort(probs + 2.0 * forced, dim=-1, descending=True)  # forced blocks rank first
    rank_probs = probs.gather(-1, order)
    if keep_ratio > 0:
        keep_sorted = torch.arange(blocks, device=q.device) < max(1, round(keep_ratio * blocks))
        keep_sorted = keep_sorted.expand_as(rank_probs)
    elif keep_mass >= 1.0:
        keep_sorted = torch.ones_like(rank_probs, dtype=torch.bool)
    else:
        keep_sorted = (rank_probs.cumsum(-1) - rank_probs) < keep_mass
    mask = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return mask | forced


def block_sparsity(block_mask: torch.Tensor) -> float:
    """Fraction of skipped blocks (0 = dense)."""
    return 1.0 - block_mask.float().mean().item()


def expand_block_mask(block_mask: torch.Tensor, block_size: int, q_len: int, k_len: int) -> torch.Tensor:
    """Block mask (..., nq, nk) -> element mask (..., q_len, k_len) (True = attend)."""
    rows = block_mask.repeat_interleave(block_size, dim=-2)[..., :q_len, :]
    return rows.repeat_interleave(block_size, dim=-1)[..., :k_len]
