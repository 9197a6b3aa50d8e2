"""Training-free block mask from mean-pooled queries and keys (the SpargeAttn / Sparse VideoGen idea).

Per query block, key blocks are ranked by softmax(q_pool k_pool^T / sqrt(d)); the text-token blocks and the
diagonal block rank first, and the kept set is the top of that ranking up to a cumulative softmax mass or a
fixed count of blocks (keep ratio).
"""

from __future__ import annotations

import math

import torch

from ...kernels.block_sparse_attention import BlockPlan
from ...kernels.bounded import BoundedCache


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


def _text_blocks(tokens: int, text_tokens: int, text_at_end: bool, block_size: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """Bool (blocks,): the blocks that hold at least one text token (built on `device`, no host copy)."""
    idx = torch.arange(math.ceil(tokens / block_size), device=device)
    text_tokens = min(max(text_tokens, 0), tokens)
    if text_tokens == 0:
        return idx < 0
    if text_at_end:
        return idx >= (tokens - text_tokens) // block_size
    return idx < math.ceil(text_tokens / block_size)


def _plan(q: torch.Tensor, k: torch.Tensor, block_size: int, keep_mass: float, keep_ratio: float, text_tokens: int,
          text_at_end: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    qp, kp = pool_blocks(q, block_size), pool_blocks(k, block_size)
    probs = torch.softmax(qp @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    blocks = probs.shape[-1]
    text = _text_blocks(q.shape[-2], text_tokens, text_at_end, block_size, q.device)
    idx = torch.arange(blocks, device=q.device)
    forced = (idx[:, None] == idx[None, :]) | text[None, :] | text[:, None]
    # probs lie in [0, 1], so the forced blocks (+2) rank first: they are a prefix of the order.
    order = torch.argsort(probs + 2.0 * forced, dim=-1, descending=True)
    forced_counts = forced.sum(-1, dtype=torch.int32)
    if keep_ratio > 0:
        counts = torch.full_like(forced_counts, max(1, round(keep_ratio * blocks))).expand(probs.shape[:-1])
    elif keep_mass >= 1.0:
        counts = torch.full(probs.shape[:-1], blocks, dtype=torch.int32, device=q.device)
    else:  # the mass before a block grows along the ranking: the blocks below keep_mass are a prefix
        rank_probs = probs.gather(-1, order)
        counts = ((rank_probs.cumsum(-1) - rank_probs) < keep_mass).sum(-1, dtype=torch.int32)
    counts = torch.maximum(counts, forced_counts)  # the kept prefix covers the forced prefix
    keep_sorted = idx < counts[..., None]
    mask = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return mask, order.to(torch.int32), counts


# The default of predict_block_plan's `compiled`: on the H200 the compiled predictor took 0.34 ms against 0.53 ms
# eager at 32760 tokens, 24 heads (benchmarks/results/sparse-attention-h200.md). Its plan can differ from the
# eager one where two blocks' pooled scores tie within rounding (fused reductions sum in another order).
COMPILE_PREDICTOR = True
_compiled_plans = BoundedCache(16)  # compiled predictors, one per (shapes, dtype, device, settings)


@torch.no_grad()
def predict_block_plan(q: torch.Tensor, k: torch.Tensor, block_size: int = 128, keep_mass: float = 0.9,
                       keep_ratio: float = 0.0, text_tokens: int = 0, text_at_end: bool = False,
                       compiled: bool | None = None) -> BlockPlan:
    """The block mask of `predict_block_mask` with its kept-first ranking (a BlockPlan). `compiled` (default
    COMPILE_PREDICTOR) runs the prediction on CUDA through torch.compile, once per (shape, dtype, settings)."""
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"block masks are for self-attention: {q.shape[-2]} queries but {k.shape[-2]} keys")
    if not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must lie in [0, 1], got {keep_ratio}")
    settings = (block_size, keep_mass, keep_ratio, text_tokens, text_at_end)
    if (COMPILE_PREDICTOR if compiled is None else compiled) and q.device.type == "cuda":
        key = (tuple(q.shape), tuple(k.shape), q.dtype, q.device, settings)
        predictor = _compiled_plans.get(key, lambda: torch.compile(lambda q, k: _plan(q, k, *settings), dynamic=False))
        mask, order, counts = predictor(q, k)
    else:
        mask, order, counts = _plan(q, k, *settings)
    return BlockPlan(mask, order, counts, block_size)


def predict_block_mask(q: torch.Tensor, k: torch.Tensor, block_size: int = 128, keep_mass: float = 0.9,
                       keep_ratio: float = 0.0, text_tokens: int = 0, text_at_end: bool = False) -> torch.Tensor:
    """Bool block mask (B, H, ceil(N / block_size), ceil(N / block_size)) for self-attention q, k (B, H, N, D).

    keep_ratio > 0 keeps round(keep_ratio * key blocks) blocks per query block (at least the forced ones);
    otherwise the top blocks whose cumulative pooled softmax mass before them is below keep_mass
    (keep_mass >= 1 keeps every block). The diagonal block and the text blocks (columns and rows) are always
    kept: `text_tokens` text tokens lead the sequence, or trail it with text_at_end.
    """
    return predict_block_plan(q, k, block_size, keep_mass, keep_ratio, text_tokens, text_at_end).mask


def block_sparsity(block_mask: torch.Tensor) -> float:
    """Fraction of skipped blocks (0 = dense)."""
    return 1.0 - block_mask.float().mean().item()
