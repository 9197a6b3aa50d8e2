"""The kernel's input: a predicted block mask in the two forms its backends read."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockPlan:
    """A predicted block mask in two forms: `mask` bool (B, H, nq, nk), and per query block the key blocks
    ranked with the kept ones first, `order` (B, H, nq, nk) int32, of which the first `counts` (B, H, nq)
    int32 are kept. `mask` and `order[..., :counts]` hold the same blocks."""

    mask: torch.Tensor
    order: torch.Tensor
    counts: torch.Tensor
    block_size: int
