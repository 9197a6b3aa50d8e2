"""Block-sparse attention on FlexAttention (CUDA, Triton): the block mask as a BlockMask, one compiled kernel."""

from __future__ import annotations

import torch

from .plan import BlockPlan


def unavailable_reason(q: torch.Tensor) -> str | None:
    """Why FlexAttention cannot run on `q`, or None when it can."""
    if q.device.type != "cuda":
        return f"FlexAttention kernels need a CUDA device, this runs on {q.device.type}"
    try:
        import triton  # noqa: F401
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError as err:
        return f"FlexAttention is unavailable ({err})"
    return None


# Triton configuration of the compiled kernel (None: torch's default for the GPU), the fastest of the variants in
# benchmarks/sparse_attention.py on the H200 (benchmarks/results/sparse-attention-h200.md): TMA loads with
# 128x128 tiles, 2 stages, 8 warps took 6.21 ms at 32760 tokens, 80% sparsity, against 7.36 ms for TMA with
# the default tiles and 7.53 ms for the same tiles without TMA.
KERNEL_OPTIONS: dict | None = {"USE_TMA": True, "BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2, "num_warps": 8}


def to_flex_block_mask(block_mask: torch.Tensor, block_size: int, q_len: int, k_len: int):
    """BlockMask for flex_attention from a bool (B, H, nq, nk) block mask; a ragged last key block is masked."""
    from torch.nn.attention.flex_attention import BlockMask

    def kv_blocks(mask: torch.Tensor):
        counts = mask.sum(-1, dtype=torch.int32)
        return counts, torch.argsort(mask.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)

    def kept(b, h, q_idx, kv_idx):  # the element mask: eager flex_attention and partial blocks read it
        return block_mask[b, h, q_idx // block_size, kv_idx // block_size] & (kv_idx < k_len)

    # Kept blocks are "full" (the compiled kernel skips mask_mod work on them) except a ragged last key block,
    # which stays "partial" so that mask_mod hides the keys past k_len.
    full = block_mask.clone()
    if k_len % block_size:
        full[..., -1] = False
    partial_counts, partial_idx = kv_blocks(block_mask & ~full)
    full_counts, full_idx = kv_blocks(full)
    return BlockMask.from_kv_blocks(partial_counts, partial_idx, full_counts, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=kept, seq_lengths=(q_len, k_len), compute_q_blocks=False)


def plan_to_flex_block_mask(plan: BlockPlan, q_len: int, k_len: int):
    """The BlockMask of `to_flex_block_mask(plan.mask, ...)` without sorting: the kept key blocks are the first
    `plan.counts` of `plan.order`. A ragged last key block leaves the full list for the partial one."""
    from torch.nn.attention.flex_attention import BlockMask

    block_mask, block_size = plan.mask, plan.block_size
    # The compiled kernel indexes these with the strides of dense (B, H, nq[, nk]) tensors: no expanded counts.
    full_counts, full_idx = plan.counts.contiguous(), plan.order.contiguous()
    last = full_idx.shape[-1] - 1
    partial_counts = torch.zeros_like(full_counts)
    if k_len % block_size:
        rank = (full_idx == last).to(torch.int32).argmax(-1, keepdim=True)  # where the ragged block ranks
        partial_counts = (rank.squeeze(-1) < full_counts).to(torch.int32)
        full_counts = full_counts - partial_counts
        # drop it from the ranking: entries after it move up one (the last entry repeats, past every count)
        idx = torch.arange(last + 1, device=full_idx.device)
        full_idx = full_idx.gather(-1, (idx + (idx >= rank)).clamp_(max=last))
    partial_idx = torch.full_like(full_idx, last)  # full width, like every kv_indices the kernel reads

    def kept(b, h, q_idx, kv_idx):  # the element mask: eager flex_attention and partial blocks read it
        return block_mask[b, h, q_idx // block_size, kv_idx // block_size] & (kv_idx < k_len)

    return BlockMask.from_kv_blocks(partial_counts, partial_idx, full_counts, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=kept, seq_lengths=(q_len, k_len), compute_q_blocks=False)


def flex_block_sparse_attention(q, k, v, block_mask: torch.Tensor | BlockPlan, block_size: int,
                                kernel=None) -> torch.Tensor:
    """FlexAttention over the kept blocks; `kernel` is a compiled flex_attention (eager when None)."""
    if kernel is None:
        from torch.nn.attention.flex_attention import flex_attention as kernel
    if isinstance(block_mask, BlockPlan):
        if block_mask.block_size != block_size:
            raise ValueError(f"the block plan has {block_mask.block_size}-token blocks, not {block_size}")
        flex_mask = plan_to_flex_block_mask(block_mask, q.shape[-2], k.shape[-2])
    else:
        mask = block_mask.expand(q.shape[0], q.shape[1], -1, -1)
        flex_mask = to_flex_block_mask(mask, block_size, q.shape[-2], k.shape[-2])
    return kernel(q, k, v, block_mask=flex_mask)
