"""A boolean mask packed 8 entries to a byte (1 bit per weight instead of torch's 1 byte per bool).

PyraSparsify keeps each layer's 2:4 mask this way on the offload device: 1/16 of a bf16 weight's bytes, and
exact (a kept weight that is exactly zero stays kept, which re-deriving the mask from `w != 0` would lose).
"""

from __future__ import annotations

import torch

_BITS = 2 ** torch.arange(8, dtype=torch.uint8)


class PackedMask:
    """mask (any shape, bool) -> uint8 bits on `device`; `.unpack(device)` gives the bool mask back."""

    def __init__(self, mask: torch.Tensor, device: torch.device | str = "cpu"):
        if mask.dtype != torch.bool:
            raise ValueError(f"PackedMask takes a bool mask, got {mask.dtype}")
        self.shape = tuple(mask.shape)
        flat = mask.reshape(-1)
        pad = -flat.numel() % 8
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        bits = flat.reshape(-1, 8).to(torch.uint8) * _BITS.to(flat.device)
        self.bits = bits.sum(-1, dtype=torch.uint8).to(device)

    def unpack(self, device: torch.device | str | None = None) -> torch.Tensor:
        bits = self.bits if device is None else self.bits.to(device)
        flat = (bits[:, None] & _BITS.to(bits.device)).ne(0).reshape(-1)
        return flat[:torch.Size(self.shape).numel()].reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return self.bits.numel()
