"""2:4 sparse linear, eager reference: a dense matmul with the already-masked weight (the oracle and CPU path).

    y = x S^T + bias + (x A) B
    x: (..., in); weight S: (out, in), 2:4 along `in`, stored dense with zeros; bias: (out,);
    lowrank A: (in, r), B: (r, out) (optional compensation of the pruning residual).

Tolerance rule for fast backends (tests/kernels/test_sparse24_linear.py): against this function run on fp32
upcasts of the same inputs, a backend's relative Frobenius error must be <= 2x that of this function at the
backend's precision (bf16/fp16), plus 1e-3 of slack for the different accumulation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse24_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    lowrank: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x (..., in) -> (..., out), computed in x's dtype on x's device."""
    y = F.linear(x, weight, bias)
    if lowrank is not None:
        a, b = lowrank
        y = y + (x @ a) @ b
    return y
