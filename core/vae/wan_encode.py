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

Not covered (the caller uses the host's encode): several frames (a video, or an image batch, which the host encodes
as a video of that many frames) and the Wan 2.2 VAE, whose encoder patchifies its input and averages in its
shortcuts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kl import SliceUnsupported
from .kl_encode import Downsample2x
from .rowops import RowOp
from .stream import Program, Rows, run_program
from .wan import CausalConv, FirstChunk, Frames, _layer, frame_checkpoints, is_wan


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
    enc = model.encoder
    for layer in [*enc.middle, *enc.head]:
        h = layer(h)
    mu = model.conv1(h).chunk(2, dim=1)[0]
    return mu.to(device=out_device or x.device, dtype=torch.float32)
