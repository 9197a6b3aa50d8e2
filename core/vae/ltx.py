"""Exact sliced decoding for the LTX video VAE (LTXV and LTX-2: the host's
comfy.ldm.lightricks.vae.causal_video_autoencoder.VideoVAE; 128 latent channels, 32x, 8x in time).

The decoder: conv_in and a res_x stage (ResnetBlock3Ds) on the latent, then up blocks that each unfold a 3x3x3
convolution's channels into 2x2 pixels and 2 frames (DepthToSpaceUpsample, with the input repeated and unfolded
the same way as its residual) followed by res_x stages, then PixelNorm, the last timestep scale and shift, SiLU and
conv_out, whose 48 channels unfold into 4x4 pixels of RGB (patch 4). Every norm is a PixelNorm (each position over
its channels) and LTX-2's decoder is timestep conditioned (per-channel scales and shifts), so the only operators
that mix rows are the 3x3x3 convolutions, which pad by reflection at the image's top and bottom rows and columns.

Time: the decoder is not causal. A convolution pads the first frame once in front and the last frame once at the
end and reads one frame ahead, so its output lags its input by a frame until the end; a residual add holds the
block input's frames the main path has not caught up with (the host's `add_exchange_cache`), and an unfolding to 2
frames drops the very first one. The host's decode (0.33.0) runs conv_in and the first stage on the whole latent and
splits into chunks of frames wherever an activation exceeds 32-128 MiB, keeping these states per module; its result
does not depend on the chunking.

Here conv_in and the first stage run whole, and the rest streams over bands of latent rows (`carry.run_carried`):
per band, the latent frames in chunks, every op keeping its own time state for the band's rows (held frames, the
drop-first flags) and flushing in the last chunk. So no row is computed twice and the result is the host's decode up
to float summation order.

With timestep conditioning the host's decode first mixes unseeded noise into the latent (`VideoVAE.decode`, 2.5%);
`ltx_decode` draws it the same way (`torch.randn_like` on the latent's device), so under the same generator state
the two decodes agree. Noise injection inside the decoder (LTXV 0.9.1's `inject_noise`) draws a spatial noise per
call, which no banding reproduces: such a decoder is refused (SliceUnsupported) and the host decodes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kl import SliceUnsupported
from .rowops import RowOp, Save, conv_weights
from .stream import Program, Rows
from .wan import _reset, carried_video, split_frames

# VideoVAE.decode's defaults where the host keeps them as arguments (0.8.1) rather than attributes (0.33.0)
DECODE_TIMESTEP, DECODE_NOISE_SCALE = 0.05, 0.025


def is_ltx(model: nn.Module) -> bool:
    dec = getattr(model, "decoder", None)
    return type(model).__name__ == "VideoVAE" and type(model).__module__.endswith("lightricks.vae."
                                                                                  "causal_video_autoencoder") \
        and all(hasattr(dec, n) for n in ("conv_in", "up_blocks", "conv_norm_out", "conv_out"))


class Clock:
    """Whether the chunk running now is the decode's last (set before every chunk): the time ops flush then."""

    def __init__(self):
        self.last = True

    def start(self, n_chunks: int):
        def chunk_start(t: int) -> None:
            self.last = t == n_chunks - 1
        return chunk_start


def _empty(x: Tensor, c: int, rows: int, w: int) -> Tensor:
    return x.new_empty((x.shape[0], c, 0, rows, w))


class TimeConv(RowOp):
    """The host's CausalConv3d (time kernel kt, square spatial kernel) on a band of rows, fed chunk by chunk.

    Not causal: the first frame is repeated (kt - 1) // 2 times in front, the last one as often at the end (in the
    last chunk); causal: kt - 1 times in front, nothing at the end. Between chunks it keeps the last kt - 1 frames of
    its padded input. The rows and columns pad by reflection or with zeros (the conv's padding_mode) at the image
    border only.
    """

    def __init__(self, causal_conv: nn.Module, causal: bool, clock: Clock):
        conv = getattr(causal_conv, "conv", None)
        if type(causal_conv).__name__ != "CausalConv3d" or not isinstance(conv, nn.Conv3d):
            raise SliceUnsupported(f"unsupported LTX convolution {type(causal_conv).__name__}")
        kt, k, kw = conv.kernel_size
        if tuple(conv.stride) != (1, 1, 1) or tuple(conv.dilation) != (1, 1, 1) or conv.groups != 1 or kw != k \
                or tuple(conv.padding) != (0, k // 2, k // 2) or k % 2 == 0 \
                or conv.padding_mode not in ("zeros", "reflect"):
            raise SliceUnsupported(f"unsupported LTX convolution {conv}")
        self.conv, self.k, self.p, self.kt, self.clock = conv, k, k // 2, kt, clock
        self.reflect = conv.padding_mode == "reflect"
        self.front = kt - 1 if causal else (kt - 1) // 2
        self.back = 0 if causal else (kt - 1) // 2
        self.prev: Tensor | None = None

    def reset(self) -> None:
        self.prev = None

    def need(self, a, b, h_in):
        return max(a - self.p, 0), min(b + self.p, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        parts = [] if self.prev is None else [self.prev]
        if self.prev is None and x.shape[2]:
            parts.append(x[:, :, :1].expand(-1, -1, self.front, -1, -1))
        parts.append(x)
        if self.clock.last and (x.shape[2] or self.prev is not None):
            last = x[:, :, -1:] if x.shape[2] else self.prev[:, :, -1:]
            parts.append(last.expand(-1, -1, self.back, -1, -1))
        frames = sum(p.shape[2] for p in parts)
        if frames == 0:
            return _empty(x, self.conv.out_channels, b - a, x.shape[-1])
        buf = self._padded(parts, frames, r0, a, b)
        if self.clock.last:
            self.prev = None
        elif self.kt > 1:
            self.prev = buf[:, :, -(self.kt - 1):, self._top(r0, a):self._top(r0, a) + x.shape[-2],
                            self.p:self.p + x.shape[-1]].clone()
        if frames < self.kt:
            return _empty(x, self.conv.out_channels, b - a, x.shape[-1])
        w, bias = conv_weights(self, self.conv, x.device, x.dtype)
        return F.conv3d(buf, w, bias)

    def _top(self, r0: int, a: int) -> int:
        return r0 - (a - self.p)

    def _padded(self, parts: list[Tensor], frames: int, r0: int, a: int, b: int) -> Tensor:
        """The frames in one buffer, with the border rows and columns the band needs (reflected or zero)."""
        x = parts[0]
        rows, w, p = x.shape[-2], x.shape[-1], self.p
        top, bottom = self._top(r0, a), (b + p) - (r0 + rows)
        buf = x.new_empty((x.shape[0], x.shape[1], frames, top + rows + bottom, w + 2 * p))
        t0 = 0
        for part in parts:
            buf[:, :, t0:t0 + part.shape[2], top:top + rows, p:p + w] = part
            t0 += part.shape[2]
        if self.reflect:   # row -j is row j, row h - 1 + j is row h - 1 - j (the band holds them: it has the border)
            for j in range(1, top + 1):
                buf[..., top - j, p:p + w] = buf[..., top + j, p:p + w]
            for j in range(1, bottom + 1):
                buf[..., top + rows - 1 + j, p:p + w] = buf[..., top + rows - 1 - j, p:p + w]
            for j in range(1, p + 1):
                buf[..., p - j] = buf[..., p + j]
                buf[..., p + w - 1 + j] = buf[..., p + w - 1 - j]
        else:
            buf[..., :top, :].zero_()
            buf[..., top + rows:, :].zero_()
            buf[..., :p].zero_()
            buf[..., p + w:].zero_()
        return buf


def lag_add(dest: Tensor, held: Tensor | None, new: Tensor) -> tuple[Tensor, Tensor]:
    """(dest + the first frames of held then new, the frames left over): the host's add_exchange_cache, which adds
    a residual to a main path that lags it in time."""
    pending = new if held is None else torch.cat([held, new], dim=2)
    n = dest.shape[2]
    if n > pending.shape[2]:
        raise AssertionError(f"the main path ran {n} frames ahead of its residual's {pending.shape[2]}")
    return dest + pending[:, :, :n], pending[:, :, n:].clone()


class NormAct(RowOp):
    """PixelNorm (or the block's norm), then x * (1 + scale) + shift when timestep conditioned, then SiLU."""

    def __init__(self, norm: nn.Module, shift_scale: tuple[Tensor, Tensor] | None, act: nn.Module):
        if type(norm).__name__ != "PixelNorm" or not isinstance(act, nn.SiLU):
            raise SliceUnsupported(f"unsupported LTX norm {type(norm).__name__} / {type(act).__name__}")
        self.norm, self.shift_scale, self.act = norm, shift_scale, act

    def __call__(self, x, r0, a, b, h_in, stack):
        x = self.norm(x)
        if self.shift_scale is not None:
            shift, scale = self.shift_scale
            x = x * (1 + scale) + shift
        return self.act(x)


class AddLagged(RowOp):
    """Pops the ResnetBlock3D's input and adds shortcut(norm3(input)) to the main path, which lags it by a frame
    per convolution until the last chunk (held frames, `lag_add`)."""

    pops_saved = True

    def __init__(self, block: nn.Module):
        self.block = block
        self.held: Tensor | None = None

    def reset(self) -> None:
        self.held = None

    def __call__(self, x, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        s = self.block.conv_shortcut(self.block.norm3(s[..., a - s0:b - s0, :]))
        y, self.held = lag_add(x, self.held, s)
        return y


def _unfold(x: Tensor, st: int, sh: int, sw: int) -> Tensor:
    """b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)."""
    bsz, c, d, h, w = x.shape
    c //= st * sh * sw
    return x.reshape(bsz, c, st, sh, sw, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(bsz, c, d * st, h * sh,
                                                                                          w * sw)


class DepthToSpace(RowOp):
    """DepthToSpaceUpsample on a band: the convolution's channels unfolded into st frames and sh x sw pixels (the
    very first frame dropped when st = 2), plus (residual) the input unfolded the same way and repeated over the
    channels, which the convolution's output lags by a frame."""

    def __init__(self, block: nn.Module, causal: bool, clock: Clock):
        self.st, self.sh, self.sw = block.stride
        if self.st not in (1, 2) or self.sh != self.sw or self.sh not in (1, 2):
            raise SliceUnsupported(f"unsupported LTX upsampling stride {block.stride}")
        self.conv = TimeConv(block.conv, causal, clock)
        self.residual = block.residual
        self.repeat = math.prod(block.stride) // block.out_channels_reduction_factor
        self.reset()

    def reset(self) -> None:
        self.conv.reset()
        self.first_conv = self.first_res = True
        self.held: Tensor | None = None

    def out_height(self, h_in):
        return h_in * self.sh

    def _inputs(self, a: int, b: int) -> tuple[int, int]:
        return a // self.sh, -(-b // self.sh)

    def need(self, a, b, h_in):
        return self.conv.need(*self._inputs(a, b), h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        i0, i1 = self._inputs(a, b)
        y = _unfold(self.conv(x, r0, i0, i1, h_in, stack), self.st, self.sh, self.sw)
        if self.st == 2 and y.shape[2] and self.first_conv:
            y, self.first_conv = y[:, :, 1:], False
        if self.residual:
            res = _unfold(x[..., i0 - r0:i1 - r0, :], self.st, self.sh, self.sw).repeat(1, self.repeat, 1, 1, 1)
            if self.st == 2 and res.shape[2] and self.first_res:
                res, self.first_res = res[:, :, 1:], False
            y, self.held = lag_add(y, self.held, res)
        return y[..., a - i0 * self.sh:b - i0 * self.sh, :]


def _block_ops(block: nn.Module, causal: bool, clock: Clock, timestep: Tensor | None) -> list[RowOp]:
    name = type(block).__name__
    if name == "DepthToSpaceUpsample":
        return [DepthToSpace(block, causal, clock)]
    if name == "ResnetBlock3D":
        return _resnet_ops(block, causal, clock, None)
    if name != "UNetMidBlock3D":
        raise SliceUnsupported(f"unknown LTX decoder block {name}")
    embed = None
    if block.timestep_conditioning:   # as UNetMidBlock3D.forward computes it
        embed = block.time_embedder(timestep=timestep.flatten(), resolution=None, aspect_ratio=None,
                                    batch_size=1, hidden_dtype=timestep.dtype).view(1, -1, 1, 1, 1)
    return [op for res in block.res_blocks for op in _resnet_ops(res, causal, clock, embed)]


def _resnet_ops(res: nn.Module, causal: bool, clock: Clock, embed: Tensor | None) -> list[RowOp]:
    if res.inject_noise:
        raise SliceUnsupported("this LTX VAE injects spatial noise inside its decoder, which no band reproduces")
    ada1 = ada2 = None
    if res.timestep_conditioning:   # as ResnetBlock3D.forward computes it
        table = res.scale_shift_table[None, ..., None, None, None].to(device=embed.device, dtype=embed.dtype)
        shift1, scale1, shift2, scale2 = (table + embed.reshape(1, 4, -1, 1, 1, 1)).unbind(dim=1)
        ada1, ada2 = (shift1, scale1), (shift2, scale2)
    return [Save(), NormAct(res.norm1, ada1, res.non_linearity), TimeConv(res.conv1, causal, clock),
            NormAct(res.norm2, ada2, res.non_linearity), TimeConv(res.conv2, causal, clock), AddLagged(res)]


def ltx_programs(model: nn.Module, dtype: torch.dtype, device: torch.device, clock: Clock
                 ) -> tuple[list[RowOp], list[RowOp]]:
    """(latent-resolution ops run whole, band ops): the decoder split at its first up block."""
    dec = model.decoder
    causal = dec.causal
    timestep = head_ada = None
    if dec.timestep_conditioning:   # as Decoder.forward_orig computes them
        timestep = getattr(model, "decode_timestep", DECODE_TIMESTEP) \
            * dec.timestep_scale_multiplier.to(dtype=dtype, device=device)
        emb = dec.last_time_embedder(timestep=timestep.flatten(), resolution=None, aspect_ratio=None, batch_size=1,
                                     hidden_dtype=dtype).view(1, -1, 1, 1, 1)
        ada = dec.last_scale_shift_table[None, ..., None, None, None].to(device=device, dtype=dtype) \
            + emb.reshape(1, 2, -1, 1, 1, 1)
        head_ada = tuple(ada.unbind(dim=1))
    blocks = list(dec.up_blocks)
    first_up = next((i for i, m in enumerate(blocks) if type(m).__name__ == "DepthToSpaceUpsample"), len(blocks))
    whole = [TimeConv(dec.conv_in, causal, clock)]
    for m in blocks[:first_up]:
        whole += _block_ops(m, causal, clock, timestep)
    band = [op for m in blocks[first_up:] for op in _block_ops(m, causal, clock, timestep)]
    band += [NormAct(dec.conv_norm_out, head_ada, dec.conv_act), TimeConv(dec.conv_out, causal, clock)]
    return whole, band


@torch.no_grad()
def ltx_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
               out_dtype: torch.dtype = torch.float32, chunk: int = 1) -> Tensor:
    """What `model.decode(z)` returns (its output buffer), in `out_dtype`, computed in bands of `slice_rows` latent
    rows with `chunk` latent frames at a time.

    z: (1, 128, T, h, w) in the model's dtype and device. Returns (1, 3, 1 + 8 (T - 1), 32h, 32w) on `out_device`
    (LTX-2's layout; the scales come from the decoder's blocks).
    """
    if not is_ltx(model):
        raise SliceUnsupported(f"{type(model).__name__} is not an LTX video VAE")
    if z.ndim != 5 or z.shape[0] != 1:
        raise SliceUnsupported(f"the LTX slicer decodes one 5-D video latent at a time, got {tuple(z.shape)}")
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    dec = model.decoder
    if model.timestep_conditioning:   # the host's decode mixes in noise first (unseeded, VideoVAE.decode)
        scale = getattr(model, "decode_noise_scale", DECODE_NOISE_SCALE)
        z = torch.randn_like(z) * scale + (1.0 - scale) * z
    x = model.per_channel_statistics.un_normalize(z)
    clock = Clock()
    whole_ops, band_ops = ltx_programs(model, x.dtype, x.device, clock)
    h, n_t = x.shape[-2], x.shape[2]
    clock.last = True   # the latent part runs once over every frame
    feats = Program(whole_ops, [], h).band(0, len(whole_ops), Rows(x), 0, h)
    del x
    _reset(whole_ops)
    chunks = split_frames(n_t, chunk)
    frames = n_t
    for op in band_ops:   # each unfolding to 2 frames drops the very first: n -> 2n - 1
        if isinstance(op, DepthToSpace) and op.st == 2:
            frames = 2 * frames - 1
    return carried_video(band_ops, feats, chunks, frames, slice_rows, out_device or z.device, out_dtype,
                         dec.patch_size, chunk_start=clock.start(len(chunks)))
