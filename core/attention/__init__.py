"""Block-sparse attention: a training-free block mask predictor, the dense masked reference, FlexAttention."""

from .block_mask import (
    BlockPlan,
    block_sparsity,
    expand_block_mask,
    pool_blocks,
    predict_block_mask,
    predict_block_plan,
)
from .block_sparse import (
    SparseAttentionBackend,
    block_sparse_attention,
    dense_masked_attention,
    fastest_sdpa,
    flex_block_sparse_attention,
    plan_to_flex_block_mask,
    to_flex_block_mask,
)

__all__ = ["BlockPlan", "SparseAttentionBackend", "block_sparse_attention", "block_sparsity",
           "dense_masked_attention", "expand_block_mask", "fastest_sdpa", "flex_block_sparse_attention",
           "plan_to_flex_block_mask", "pool_blocks", "predict_block_mask", "predict_block_plan", "to_flex_block_mask"]
