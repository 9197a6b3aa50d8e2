"""Dense scaled dot-product attention with the backend chosen on purpose, in one place.

- `fastest_sdpa`: exact SDPA preferring cuDNN, then flash, then memory-efficient attention, then the math
  kernel (plain SDPA off CUDA). For the dense steps beside block-sparse attention.
- `fused_sdpa`: SDPA restricted to the kernels that never materialise the score matrix (memory-efficient,
  flash, cuDNN), or None with the reason recorded when none takes the inputs; the caller then runs
  `reference.chunked_sdpa`, whose memory is bounded. For the VAE's one-head attention over all pixels.
README.md: semantics, constraints, tolerance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..fallback import fall_back
from .reference import chunked_sdpa, sdpa


def fastest_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    if q.device.type != "cuda":
        return sdpa(q, k, v, **kwargs)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def fused_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    try:
        with sdpa_kernel(fused):
            return F.scaled_dot_product_attention(q, k, v)
    except RuntimeError as err:   # "no available kernel" (or out of memory): the chunked path bounds the memory
        fall_back("fused attention", f"no score-free SDPA kernel takes {tuple(q.shape)} {q.dtype} ({err})"[:300])
        return None


__all__ = ["chunked_sdpa", "fastest_sdpa", "fused_sdpa", "sdpa"]
