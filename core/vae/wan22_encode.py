"""Exact sliced encoding of one frame with the Wan 2.2 video VAE (the host's comfy.ldm.wan.vae2_2.WanVAE): the
start image of a TI2V-5B image-to-video run.

The host's `WanVAE.encode` patchifies the frame into 2x2 pixels (12 channels) and runs its Encoder3d on it as the
first chunk of a feature cache: every causal 3-D convolution meets zero frames in all but its last time tap, the
time convolution of a 'downsample3d' only stores its input, and each Down_ResidualBlock adds an AvgDown3D shortcut
of its input (2x2 positions and, with time downsampling, a zero frame in front of the one frame, averaged in
channel groups). All of it but the latent-resolution middle acts on rows locally, so conv1 and the down blocks run
as a checkpointed row program (`wan.frame_checkpoints`, as the Wan 2.1 encode in `wan_encode.py` does) with the
shortcut as its own row op, and the middle (with its attention), the head and the projection to the mean run
whole through the host's own modules. The result equals the host's encode up to float summation order.

A video (`wan22_encode_video`): the host runs the encoder on the first frame, then on chunks of 4 frames, with the
feature cache. Every op of conv1 and the down blocks acts on rows locally and per chunk, the 'downsample3d' time
convolution included (the first chunk passes through; later chunks are convolved with stride 2 after the previous
chunk's last frame) and the AvgDown3D shortcut (per chunk: a zero frame in front of an odd count), so they stream
over bands of rows with the same chunks (`wan.carried_stream`), each op keeping its caches for the band's rows.
The middle, head and projection then run whole over the latent frames: their causal convolutions give the same
result whole as chunk by chunk with the cache, and the attention is per frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import wan_encode
from .kl import SliceUnsupported
from .rowops import RowOp, Save
from .stream import Program
from .wan import CausalConv, carried_stream, chunk_source, patchify
from .wan22 import is_wan22
from .wan_encode import (
    check_frame,
    check_video,
    encoder_layer,
    latent_mean,
    run_frame_program,
    video_chunks,
    video_layer,
)

PATCH = 2   # the host's patchify(x, patch_size=2) before the encoder


def can_encode_wan22(model: nn.Module) -> bool:
    enc = getattr(model, "encoder", None)
    return is_wan22(model) and type(enc).__name__ == "Encoder3d" and all(
        hasattr(enc, n) for n in ("conv1", "downsamples", "middle", "head"))


class AddAvgDown(RowOp):
    """Pops the down block's input and returns x + AvgDown3D(input) on rows [a, b) (host order: main first).

    The host's own AvgDown3D runs on the input rows [f a, f b) (f = its spatial factor): it averages f x f positions
    and channel groups, so output row r depends on input rows [f r, f (r + 1)) only."""

    pops_saved = True

    def __init__(self, avg: nn.Module):
        if type(avg).__name__ != "AvgDown3D" or avg.factor_s not in (1, 2) or avg.factor_t not in (1, 2):
            raise SliceUnsupported(f"unsupported Wan 2.2 down shortcut {type(avg).__name__}")
        self.avg = avg

    def saved_need(self, a: int, b: int) -> tuple[int, int]:
        """The rows of the block input that output rows [a, b) average (the carried stream keeps them)."""
        return self.avg.factor_s * a, self.avg.factor_s * b

    def __call__(self, x, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        f = self.avg.factor_s
        return x + self.avg(s[..., f * a - s0:f * b - s0, :])


def _down_block(m: nn.Module) -> list[RowOp]:
    if type(m).__name__ != "Down_ResidualBlock":
        raise SliceUnsupported(f"unknown Wan 2.2 encoder layer {type(m).__name__}")
    return [Save(), *(op for layer in m.downsamples for op in encoder_layer(layer)), AddAvgDown(m.avg_shortcut)]


def encode_program(model: nn.Module, h: int) -> Program:
    """The checkpointed row program of conv1 and the down blocks, for a patchified input of h rows."""
    return wan_encode.encode_program(model, h, _down_block)


@torch.no_grad()
def wan22_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for one frame, as fp32, computed in bands of `slice_rows` latent rows.

    x: (B, 3, 1, H, W) in [-1, 1], H and W multiples of 16, in the model's dtype and device. Returns
    (B, 48, 1, H/16, W/16) fp32 on `out_device`.
    """
    if not can_encode_wan22(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.2 VAE")
    check_frame(x, slice_rows, "Wan 2.2", 16)
    p = patchify(x, PATCH).squeeze(2)
    h = run_frame_program(encode_program(model, p.shape[-2]), p, slice_rows)
    del p
    return latent_mean(model, h, out_device or x.device)


def video_ops(model: nn.Module) -> list[RowOp]:
    """conv1 and the down blocks of the Wan 2.2 encoder as band ops for a video (time downsamplings included)."""
    ops: list[RowOp] = [CausalConv(model.encoder.conv1)]
    for m in model.encoder.downsamples:
        if type(m).__name__ != "Down_ResidualBlock":
            raise SliceUnsupported(f"unknown Wan 2.2 encoder layer {type(m).__name__}")
        ops += [Save(), *(op for layer in m.downsamples for op in video_layer(layer)), AddAvgDown(m.avg_shortcut)]
    return ops


@torch.no_grad()
def wan22_encode_video(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for a video, as fp32, computed in bands of `slice_rows` latent rows (16 image
    rows each: the input streams in bands of 8 patch rows per latent row).

    x: (1, 3, T, H, W) in [-1, 1], H and W multiples of 16, in the model's dtype and device; frames past the last
    1 + 4k are dropped as the host drops them. Returns (1, 48, 1 + (T - 1) // 4, H/16, W/16) fp32 on `out_device`.
    """
    if not can_encode_wan22(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.2 VAE")
    check_video(x, slice_rows, "Wan 2.2", 16)
    chunks = video_chunks(x.shape[2])
    rows = slice_rows * 16 // PATCH   # latent rows to input (patch) rows
    h = carried_stream(video_ops(model), x.shape[-2] // PATCH, len(chunks), chunk_source(x, chunks, PATCH),
                       len(chunks), rows, x.device, x.dtype)
    return latent_mean(model, h, out_device or x.device)
