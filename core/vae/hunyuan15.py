"""Exact sliced decoding for the HunyuanVideo 1.5 video VAE (the host's AutoencodingEngine around
comfy.ldm.hunyuan_video.vae_refiner.Decoder, `refiner_vae`: 32 latent channels, 16x, 4x in time).

The decoder: conv_in (+ the latent repeated over its channels), the middle (ResnetBlock, an AttnBlock over all
frames and positions, ResnetBlock) on the whole latent, then the up stages on chunks of two latent frames: three
ResnetBlocks each (RMS norms per position, 3x3x3 convolutions with replicate padding at the borders and the last
two padded input frames of the previous chunk as their carry) and an UpSmpl (a convolution to 4 or 8 times the
channels, unfolded into 2x2 pixels and, with time upsampling, 2 frames, plus the input repeated and unfolded the
same way; the first chunk's first frame unfolds to one frame), then norm_out, SiLU and conv_out.

Here conv_in and the middle run whole (the attention mixes everything) and the rest band by band: each band of
output rows walks the same chunks of two latent frames with its own carries. A convolution reads one row of halo
on each side of a band and pads by replicating only at the image's top and bottom rows (columns are whole), so a
band computes the host's numbers up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kl import SliceUnsupported
from .rowops import Elementwise, RowOp, Save, conv_weights
from .wan import AddShortcut, carried_video, split_frames


def is_hunyuan15(model: nn.Module) -> bool:
    dec = getattr(model, "decoder", None)
    return type(dec).__name__ == "Decoder" and type(dec).__module__.endswith("hunyuan_video.vae_refiner") \
        and getattr(dec, "refiner_vae", False) and hasattr(model, "regularization")


class CarriedConv(RowOp):
    """A 3x3x3 CarriedConv3d on a band: replicate padding at the image's border rows, the columns and (first chunk)
    the first frame twice; later chunks prepend the carry, the last two frames of the previous padded input."""

    def __init__(self, carried: nn.Module):
        conv = getattr(carried, "conv", None)
        if type(carried).__name__ != "CarriedConv3d" or conv is None or tuple(conv.kernel_size) != (3, 3, 3) \
                or tuple(conv.stride) != (1, 1, 1) or tuple(conv.padding) != (0, 0, 0) or conv.groups != 1 \
                or tuple(conv.dilation) != (1, 1, 1):
            raise SliceUnsupported(f"unsupported HunyuanVideo 1.5 convolution {carried}")
        self.conv = conv
        self.carry: Tensor | None = None

    def reset(self) -> None:
        self.carry = None

    def need(self, a, b, h_in):
        return max(a - 1, 0), min(b + 1, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        top, bottom = int(a == 0), int(b == h_in)
        front = 2 if self.carry is None else 2 - self.carry.shape[2]
        xp = F.pad(x, (1, 1, top, bottom, front, 0), mode="replicate")
        if self.carry is not None:
            xp = torch.cat([self.carry, xp], dim=2)
        self.carry = xp[:, :, -2:].clone()
        w, bias = conv_weights(self, self.conv, x.device, x.dtype)
        return F.conv3d(xp, w, bias)


class Unfold2x(RowOp):
    """The rest of UpSmpl after its convolution: pops the UpSmpl input, unfolds both (the host's reshapes) into 2x
    rows and columns (and 2x frames with time upsampling; the first chunk's first frame to one frame), adds them."""

    pops_saved = True

    def __init__(self, up: nn.Module):
        self.tus, self.rp, self.first = bool(up.tus), up.rp, True

    def reset(self) -> None:
        self.first = True

    def out_height(self, h_in):
        return 2 * h_in

    def need(self, a, b, h_in):
        return a // 2, (b + 1) // 2

    @staticmethod
    def saved_need(a: int, b: int) -> tuple[int, int]:
        """The rows of the UpSmpl input that output rows [a, b) add: the rows the main path reads."""
        return a // 2, (b + 1) // 2

    @staticmethod
    def _unfold(t: Tensor, r1: int) -> Tensor:
        b, c, frms, ht, wd = t.shape
        nc = c // (r1 * 4)
        t = t.reshape(b, r1, 2, 2, nc, frms, ht, wd).permute(0, 4, 5, 1, 6, 2, 7, 3)
        return t.reshape(b, nc, frms * r1, ht * 2, wd * 2)

    @staticmethod
    def _unfold_first(t: Tensor) -> Tensor:
        b, c, f, ht, wd = t.shape
        nc = c // 4
        return t.reshape(b, 2, 2, nc, f, ht, wd).permute(0, 3, 4, 5, 1, 6, 2).reshape(b, nc, f, ht * 2, wd * 2)

    def __call__(self, h, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        i0, i1 = self.saved_need(a, b)
        x = s[..., i0 - s0:i1 - s0, :]
        r1 = 2 if self.tus else 1
        head = None
        if self.tus and self.first:
            hf = self._unfold_first(h[:, :, :1])
            hf = hf[:, :hf.shape[1] // 2]
            xf = self._unfold_first(x[:, :, :1].repeat_interleave(repeats=self.rp // 2, dim=1))
            head = (hf, xf)
            h, x = h[:, :, 1:], x[:, :, 1:]
        self.first = False
        h = self._unfold(h, r1)
        x = self._unfold(x.repeat_interleave(repeats=self.rp, dim=1), r1)
        if head is not None:
            h, x = torch.cat([head[0], h], dim=2), torch.cat([head[1], x], dim=2)
        return (h + x)[..., a - 2 * i0:b - 2 * i0, :]


def _pointwise(m: nn.Module) -> RowOp:
    if type(m).__name__ == "RMS_norm" or isinstance(m, (nn.SiLU, nn.Dropout, nn.Identity)):
        return Elementwise(m)
    raise SliceUnsupported(f"unknown HunyuanVideo 1.5 decoder layer {type(m).__name__}")


def _resblock(blk: nn.Module) -> list[RowOp]:
    if type(blk).__name__ != "ResnetBlock" or getattr(blk, "use_conv_shortcut", False):
        raise SliceUnsupported(f"unsupported HunyuanVideo 1.5 block {type(blk).__name__}")
    short = getattr(blk, "nin_shortcut", None) if blk.in_channels != blk.out_channels else nn.Identity()
    if short is None or (not isinstance(short, nn.Identity) and tuple(short.conv.kernel_size) != (1, 1, 1)):
        raise SliceUnsupported("HunyuanVideo 1.5 residual shortcuts must be 1x1x1 convolutions")
    silu = Elementwise(F.silu)
    return [Save(), _pointwise(blk.norm1), silu, CarriedConv(blk.conv1), _pointwise(blk.norm2), silu,
            _pointwise(blk.dropout), CarriedConv(blk.conv2), AddShortcut(short)]


def hunyuan15_program(model: nn.Module) -> list[RowOp]:
    """The up stages, norm_out, SiLU and conv_out as band ops."""
    dec = model.decoder
    ops: list[RowOp] = []
    for stage in dec.up:
        for blk in stage.block:
            ops += _resblock(blk)
        up = getattr(stage, "upsample", None)
        if up is not None:
            if type(up).__name__ != "UpSmpl" or not up.refiner_vae:
                raise SliceUnsupported(f"unsupported HunyuanVideo 1.5 upsampling {type(up).__name__}")
            ops += [Save(), CarriedConv(up.conv), Unfold2x(up)]
    return [*ops, _pointwise(dec.norm_out), Elementwise(F.silu), CarriedConv(dec.conv_out)]


def latent_part(model: nn.Module, z: Tensor) -> Tensor:
    """conv_in (replicate-padded, plus z repeated over its channels) and the middle, on the whole latent."""
    dec = model.decoder
    x = dec.conv_in(F.pad(z, (1, 1, 1, 1, 2, 0), mode="replicate"))
    x = x + z.repeat_interleave(dec.block_out_channels[0] // dec.z_channels, 1)
    return dec.mid.block_2(dec.mid.attn_1(dec.mid.block_1(x)))


@torch.no_grad()
def hunyuan15_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
                     out_dtype: torch.dtype = torch.float32, chunk: int = 2) -> Tensor:
    """What `model.decode(z)` returns, in `out_dtype`, computed in bands of `slice_rows` latent rows.

    z: (B, 32, T, h, w) in the model's dtype and device. Returns (B, 3, 1 + 4 (T - 1), 16h, 16w) on `out_device`.
    chunk: latent frames a band runs at once (the host's chunks are 2; any size gives the same decode up to float
    summation order).
    """
    if not is_hunyuan15(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a HunyuanVideo 1.5 VAE")
    if z.ndim != 5:
        raise SliceUnsupported(f"the HunyuanVideo 1.5 slicer decodes 5-D video latents, got {z.ndim}-D")
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    n_t = z.shape[2]
    chunks = split_frames(n_t, chunk)
    return carried_video(hunyuan15_program(model), latent_part(model, z), chunks, 1 + 4 * (n_t - 1), slice_rows,
                         out_device or z.device, out_dtype)
