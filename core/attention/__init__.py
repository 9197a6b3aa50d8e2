"""Block-sparse attention: a training-free block mask predictor, the dense masked reference, FlexAttention."""

from .block_mask import block_sparsity, expand_block_mask, pool_blocks, predict_block_mask
from .block_sparse import (
    SparseAttentionBackend,
    block_sparse_attention,
    dense_masked_attention,
    fastest_sdpa,
    flex_block_sparse_attention,
)

__all__ = ["SparseAttentionBackend", "block_sparse_attention", "block_sparsity", "dense_masked_attention",
           "expand_block_mask", "fastest_sdpa", "flex_block_sparse_attention", "pool_blocks", "predict_block_mask"]
