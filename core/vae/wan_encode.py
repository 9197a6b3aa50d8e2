"""Exact sliced encoding of one frame with the Wan 2.1 video VAE (the host's comfy.ldm.wan.vae.WanVAE): a
Qwen-Image image, or the first frame of an image-to-video start.

For one frame the host's encode runs its Encoder3d without a feature cache (`WanVAE.encode`: one chunk), so every
causal 3-D convolution meets zero frames in all but its last time tap and the time downsamplings do not run; what
is left is 2-D. The full- and reduced-resolution part (conv1, the residual blocks and the stride-2 downsamplings,
with the host's bottom/right zero row and column) runs as a row-op program with checkpoints between residual
blocks at a quarter of the input size and below (`wan.frame_checkpoints`), so the widest tensors, the
full-resolution 96-channel activations, exist one band at a time; the latent-resolution rest (the middle with its
attention, the head, conv1's projection to the mean) runs whole through the host's own modules. The result equals
the host's encode up to float summation order.

A video (`wan_encode_video`; an image batch too, which the host encodes as one video of that many frames): the host
runs the encoder on the first frame, then with the feature cache on chunks of 4 frames (up to 0.8.1) or of 2 (0.33.0,
which holds back a time downsampling's single output frame until the next chunk's, so the next one gets two). Every
causal convolution keeps the last frames of its input, and a time downsampling ('downsample3d': stride 2 over the
previous chunk's last frame and the chunk) passes the first chunk through, so the result does not depend on the
chunking: both hosts compute the same frames, up to float summation order. Here conv1 and the down layers stream
over bands of rows in chunks of 4 (`wan.carried_stream`, every op with its own caches for the band's rows), and the
middle, head and projection run whole over the latent frames, as for Wan 2.2 (`wan22_encode.py`). Frames past the
last 1 + 4k are dropped, as the host drops them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kl import SliceUnsupported
from .kl_encode import Downsample2x
from .rowops import RowOp
from .stream import Program, Rows, run_program
from .wan import CausalConv, FirstChunk, Frames, _layer, carried_stream, chunk_source, frame_checkpoints, is_wan

VIDEO_CHUNK = 4   # frames per chunk after the first (0.8.1's WanVAE.encode; 0.33.0's 2 + 2 compute the same frames)


def can_encode_wan(model: nn.Module) -> bool:
    enc = getattr(model, "encoder", None)
    return is_wan(model) and type(enc).__name__ == "Encoder3d" and all(
        hasattr(enc, n) for n in ("conv1", "downsamples", "middle", "head"))


def _down(m: nn.Module) -> list[RowOp]:
    """A Resample('downsample2d' / 'downsample3d') on one frame: the host's ZeroPad2d((0, 1, 0, 1)) and stride-2
    Conv2d per frame; the time convolution of 'downsample3d' runs only with a feature cache, so not here."""
    pad, conv = m.resample
    if not isinstance(pad, nn.ZeroPad2d) or tuple(pad.padding) != (0, 1, 0, 1):
        raise SliceUnsupported(f"unsupported Wan downsampling padding {pad}")
    return [Frames(Downsample2x(conv))]


def encoder_layer(m: nn.Module) -> list[RowOp]:
    """A Wan 2.1 / 2.2 encoder layer on one frame: a residual block or a stride-2 downsampling."""
    name = type(m).__name__
    if name == "Resample" and m.mode in ("downsample2d", "downsample3d"):
        return _down(m)
    if name == "ResidualBlock":
        return _layer(m)
    raise SliceUnsupported(f"unknown Wan encoder layer {name} ({getattr(m, 'mode', '')})")


class TimeDown(RowOp):
    """The time half of Resample('downsample3d') on a band: the first chunk passes through, later ones go through the
    host's stride-2 (3, 1, 1) time convolution after the previous chunk's last frame (per position)."""

    def __init__(self, resample: nn.Module):
        conv = resample.time_conv
        if tuple(conv.kernel_size) != (3, 1, 1) or tuple(conv.stride) != (2, 1, 1):
            raise SliceUnsupported(f"unsupported Wan time downsampling {conv}")
        self.conv = conv
        self.last: Tensor | None = None

    def reset(self) -> None:
        self.last = None

    def __call__(self, x, r0, a, b, h_in, stack):
        if self.last is None:
            self.last = x[:, :, -1:].clone()
            return x
        y = self.conv(torch.cat([self.last, x], dim=2))
        self.last = x[:, :, -1:].clone()
        return y


def video_layer(m: nn.Module) -> list[RowOp]:
    """A Wan 2.1 / 2.2 encoder layer on a video band: `encoder_layer`, a 'downsample3d' one in time too."""
    if type(m).__name__ == "Resample" and m.mode == "downsample3d":
        return [*_down(m), TimeDown(m)]
    return encoder_layer(m)


def video_chunks(frames: int) -> list[int]:
    """The host's chunks of a clip of `frames` frames: the first frame, then 4 at a time, frames past the last
    1 + 4k dropped. One latent frame per chunk."""
    return [1, *[VIDEO_CHUNK] * ((frames - 1) // VIDEO_CHUNK)]


def latent_mean(model: nn.Module, h: Tensor, device: torch.device) -> Tensor:
    """The Wan 2.1 / 2.2 encoder's latent-resolution rest on the down layers' output h, whole: the middle (with its
    attention), the head and conv1's projection, of which the mean half; fp32 on `device`."""
    enc = model.encoder
    for layer in [*enc.middle, *enc.head]:
        h = layer(h)
    return model.conv1(h).chunk(2, dim=1)[0].to(device=device, dtype=torch.float32)


def encode_program(model: nn.Module, h: int, layer_ops=encoder_layer) -> Program:
    """The checkpointed row program of conv1 and the down layers (each `layer_ops(m)`), for an input of h rows."""
    enc = model.encoder
    ops: list[RowOp] = [CausalConv(enc.conv1)]
    for m in enc.downsamples:
        ops += layer_ops(m)
    return Program([FirstChunk(op) for op in ops], frame_checkpoints(ops, h), h)


def check_frame(x: Tensor, slice_rows: int, vae: str, multiple: int = 1) -> None:
    """Raise unless x is one frame (B, C, 1, H, W) with sides that are multiples of `multiple` and slice_rows >= 1."""
    if x.ndim != 5 or x.shape[2] != 1:
        raise SliceUnsupported(f"the {vae} slicer encodes one frame (B, C, 1, H, W), got {tuple(x.shape)}")
    _check_sides(x, slice_rows, vae, multiple)


def check_video(x: Tensor, slice_rows: int, vae: str, multiple: int = 1) -> None:
    """Raise unless x is one video (1, C, T, H, W) with sides that are multiples of `multiple` and slice_rows >= 1."""
    if x.ndim != 5 or x.shape[0] != 1:
        raise SliceUnsupported(f"the {vae} slicer encodes one video (1, C, T, H, W) at a time, got {tuple(x.shape)}")
    _check_sides(x, slice_rows, vae, multiple)


def _check_sides(x: Tensor, slice_rows: int, vae: str, multiple: int) -> None:
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise SliceUnsupported(f"the {vae} encoder takes sides that are multiples of {multiple}, got "
                               f"{tuple(x.shape)}")
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")


def run_frame_program(prog: Program, x: Tensor, slice_rows: int) -> Tensor:
    """prog on the one-frame input x (B, C, H, W) in bands of `slice_rows` rows of its output: (B, C', 1, h, w)."""
    rows = max(1, slice_rows * x.shape[-2] // prog.heights[-1])
    return run_program(prog, Rows(x), rows, x.dtype, x.device).unsqueeze(2)


@torch.no_grad()
def wan_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for one frame, as fp32, computed in bands of `slice_rows` latent rows.

    x: (B, 3, 1, H, W) in [-1, 1], the model's dtype and device. Returns (B, 16, 1, H/8, W/8) fp32 on `out_device`.
    """
    if not can_encode_wan(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.1 VAE")
    check_frame(x, slice_rows, "Wan")
    h = run_frame_program(encode_program(model, x.shape[-2]), x.squeeze(2), slice_rows)
    return latent_mean(model, h, out_device or x.device)


@torch.no_grad()
def wan_encode_video(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for a video, as fp32, computed in bands of `slice_rows` latent rows (8 image
    rows each).

    x: (1, 3, T, H, W) in [-1, 1], H and W multiples of 8, in the model's dtype and device. Returns
    (1, 16, 1 + (T - 1) // 4, H/8, W/8) fp32 on `out_device`.
    """
    if not can_encode_wan(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.1 VAE")
    check_video(x, slice_rows, "Wan", 8)
    enc = model.encoder
    ops: list[RowOp] = [CausalConv(enc.conv1), *(op for m in enc.downsamples for op in video_layer(m))]
    chunks = video_chunks(x.shape[2])
    h = carried_stream(ops, x.shape[-2], len(chunks), chunk_source(x, chunks), len(chunks), slice_rows * 8, x.device,
                       x.dtype)
    return latent_mean(model, h, out_device or x.device)
