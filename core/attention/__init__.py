"""Block-sparse attention: the training-free block mask predictor (block_mask.py); the attention over a block
mask is the kernel kernels/block_sparse_attention/, dense attention kernels/sdpa/."""

from .block_mask import block_sparsity, pool_blocks, predict_block_mask, predict_block_plan

__all__ = ["block_sparsity", "pool_blocks", "predict_block_mask", "predict_block_plan"]
