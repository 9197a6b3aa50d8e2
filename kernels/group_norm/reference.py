"""GroupNorm with given statistics, the reference: fp32 arithmetic in chunks of groups, rounded to x's dtype."""

from __future__ import annotations

import torch
from torch import Tensor

GROUPS_PER_CHUNK = 8  # fp32 work in chunks of groups: a bf16 band never has a whole fp32 twin


def group_norm_reference(x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | None, bias: Tensor | None,
                         groups: int) -> Tensor:
    """(x - mean) * rstd per (sample, group), then the per-channel affine; x (B, C, ...), mean and rstd (B, G) fp32."""
    out = x.new_empty(x.shape)  # contiguous, so its grouped view below is a view
    xg, og = x.reshape(x.shape[0], groups, -1), out.reshape(x.shape[0], groups, -1)
    per = x.shape[1] // groups
    for g0 in range(0, groups, GROUPS_PER_CHUNK):
        g1 = min(groups, g0 + GROUPS_PER_CHUNK)
        y = (xg[:, g0:g1].float() - mean[:, g0:g1, None]).mul_(rstd[:, g0:g1, None])
        if weight is not None:
            channels = slice(g0 * per, g1 * per)
            shape = (1, g1 - g0, per, 1)
            wgt = weight[channels].to(device=x.device, dtype=torch.float32).reshape(shape)
            b = bias[channels].to(device=x.device, dtype=torch.float32).reshape(shape)
            y = y.reshape(x.shape[0], g1 - g0, per, -1).mul_(wgt).add_(b)
        og[:, g0:g1] = y.reshape(x.shape[0], g1 - g0, -1)
    return out
