"""Block-sparse attention: attention over the kept (query block, key block) pairs of a block mask.

Backends: `flex.py` (FlexAttention, compiled once per shape, CUDA with Triton) and `reference.py` (SDPA over
the expanded element mask, everywhere). `block_sparse_attention` takes the fast one where it runs and records
why not where it does not (kernels/fallback.py). README.md: semantics, constraints, tolerance.
"""

from __future__ import annotations

import torch

from ..bounded import BoundedCache
from ..fallback import fall_back
from . import flex
from .flex import KERNEL_OPTIONS, flex_block_sparse_attention, plan_to_flex_block_mask, to_flex_block_mask
from .plan import BlockPlan
from .reference import dense_masked_attention, expand_block_mask

COMPILED_SHAPES = 16  # compiled kernels kept (least recently used dropped): one per (shape, dtype, device)


class SparseAttentionBackend:
    """flex_attention compiled once per (shape, dtype, device); the dense reference where it cannot run."""

    def __init__(self, kernel_options: dict | None = KERNEL_OPTIONS) -> None:
        self._compiled = BoundedCache(COMPILED_SHAPES)
        self.kernel_options = dict(kernel_options) if kernel_options else None
        self.fallback_reason: str | None = None

    def kernel(self, q: torch.Tensor):
        from torch.nn.attention.flex_attention import flex_attention

        options = self.kernel_options

        def compiled():
            def run(q, k, v, block_mask):
                return flex_attention(q, k, v, block_mask=block_mask, kernel_options=options)

            return torch.compile(run, dynamic=False)

        return self._compiled.get((tuple(q.shape), q.dtype, q.device), compiled)

    def __call__(self, q, k, v, block_mask: torch.Tensor | BlockPlan, block_size: int) -> torch.Tensor:
        """`block_mask`: a bool block mask, or a BlockPlan (its BlockMask is built without sorting)."""
        reason = flex.unavailable_reason(q)
        if reason is not None:
            self.fallback_reason = fall_back("block-sparse attention", reason)
            mask = block_mask.mask if isinstance(block_mask, BlockPlan) else block_mask
            return dense_masked_attention(q, k, v, mask, block_size)
        return flex.flex_block_sparse_attention(q, k, v, block_mask, block_size, kernel=self.kernel(q))


_default_backend = SparseAttentionBackend()


def block_sparse_attention(q, k, v, block_mask: torch.Tensor | BlockPlan, block_size: int) -> torch.Tensor:
    """Attention over the kept blocks of `block_mask` (or a BlockPlan), FlexAttention where it runs, else the
    reference."""
    return _default_backend(q, k, v, block_mask, block_size)


__all__ = ["KERNEL_OPTIONS", "BlockPlan", "SparseAttentionBackend", "block_sparse_attention",
           "dense_masked_attention", "expand_block_mask", "flex_block_sparse_attention", "plan_to_flex_block_mask",
           "to_flex_block_mask"]
