"""Exact sliced decoding for the Wan 2.1 video VAE (the host's comfy.ldm.wan.vae.WanVAE).

The host decodes in chunks of latent frames: one at a time up to 0.8.1; the first frame, then two at a time on 0.33.0,
which also runs the layers after each time upsampling on pairs of frames. Every causal 3-D convolution keeps the
last two frames of its input (the feature cache) for the next chunk, so its result does not depend on the chunking:
the chunks change only the float summation order, and one decode below matches every host. Its peak (0.8.1) is one
chunk's full-resolution activations (4 frames of 96-192 channels at the output size) plus the caches of every
full-resolution convolution.

Here the loops are swapped: bands of output rows outside, latent frames inside. Nothing in the decoder mixes rows
except the 3x3 convolutions (a halo per convolution, as in `rowops.py`) and the middle AttentionBlock (per frame,
over all positions). RMS_norm normalises each position over its channels and the causal time convolutions and
time upsampling act per position, so they are exact on a band. So:

1. the latent-resolution part (conv2, conv1, the middle with its attention, the residual blocks before the first
   upsampling) runs whole, chunk by chunk with its own caches, and its output for every latent frame is kept
   (Wan 2.1, 81 frames at 832x480: 384 x 21 x 60 x 104 values, 100 MiB in bf16);
2. the rest streams over bands of latent rows (`carry.run_carried`): per band, every latent frame in order, each op
   emitting the output rows its input so far determines and keeping the input rows it reads again (two per 3x3
   convolution, per frame), with the band's own causal caches (only the rows it is given), so no row is computed
   twice and a cache never needs rows another band computed. Between bands the kept rows wait in pinned host
   memory (0.66 GiB for Wan 2.1 at 81 x 832 x 480 in bf16), so the device holds one chunk's.

(Before, each band recomputed the whole decoder's halo instead: 7 latent rows above and below at the first
upsampling, several times the host's FLOPs with small bands.) The result equals the host's decode up to float
summation order.

One latent frame (a Qwen-Image image) has no time to walk, so `decode_frame` runs the band ops as a checkpointed
row program instead (`stream.run_program`, as the KL decoder does): each residual block below the output
resolution is its own segment, so a band recomputes one block's halo rather than the whole decoder's. Each causal
convolution of a first one-frame chunk meets zero frames in all but its last time tap, so it runs as a 2-D
convolution with that tap (0.33.0's CausalConv3d truncates the weight the same way).

Peak, Wan 2.1 (dim 96) in bf16, 81 frames at 832x480, counted on the meta device (benchmarks/wan_decode_memory.py:
live tensor bytes on the device, without cuDNN workspaces and allocator rounding;
benchmarks/results/wan-decode-memory-meta.md). Host 0.33.0's full decode 2.94 GiB: one chunk's transients at full
resolution (1.00 GiB by its SiLUs, 0.50 by its convolutions), the caches of all its causal convolutions at full
height (0.91 GiB), the bf16 output so far (0.29 GiB, grown by torch.cat per chunk) and the weights (0.24 GiB,
encoder included). Ours with 4-latent-row bands and the output in the compute dtype on the device (as the host
returns it) 0.79 GiB: weights 0.24, the output 0.18, the bands' causal caches 0.13, the kept latent-resolution
features 0.09, one band's transients; 0.62 GiB with 1-row bands, 1.01 GiB with 8-row bands, 0.18 GiB more with an
fp32 output. Each causal conv builds its padded input in one buffer (the host's torch.cat + F.pad make two copies),
and the latent-resolution part drops its own caches before the bands.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import carry
from .kl import SliceUnsupported
from .rowops import Conv, Elementwise, RowOp, Save, Upsample2x, conv_weights
from .stream import Program, Rows, run_program

CACHE_T = 2   # frames a causal convolution keeps for the next chunk (the host's CACHE_T)


def is_wan(model: nn.Module) -> bool:
    dec = getattr(model, "decoder", None)
    return hasattr(model, "conv2") and all(hasattr(dec, n) for n in ("conv1", "middle", "upsamples", "head")) \
        and type(dec).__name__ == "Decoder3d" and type(dec).__module__.endswith("wan.vae")


def causal_padding(conv: nn.Module) -> tuple[int, int, int]:
    """(frames padded before, rows, columns) of the host's CausalConv3d, in either of its layouts.

    Older hosts (0.8.1 and before) keep the F.pad tuple (w, w, h, h, 2 p_t, 0) in `_padding` and (0, 0, 0) in
    `padding`; newer ones (0.33.0) keep the int 2 p_t in `_padding` and the spatial padding in `padding` (0, h, w).
    Anything else (frames padded after, asymmetric rows) raises SliceUnsupported: the caller uses the host's decode.
    """
    pad = getattr(conv, "_padding", None)
    if isinstance(pad, int) and len(conv.padding) == 3 and conv.padding[0] == 0:
        return pad, conv.padding[1], conv.padding[2]
    if isinstance(pad, (tuple, list)) and len(pad) == 6 and tuple(conv.padding) == (0, 0, 0):
        pw, pw_after, ph, ph_after, pt, pt_after = pad
        if pw == pw_after and ph == ph_after and pt_after == 0:
            return pt, ph, pw
    raise SliceUnsupported(f"unknown causal padding {pad!r} / {conv.padding!r} of {type(conv).__name__}")


class CausalConv(Conv):
    """A CausalConv3d (time kernel 1 or 3, square spatial kernel) on a band, with the band's own feature cache.

    Each call is one chunk: the cache holds the last CACHE_T input frames of the previous chunks, exactly as the
    host's ResidualBlock / Decoder3d keep it (a chunk of one frame keeps the previous chunk's last frame too).
    """

    def __init__(self, conv: nn.Module):
        kt, k, kw = conv.kernel_size
        pt, ph, pw = causal_padding(conv)
        if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or kw != k or ph != pw \
                or 2 * ph != k - 1 or pt != kt - 1:
            raise SliceUnsupported(f"unsupported causal convolution {conv}")
        self.conv, self.k, self.p, self.pt = conv, k, ph, pt
        self.cache: Tensor | None = None
        self.stateless = False   # True: every call is a first chunk and keeps nothing (`FirstChunk`)

    def reset(self) -> None:
        self.cache = None

    def __call__(self, x, r0, a, b, h_in, stack):
        cached = self.cache if self.cache is not None and self.pt > 0 else None
        if not self.stateless:
            keep = x[:, :, -CACHE_T:].clone()
            if keep.shape[2] < CACHE_T and self.cache is not None:
                keep = torch.cat([self.cache[:, :, -1:], keep], dim=2)
            self.cache = keep
        top = r0 - (a - self.p)
        bottom = (b - self.p + self.k - 1) - (r0 + x.shape[-2])
        w, bias = conv_weights(self, self.conv, x.device, x.dtype)
        if cached is None and x.shape[2] == 1 and self.pt > 0:
            # A first chunk of one frame: every earlier time tap meets a zero frame, so only the last one counts
            # (0.33.0 truncates the weight the same way, "causal_zero"; 0.8.1 convolves the zero frames too).
            src = x if top == bottom == 0 else self._padded(x, None, top, bottom, time=False)
            return F.conv2d(src.squeeze(2), w[:, :, -1], bias, padding=(0, self.p)).unsqueeze(2)
        buf = self._padded(x, cached, top, bottom)
        return F.conv3d(buf, w, bias, padding=(0, 0, self.p))

    def _padded(self, x: Tensor, cached: Tensor | None, top: int, bottom: int, time: bool = True) -> Tensor:
        """The conv's input in one buffer: zero frames, the cached frames, then x, between zero rows above and
        below (the host builds it with torch.cat and F.pad, two copies; the columns pad inside the conv). Without
        `time`, no frames before x."""
        n_c = 0 if cached is None else cached.shape[2]
        zt = max(self.pt - n_c, 0) if time else 0
        bsz, c, t, rows, w = x.shape
        buf = x.new_empty((bsz, c, zt + n_c + t, top + rows + bottom, w))
        if zt:
            buf[:, :, :zt].zero_()
        if top:
            buf[..., :top, :].zero_()
        if bottom:
            buf[..., top + rows:, :].zero_()
        inner = buf.narrow(3, top, rows)
        if cached is not None:
            inner.narrow(2, zt, n_c).copy_(cached)
        inner.narrow(2, zt + n_c, t).copy_(x)
        return buf


class Frames(RowOp):
    """A 2-D row operator (nearest upsampling, Conv2d) applied to every frame of a (B, C, T, rows, W) band."""

    def __init__(self, op: RowOp):
        self.op = op

    def out_height(self, h_in):
        return self.op.out_height(h_in)

    def need(self, a, b, h_in):
        return self.op.need(a, b, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        bsz, c, t = x.shape[:3]
        y = self.op(x.transpose(1, 2).reshape(bsz * t, c, *x.shape[-2:]), r0, a, b, h_in, stack)
        return y.reshape(bsz, t, *y.shape[1:]).transpose(1, 2)


class TimeUpsample(RowOp):
    """The time half of Resample('upsample3d'): a per-position causal (3, 1, 1) convolution to 2x channels,
    interleaved into 2x frames. The first chunk passes through unchanged (the host's 'Rep' marker)."""

    def __init__(self, resample: nn.Module):
        self.conv = resample.time_conv
        self.cache: Tensor | str | None = None

    def reset(self) -> None:
        self.cache = None

    def __call__(self, x, r0, a, b, h_in, stack):
        if self.cache is None:
            self.cache = "Rep"
            return x
        bsz, c, t, rows, w = x.shape
        keep = x[:, :, -CACHE_T:].clone()
        if keep.shape[2] < CACHE_T:
            prev = torch.zeros_like(keep) if isinstance(self.cache, str) else self.cache[:, :, -1:]
            keep = torch.cat([prev, keep], dim=2)
        y = self.conv(x) if isinstance(self.cache, str) else self.conv(x, self.cache)
        self.cache = keep
        y = y.reshape(bsz, 2, c, t, rows, w)
        return torch.stack((y[:, 0], y[:, 1]), 3).reshape(bsz, c, 2 * t, rows, w)


class AddShortcut(RowOp):
    """Pops the residual block's input and returns x + shortcut(input) on rows [a, b) (a 1x1x1 conv or identity)."""

    pops_saved = True

    def __init__(self, shortcut: nn.Module):
        self.shortcut = shortcut

    def __call__(self, x, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        return x + self.shortcut(s[..., a - s0: b - s0, :])


class WholeRows(RowOp):
    """A module that mixes all rows (the per-frame AttentionBlock): it needs the whole height."""

    def __init__(self, module: nn.Module):
        self.module = module

    def need(self, a, b, h_in):
        return 0, h_in

    def __call__(self, x, r0, a, b, h_in, stack):
        return self.module(x)[..., a:b, :]


def _pointwise(layer: nn.Module) -> RowOp:
    if type(layer).__name__ == "RMS_norm" or isinstance(layer, (nn.SiLU, nn.Dropout, nn.Identity)):
        return Elementwise(layer)
    raise SliceUnsupported(f"unknown Wan decoder layer {type(layer).__name__}")


def _sequence(layers) -> list[RowOp]:
    return [CausalConv(m) if hasattr(m, "_padding") else _pointwise(m) for m in layers]


def _layer(m: nn.Module) -> list[RowOp]:
    name = type(m).__name__
    if name == "ResidualBlock":
        short = m.shortcut
        if hasattr(short, "_padding") and short.kernel_size != (1, 1, 1):
            raise SliceUnsupported("Wan residual shortcuts must be 1x1x1 convolutions")
        return [Save(), *_sequence(m.residual), AddShortcut(short)]
    if name == "AttentionBlock":
        return [WholeRows(m)]
    if name == "Resample" and m.mode in ("upsample2d", "upsample3d"):
        up, conv = m.resample
        if not isinstance(up, nn.Upsample) or tuple(up.scale_factor) != (2.0, 2.0) or \
                up.mode not in ("nearest", "nearest-exact"):
            raise SliceUnsupported(f"unsupported Wan upsampling {up}")
        time = [TimeUpsample(m)] if m.mode == "upsample3d" else []
        return [*time, Frames(Upsample2x()), Frames(Conv(conv))]
    raise SliceUnsupported(f"unknown Wan decoder layer {name} ({getattr(m, 'mode', '')})")


def wan_programs(model: nn.Module) -> tuple[list[RowOp], list[RowOp]]:
    """(latent-resolution ops run whole, band ops): the decoder split at its first upsampling."""
    dec = model.decoder
    layers = list(dec.middle) + list(dec.upsamples)
    first_up = next((i for i, m in enumerate(layers) if type(m).__name__ == "Resample"), len(layers))
    whole = [CausalConv(dec.conv1)]
    for m in layers[:first_up]:
        whole += _layer(m)
    band = [op for m in layers[first_up:] for op in _layer(m)] + _sequence(dec.head)
    if any(isinstance(op, WholeRows) for op in band):
        raise SliceUnsupported("attention above latent resolution is not supported")
    return whole, band


def _reset(ops: list[RowOp]) -> None:
    for op in ops:
        if hasattr(op, "reset"):
            op.reset()


def latent_features(model: nn.Module, z: Tensor, whole_ops: list[RowOp]) -> Tensor:
    """The latent-resolution part run whole, chunk by chunk: (B, C, T, h, w) in the compute dtype.

    Each chunk's result goes straight into the kept tensor, and the part's own caches are dropped at the end.
    """
    h, n_t = z.shape[-2], z.shape[2]
    x = model.conv2(z)
    whole = Program(whole_ops, [], h)
    feats = None
    for t in range(n_t):
        y = whole.band(0, len(whole_ops), Rows(x[:, :, t:t + 1]), 0, h)
        if feats is None:
            feats = y.new_empty((*y.shape[:2], n_t, *y.shape[3:]))
        feats[:, :, t:t + 1] = y
        del y
    _reset(whole_ops)
    return feats


@torch.no_grad()
def wan_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
               out_dtype: torch.dtype = torch.float32, chunk: int = 1) -> Tensor:
    """What `model.decode(z)` returns, in `out_dtype`, computed in bands of `slice_rows` latent rows.

    z: (B, 16, T, h, w) in the model's dtype and device. Returns (B, 3, 1 + 4 (T - 1), 8h, 8w) on `out_device`.
    chunk: latent frames a band runs at once after the first (`first_then`).
    """
    if not is_wan(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.1 VAE")
    if z.ndim != 5:
        raise SliceUnsupported(f"the Wan 2.1 slicer decodes 5-D video latents, got {z.ndim}-D")
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    return decode_bands(model, z, slice_rows, *wan_programs(model), out_device, out_dtype, chunk=chunk)


def split_frames(n: int, chunk: int) -> list[int]:
    """n latent frames in chunks of `chunk` (the last one shorter)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [min(chunk, n - t) for t in range(0, n, chunk)]


def first_then(n_t: int, chunk: int) -> list[int]:
    """Latent frames per chunk: the first frame alone (the host's first chunk, which a time upsampling passes
    through), then `chunk` at a time. Any split gives the same decode up to float summation order; larger chunks
    mean fewer, larger launches per band and more carried rows on the device at once."""
    return [1, *split_frames(n_t - 1, chunk)]


def decode_bands(model: nn.Module, z: Tensor, slice_rows: int, whole_ops: list[RowOp], band_ops: list[RowOp],
                 out_device: torch.device | None, out_dtype: torch.dtype, patch: int = 1, chunk: int = 1) -> Tensor:
    """The decode of `wan_decode` for any (latent-resolution, band) split of a Wan-style causal decoder: the whole
    part over all latent frames, then the band ops streamed over bands of `slice_rows` latent rows, every latent
    frame in order per band (in chunks, `first_then`), each op carrying the rows it reads again
    (`carry.run_carried`). `patch` > 1: the
    decoder's output holds patch x patch pixels per position in its channels (Wan 2.2:
    "b (c r q) t h w -> b c t (h q) (w r)"), unfolded as each band is written."""
    n_t = z.shape[2]
    if n_t == 1:
        return decode_frame(model, z, slice_rows, whole_ops, band_ops, out_device or z.device, out_dtype, patch)
    feats = latent_features(model, z, whole_ops)
    frames = 1 + (n_t - 1) * (2 ** sum(isinstance(op, TimeUpsample) for op in band_ops))
    return carried_video(band_ops, feats, first_then(n_t, chunk), frames, slice_rows, out_device or z.device,
                         out_dtype, patch)


def carried_video(band_ops: list[RowOp], feats: Tensor, chunks: list[int], frames: int, slice_rows: int,
                  out_device: torch.device, out_dtype: torch.dtype, patch: int = 1,
                  chunk_start: Callable[[int], None] | None = None) -> Tensor:
    """The band ops on `feats` (B, C, T, h, w) in chunks of `chunks[i]` latent frames (summing to T) and bands of
    `slice_rows` rows, streamed with carries: the (B, C', frames, H * patch, W * patch) output in `out_dtype` on
    `out_device`. chunk_start: see `carry.run_carried`."""
    if sum(chunks) != feats.shape[2]:
        raise AssertionError(f"chunks {chunks} do not cover {feats.shape[2]} latent frames")
    return carried_stream(band_ops, feats.shape[-2], len(chunks), chunk_source(feats, chunks), frames, slice_rows,
                          out_device, out_dtype, patch, chunk_start)


def patchify(x: Tensor, p: int) -> Tensor:
    """The host VAEs' "b c f (h q) (w r) -> b (c r q) f h w" with q = r = p (Wan 2.2: 2, LTX: 4)."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, f, h // p, w // p)


def chunk_source(x: Tensor, chunks: list[int], patch: int = 1, device: torch.device | None = None
                 ) -> Callable[[int, int, int], Tensor]:
    """source(t, s, e) for `carried_stream`: rows [s, e) of chunk t (frames `chunks[t]` of x (B, C, T, H, W) after
    the earlier chunks'), moved to `device` (default: where x is) and unfolded into patch x patch pixels per row."""
    starts = [sum(chunks[:i]) for i in range(len(chunks) + 1)]

    def source(t, s, e):
        band = x[:, :, starts[t]:starts[t + 1], patch * s:patch * e].to(device or x.device)
        return band if patch == 1 else patchify(band, patch)
    return source


def carried_stream(band_ops: list[RowOp], h: int, n_chunks: int, source: Callable[[int, int, int], Tensor],
                   frames: int, slice_rows: int, out_device: torch.device, out_dtype: torch.dtype, patch: int = 1,
                   chunk_start: Callable[[int], None] | None = None) -> Tensor:
    """`carried_video` on any source: source(t, s, e) gives input rows [s, e) of chunk t (of `h` rows). The ops'
    time state is cleared afterwards (their caches do not outlive the stream)."""
    h_out = Program(band_ops, [], h).heights[-1] * patch
    out, f0, written = None, 0, 0

    def sink(t, y, a, b):   # a band's chunks arrive in order, each after the previous one's frames
        nonlocal out, f0, written
        if patch > 1:
            bsz, c, nt, rows, w = y.shape
            y = y.reshape(bsz, c // patch ** 2, patch, patch, nt, rows, w).permute(0, 1, 4, 5, 3, 6, 2) \
                .reshape(bsz, c // patch ** 2, nt, rows * patch, w * patch)
        if out is None:
            out = torch.empty((*y.shape[:2], frames, h_out, y.shape[-1]), dtype=out_dtype, device=out_device)
        f0 = 0 if t == 0 else f0
        out[:, :, f0:f0 + y.shape[2], a * patch:b * patch] = y
        f0 += y.shape[2]
        written += y.shape[2] * (b - a) * patch

    carry.run_carried(band_ops, h, n_chunks, slice_rows, source, sink, lambda: _reset(band_ops),
                      chunk_start=chunk_start)
    _reset(band_ops)
    if out is None or written != frames * h_out:   # every frame of every row once, or the ops lost time
        raise AssertionError(f"the carried decode wrote {written} frame rows of the {frames} x {h_out} it owes")
    return out


class FirstChunk(RowOp):
    """A band op on one frame, as the first chunk of a decode: its time state is reset after every call (a causal
    conv pads zero frames, a time upsampling passes the frame through, DupUp3D drops its leading frame), so bands
    and segments share nothing. Takes and returns (B, C, rows, W); the op sees (B, C, 1, rows, W)."""

    def __init__(self, op: RowOp):
        self.op = op
        if isinstance(op, CausalConv):
            op.stateless = True   # no cache copy that the reset would drop

    def out_height(self, h_in):
        return self.op.out_height(h_in)

    def need(self, a, b, h_in):
        return self.op.need(a, b, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        y = self.op(x.unsqueeze(2), r0, a, b, h_in, stack).squeeze(2)
        if hasattr(self.op, "reset"):   # drop the cache it kept: the next call is a first chunk again
            self.op.reset()
        return y


def frame_checkpoints(band_ops: list[RowOp], h_in: int) -> list[int]:
    """Where a one-frame program materialises its tensor: between residual blocks (every index outside a Save ...
    shortcut span) at a quarter of the largest size (the output's for a decoder, the input's for an encoder) and
    below. Not after a nearest upsampling, which stays fused with its convolution so the widest upsampled tensor
    exists one band at a time (as in the KL program), and not at the larger sizes: their levels run as one segment
    with its halo recomputed, so no activation of them exists whole (Qwen-Image's 96-channel full-resolution one is
    0.75 GiB in bf16 at 2048², a quarter of the host's whole decode)."""
    heights = Program(band_ops, [], h_in).heights
    points, depth = [], 0
    for i, op in enumerate(band_ops):
        if depth == 0 and i > 0 and not _is_upsample(band_ops[i - 1]) and 4 * heights[i] <= max(heights):
            points.append(i)
        depth += isinstance(op, Save) - getattr(op, "pops_saved", False)
    return points


def _is_upsample(op: RowOp) -> bool:
    return isinstance(op, Frames) and isinstance(op.op, Upsample2x)


def decode_frame(model: nn.Module, z: Tensor, slice_rows: int, whole_ops: list[RowOp], band_ops: list[RowOp],
                 out_device: torch.device, out_dtype: torch.dtype, patch: int = 1) -> Tensor:
    """One latent frame (an image: Qwen-Image, or a one-frame video): the latent-resolution part whole, then the
    band ops with checkpoints between residual blocks (`stream.run_program`), so a band recomputes one block's
    halo instead of the whole decoder's (the output level's excepted, see `frame_checkpoints`). Nothing carries
    over in time for one frame, so every op runs as the first chunk (`FirstChunk`) and keeps no cache. Returns
    (B, C, 1, H, W) as `decode_bands` does."""
    _reset(whole_ops + band_ops)
    h = z.shape[-2]
    x = model.conv2(z).squeeze(2)
    feats = Program([FirstChunk(op) for op in whole_ops], [], h).band(0, len(whole_ops), Rows(x), 0, h)
    del x
    prog = Program([FirstChunk(op) for op in band_ops], frame_checkpoints(band_ops, h), h)
    y = run_program(prog, Rows(feats), slice_rows, out_dtype, out_device)
    if patch > 1:
        bsz, c, rows, w = y.shape
        y = y.reshape(bsz, c // patch ** 2, patch, patch, rows, w).permute(0, 1, 4, 3, 5, 2) \
            .reshape(bsz, c // patch ** 2, rows * patch, w * patch)
    return y.unsqueeze(2)
