"""Exact sliced VAE decoding (host-free: it runs the torch modules the host builds, band by band)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .hunyuan15 import hunyuan15_decode, is_hunyuan15
from .kl import SliceUnsupported, is_kl, kl_decode
from .ltx import is_ltx, ltx_decode
from .taesd import is_taesd, taesd_decode
from .wan import is_wan, wan_decode
from .wan22 import is_wan22, wan22_decode

__all__ = ["SliceUnsupported", "auto_slice_rows", "band_channels", "decoder_for", "sliced_decode"]

Decoder = Callable[..., Tensor]   # (model, z, slice_rows, out_device=None, out_dtype=torch.float32) -> output


def decoder_for(model: nn.Module) -> tuple[str, Decoder]:
    """(family name, sliced decode function) for a first-stage model; raises SliceUnsupported otherwise."""
    if is_kl(model):
        return "kl", kl_decode
    if is_taesd(model):
        return "taesd", taesd_decode
    if is_wan(model):
        return "wan", wan_decode
    if is_wan22(model):
        return "wan22", wan22_decode
    if is_hunyuan15(model):
        return "hunyuan15", hunyuan15_decode
    if is_ltx(model):
        return "ltx", ltx_decode
    raise SliceUnsupported(f"no exact sliced decoder for {type(model).__name__}")


def sliced_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
                  out_dtype: torch.dtype = torch.float32) -> Tensor:
    """model.decode(z) in `out_dtype` (default fp32) on `out_device` (default z's), computed in bands of
    `slice_rows` latent rows (exact up to summation order)."""
    return decoder_for(model)[1](model, z, slice_rows, out_device, out_dtype)


def band_channels(model: nn.Module) -> int:
    """Channels of the widest full-resolution activation a band holds (`auto_slice_rows`' widest_channels).

    Wan 2.1: a chunk of 4 frames of the 2 * dim channels its last upsampling produces; Wan 2.2: 4 frames of its
    last level's dim channels at half the output size (a quarter of the pixels); HunyuanVideo 1.5: 8 frames; LTX: 8
    frames of its last stage's channels at a quarter of the output's rows and columns.
    """
    if is_wan(model):
        return 4 * 2 * model.decoder.dim
    if is_wan22(model):
        return model.decoder.dim
    if is_hunyuan15(model):   # a chunk of 2 latent frames is 8 frames of the last stage's channels
        return 8 * model.decoder.block_out_channels[-1]
    if is_ltx(model):   # one latent frame: 8 frames of the last stage's channels at a quarter of the output size
        return max(1, 8 * model.decoder.conv_out.in_channels // model.decoder.patch_size ** 2)
    return 256


MAX_AUTO_ROWS = 16


def auto_slice_rows(shape: tuple[int, ...], dtype_size: int, free_bytes: int, widest_channels: int = 256,
                    upscale: int = 8) -> int:
    """Latent rows per band for a latent of `shape` (B, C, h, w) given the free device memory.

    A band of s latent rows holds about six full-resolution activations of `widest_channels` channels over
    s * upscale output rows; half the free memory goes to that. The band is also capped at an eighth of the
    height (at least 4 rows) and at MAX_AUTO_ROWS, both for 8x VAEs (16x: half as many latent rows, the same
    output rows): larger bands save little halo recomputation but raise the peak (SDXL VAE, bf16, H200,
    `benchmarks/results/decode-h200.md`: at 2048x2048, 16-row bands take 1.12x the full decode's time at 0.21 of
    its peak, 32-row bands 1.10x at 0.28).
    """
    b, _, h, w = shape[0], shape[1], shape[-2], shape[-1]
    per_row = 6 * b * upscale * (w * upscale) * widest_channels * dtype_size
    by_memory = int(0.5 * free_bytes // max(per_row, 1))
    scale = max(1, upscale // 8)   # the caps hold in output rows: half the latent rows at 16x
    cap = max(max(1, 4 // scale), min(MAX_AUTO_ROWS // scale, -(-h // 8)))
    return max(1, min(by_memory, cap, h))
