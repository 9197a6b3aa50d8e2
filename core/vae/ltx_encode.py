"""Exact banded encoding for the LTX video VAE (LTX-2's layout: the host's VideoVAE encoder), of a video or one image.

The encoder: the input unfolded into 4x4 patches (48 channels), a causal 3x3x3 conv_in, res_x stages of
ResnetBlock3Ds and SpaceToDepthDownsamples (a causal convolution folded 2x2 in space and, in time, 2 frames into
one, the very first frame doubled; plus its input folded the same way and averaged over channel groups as the
shortcut), then PixelNorm, SiLU and conv_out, whose first 128 channels are the means the latent keeps. Every
convolution is causal (the first frame repeated twice in front, nothing read ahead), pads rows and columns with
zeros and every norm is per position, so nothing mixes rows but the convolutions' halos.

So the whole encoder streams over bands of patch rows (`wan.carried_stream`): per band, the frames in the host's
chunks (the first frame alone, then 8 at a time: one latent frame each), every op with its own time state for the
band's rows. The input stays where it is (the host keeps it in host memory too) and each band's rows are unfolded and
moved to the device as they are needed. The result is the host's `VideoVAE.encode` up to float summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kl import SliceUnsupported
from .ltx import Clock, NormAct, TimeConv, _resnet_ops, is_ltx
from .rowops import Elementwise, RowOp
from .wan import carried_stream, chunk_source
from .wan_encode import check_video

TIME_CHUNK = 8   # input frames per chunk after the first: one latent frame at LTX's 8x in time


def can_encode_ltx(model: nn.Module) -> bool:
    return is_ltx(model) and getattr(model.encoder, "latent_log_var", None) in ("uniform", "per_channel", "constant")


def _fold(x: Tensor, st: int, sh: int, sw: int) -> Tensor:
    """b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w."""
    bsz, c, d, h, w = x.shape
    return x.reshape(bsz, c, d // st, st, h // sh, sh, w // sw, sw).permute(0, 1, 3, 5, 7, 2, 4, 6) \
        .reshape(bsz, c * st * sh * sw, d // st, h // sh, w // sw)


class SpaceToDepth(RowOp):
    """SpaceToDepthDownsample on a band: with time folding the very first frame is doubled and an odd frame waits
    for its pair; the causal convolution's output and the input are folded alike, the input averaged over channel
    groups, and added."""

    def __init__(self, block: nn.Module, clock: Clock):
        self.st, self.sh, self.sw = block.stride
        if self.st not in (1, 2) or self.sh != self.sw or self.sh not in (1, 2):
            raise SliceUnsupported(f"unsupported LTX downsampling stride {block.stride}")
        self.group = block.group_size
        self.conv = TimeConv(block.conv, True, clock)
        self.reset()

    def reset(self) -> None:
        self.conv.reset()
        self.pad_first = True
        self.pending: Tensor | None = None

    def out_height(self, h_in):
        if h_in % self.sh:
            raise SliceUnsupported(f"an LTX downsampling needs an even height, got {h_in} rows")
        return h_in // self.sh

    def need(self, a, b, h_in):
        return self.conv.need(a * self.sh, b * self.sh, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        if self.pending is not None:
            x, self.pending = torch.cat([self.pending, x], dim=2), None
        if self.st == 2 and self.pad_first and x.shape[2]:
            x, self.pad_first = torch.cat([x[:, :, :1], x], dim=2), False
        n = x.shape[2] - x.shape[2] % self.st
        if n < x.shape[2]:
            self.pending = x[:, :, n:].clone()
            x = x[:, :, :n]
        i0, i1 = a * self.sh, b * self.sh
        if n == 0:
            c = self.conv.conv.out_channels * self.st * self.sh * self.sw
            return x.new_empty((x.shape[0], c, 0, b - a, x.shape[-1] // self.sw))
        skip = _fold(x[..., i0 - r0:i1 - r0, :], self.st, self.sh, self.sw)
        skip = skip.reshape(skip.shape[0], -1, self.group, *skip.shape[2:]).mean(dim=2)
        y = _fold(self.conv(x, r0, i0, i1, h_in, stack), self.st, self.sh, self.sw)
        return y + skip


def ltx_encoder_ops(model: nn.Module, clock: Clock) -> list[RowOp]:
    enc = model.encoder
    ops: list[RowOp] = [TimeConv(enc.conv_in, True, clock)]
    for block in enc.down_blocks:
        name = type(block).__name__
        if name == "SpaceToDepthDownsample":
            ops.append(SpaceToDepth(block, clock))
        elif name == "UNetMidBlock3D":
            ops += [op for res in block.res_blocks for op in _resnet_ops(res, True, clock, None)]
        elif name == "ResnetBlock3D":
            ops += _resnet_ops(block, True, clock, None)
        else:   # the strided convolutions of the older layouts (compress_time, compress_all, ...)
            raise SliceUnsupported(f"unsupported LTX encoder block {name}")
    means = enc.latent_channels
    stats = model.per_channel_statistics
    return [*ops, NormAct(enc.conv_norm_out, None, enc.conv_act), TimeConv(enc.conv_out, True, clock),
            Elementwise(lambda y: stats.normalize(y[:, :means]))]


@torch.no_grad()
def ltx_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None,
               out_dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """What `model.encode(x, device=device)` returns, in `out_dtype`, computed in bands of `slice_rows` latent rows
    (32 image rows each; the input streams in bands of 8 patch rows per latent row).

    x: (1, 3, T, H, W) in the model's dtype, anywhere (bands go to `device`, default x's); frames past the last
    1 + 8k are dropped as the host drops them. Returns (1, 128, 1 + (T - 1) // 8, H / 32, W / 32) on `out_device`.
    """
    if not can_encode_ltx(model):
        raise SliceUnsupported(f"{type(model).__name__} is not an LTX video VAE with a supported encoder")
    p = model.encoder.patch_size
    check_video(x, slice_rows, "LTX", p)
    x = x[:, :, :max(1, 1 + ((x.shape[2] - 1) // TIME_CHUNK) * TIME_CHUNK)]
    device = device or x.device
    chunks = [1, *[TIME_CHUNK] * ((x.shape[2] - 1) // TIME_CHUNK)]
    clock = Clock()
    rows = slice_rows * 32 // p   # latent rows to input (patch) rows
    return carried_stream(ltx_encoder_ops(model, clock), x.shape[-2] // p, len(chunks),
                          chunk_source(x, chunks, p, device), len(chunks), rows, out_device or device, out_dtype,
                          chunk_start=clock.start(len(chunks)))
