"""N:M structured masks along the input dimension (2:4 for sparse tensor cores; 1:4 and 4:8 for storage).

A linear layer's weight W has shape (out, in); y = x W^T sums over `in`. Sparse tensor cores need every group
of M consecutive *input* channels of a row to hold at most N non-zeros, so the groups run along dim 1.
Scores:
- magnitude: |W|.
- Wanda (Sun et al., "A Simple and Effective Pruning Approach for LLMs", arXiv 2306.11695): |W| times the L2
  norm of the input channel over calibration tokens, so a weight on a loud channel is kept over a larger weight
  on a quiet one. Wanda compares per output row; inside an N:M group that is the same thing.
"""

from __future__ import annotations

import torch


def _check_groups(shape: torch.Size, m: int) -> None:
    if len(shape) != 2:
        raise ValueError(f"N:M masks are for 2-D linear weights (out, in), got shape {tuple(shape)}")
    if shape[1] % m:
        raise ValueError(f"input features {shape[1]} are not divisible by the group size M={m}: "
                         "keep this layer dense or pick an M that divides it")


def magnitude_score(weight: torch.Tensor, act_norm: torch.Tensor | None = None) -> torch.Tensor:
    """|W| in fp32. weight: (out, in); act_norm is ignored (same signature as wanda_score)."""
    return weight.detach().float().abs()


def wanda_score(weight: torch.Tensor, act_norm: torch.Tensor | None) -> torch.Tensor:
    """|W| * ||X_j||_2 in fp32. weight: (out, in); act_norm: (in,) input-channel L2 norms (ActivationNorms)."""
    if act_norm is None:
        raise ValueError("Wanda needs calibration statistics: collect ActivationNorms on the layer's inputs first")
    if act_norm.shape != (weight.shape[1],):
        raise ValueError(f"act_norm has shape {tuple(act_norm.shape)}, expected ({weight.shape[1]},): "
                         "one norm per input channel of this layer")
    return weight.detach().float().abs() * act_norm.to(weight.device, torch.float32)[None, :]


def nm_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Boolean mask keeping the n highest scores in every group of m consecutive input channels.

    score: (out, in), in % m == 0 -> mask (out, in), exactly n True per group.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < N <= M, got {n}:{m}")
    _check_groups(score.shape, m)
    out_f, in_f = score.shape
    groups = score.reshape(out_f, in_f // m, m)  # (out, in/m, m): groups along the input dim
    keep = groups.topk(n, dim=-1).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=score.device).scatter_(-1, keep, True)
    return mask.reshape(out_f, in_f)


def prune_nm(weight: torch.Tensor, n: int = 2, m: int = 4, score: str = "magnitude",
             act_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sparse weight in weight's dtype, bool mask). weight: (out, in)."""
    from . import SCORES

    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}: use one of {sorted(SCORES)}")
    mask = nm_mask(SCORES[score](weight, act_norm), n, m)
    return weight * mask.to(weight.device), mask


def is_nm_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of m consecutive input channels of every row has at most n non-zeros."""
    _check_groups(weight.shape, m)
    nonzero = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
    return bool((nonzero <= n).all())


class ActivationNorms:
    """Running per-input-channel L2 norm of a layer's inputs: update(x) with x (..., in); `.norm` is (in,).

    The sums stay on the inputs' device (fp64 on the CPU, fp32 elsewhere), so updating never synchronises a GPU.
    """

    def __init__(self, in_features: int):
        self.in_features = in_features
        self.sumsq: torch.Tensor | None = None
        self.tokens = 0

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1])
        if flat.shape[1] != self.in_features:
            raise ValueError(f"input has {flat.shape[1]} channels, the statistics {self.in_features}")
        if self.sumsq is None:
            dtype = torch.float64 if flat.device.type == "cpu" else torch.float32
            self.sumsq = torch.zeros(self.in_features, dtype=dtype, device=flat.device)
        self.sumsq += flat.to(self.sumsq.dtype).pow(2).sum(0).to(self.sumsq.device)
        self.tokens += flat.shape[0]

    @property
    def norm(self) -> torch.Tensor:
        if self.sumsq is None:
            raise ValueError("no calibration inputs were recorded for this layer")
        return self.sumsq.sqrt().float()
