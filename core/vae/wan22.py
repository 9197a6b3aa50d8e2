"""Exact sliced decoding for the Wan 2.2 (TI2V-5B) video VAE (the host's comfy.ldm.wan.vae2_2.WanVAE).

The Wan 2.1 causal 3-D VAE (`wan.py`) with another block layout: the decoder (dim 256, 48 latent channels) has
conv1 and the middle (residual block, per-frame attention, residual block) at latent resolution, then four
Up_ResidualBlocks of three residual blocks and a 2x (2-D or 3-D) Resample each, whose input also goes through a
parameter-free shortcut (DupUp3D: channels repeated and unfolded into 2x2 pixels and, with time upsampling, 2
frames; the first chunk drops the first frame), then the head to 12 channels, unfolded into 2x2 pixels of RGB
(16x in all). The host decodes one latent frame at a time with the feature cache, as for Wan 2.1.

So the same split: conv1 and the middle run whole over all latent frames (the attention mixes all rows); every
later operator is row-local (3x3 causal convolutions with a halo, nearest upsampling, per-position RMS norms, time
convolutions and DupUp3D), so for each band of output rows the rest walks all latent frames in order with the
band's own caches. The DupUp3D shortcut reads the block input's rows [a // 2, (b + 1) // 2), which the main path's
halo always covers. The result equals the host's decode up to float summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kl import SliceUnsupported
from .rowops import RowOp, Save
from .wan import CausalConv, WholeRows, _layer, _sequence, decode_bands


def is_wan22(model: nn.Module) -> bool:
    dec = getattr(model, "decoder", None)
    return hasattr(model, "conv2") and all(hasattr(dec, n) for n in ("conv1", "middle", "upsamples", "head")) \
        and type(dec).__name__ == "Decoder3d" and type(dec).__module__.endswith("wan.vae2_2")


class AddDupUp(RowOp):
    """Pops the up block's input and returns x + DupUp3D(input) on output rows [a, b) (host order: main first).

    The host's own DupUp3D runs on the input rows [a // 2, (b + 1) // 2); its first call after `reset` is the first
    chunk (the host's first_chunk=True), which drops the leading time-upsampled frame."""

    pops_saved = True

    def __init__(self, dup: nn.Module):
        if type(dup).__name__ != "DupUp3D" or dup.factor_s != 2 or dup.factor_t not in (1, 2):
            raise SliceUnsupported(f"unsupported Wan 2.2 up shortcut {type(dup).__name__}")
        self.dup = dup
        self.first = True

    def reset(self) -> None:
        self.first = True

    @staticmethod
    def saved_need(a: int, b: int) -> tuple[int, int]:
        """The rows of the block input that output rows [a, b) add (it is at half the output's height)."""
        return a // 2, (b + 1) // 2

    def __call__(self, x, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        i0, i1 = self.saved_need(a, b)
        y = self.dup(s[..., i0 - s0:i1 - s0, :], first_chunk=self.first)
        self.first = False
        return x + y[..., a - 2 * i0:b - 2 * i0, :]


def _up_block(m: nn.Module) -> list[RowOp]:
    if type(m).__name__ != "Up_ResidualBlock":
        raise SliceUnsupported(f"unknown Wan 2.2 decoder layer {type(m).__name__}")
    ops = [op for layer in m.upsamples for op in _layer(layer)]
    return ops if m.avg_shortcut is None else [Save(), *ops, AddDupUp(m.avg_shortcut)]


def wan22_programs(model: nn.Module) -> tuple[list[RowOp], list[RowOp]]:
    """(latent-resolution ops run whole: conv1 and the middle, band ops: the up blocks and the head)."""
    dec = model.decoder
    whole = [CausalConv(dec.conv1)]
    for m in dec.middle:
        whole += _layer(m)
    band = [op for m in dec.upsamples for op in _up_block(m)] + _sequence(dec.head)
    if any(isinstance(op, WholeRows) for op in band):
        raise SliceUnsupported("attention above latent resolution is not supported")
    return whole, band


@torch.no_grad()
def wan22_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
                 out_dtype: torch.dtype = torch.float32, chunk: int = 1) -> Tensor:
    """What `model.decode(z)` returns, in `out_dtype`, computed in bands of `slice_rows` latent rows.

    z: (B, 48, T, h, w) in the model's dtype and device. Returns (B, 3, 1 + 4 (T - 1), 16h, 16w) on `out_device`.
    chunk: latent frames a band runs at once after the first (`wan.first_then`).
    """
    if not is_wan22(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.2 VAE")
    if z.ndim != 5:
        raise SliceUnsupported(f"the Wan 2.2 slicer decodes 5-D video latents, got {z.ndim}-D")
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    return decode_bands(model, z, slice_rows, *wan22_programs(model), out_device, out_dtype, patch=2, chunk=chunk)
