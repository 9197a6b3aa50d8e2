"""Feature slicing (Streamlined Inference's Feature Slicer) for token-wise modules of transformer blocks.

A token-wise module (a block's feed-forward network: Linear, activation, Linear) maps each token on its own,
so running it on slices of the token axis and writing each slice into a preallocated output gives the same
result as the whole call while only one slice's hidden activation (4x the model width in most DiTs) lives at
a time. `token_sliced(module, tokens)` returns a twin of `module` that shares its submodules and parameters
(same names, so weight patches and LoRAs still find them) and runs in slices of `tokens`.
"""

from __future__ import annotations

import torch
from torch import nn

from .twins import twin


class _TokenSliced:
    """Mixin: forward over slices of dim -2 of a (..., tokens, channels) input."""

    slice_tokens: int = 4096

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        n, step = x.shape[-2], self.slice_tokens
        if n <= step:
            return super().forward(x, *args, **kwargs)
        out = None
        for start in range(0, n, step):
            y = super().forward(x[..., start: start + step, :], *args, **kwargs)
            if out is None:
                out = y.new_empty(*y.shape[:-2], n, y.shape[-1])
            out[..., start: start + y.shape[-2], :] = y
        return out


def token_sliced(module: nn.Module, tokens: int) -> nn.Module:
    """A twin of `module` sharing its submodules and parameters that runs over `tokens`-token slices."""
    if tokens < 1:
        raise ValueError(f"slice size must be at least 1 token, got {tokens}")
    out = twin(module, _TokenSliced, "TokenSliced")
    out.slice_tokens = int(tokens)
    return out
