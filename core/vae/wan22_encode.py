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

Not covered (the caller uses the host's encode): several frames (a video).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import wan_encode
from .kl import SliceUnsupported
from .rowops import RowOp, Save
from .stream import Program
from .wan22 import is_wan22
from .wan_encode import check_frame, encoder_layer, run_frame_program

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


def patchify(x: Tensor) -> Tensor:
    """The host's "b c f (h q) (w r) -> b (c r q) f h w" with q = r = 2."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * PATCH * PATCH, f, h // PATCH, w // PATCH)


@torch.no_grad()
def wan22_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for one frame, as fp32, computed in bands of `slice_rows` latent rows.

    x: (B, 3, 1, H, W) in [-1, 1], H and W multiples of 16, in the model's dtype and device. Returns
    (B, 48, 1, H/16, W/16) fp32 on `out_device`.
    """
    if not can_encode_wan22(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a Wan 2.2 VAE")
    check_frame(x, slice_rows, "Wan 2.2", 16)
    p = patchify(x).squeeze(2)
    h = run_frame_program(encode_program(model, p.shape[-2]), p, slice_rows)
    del p
    enc = model.encoder
    for layer in [*enc.middle, *enc.head]:
        h = layer(h)
    mu = model.conv1(h).chunk(2, dim=1)[0]
    return mu.to(device=out_device or x.device, dtype=torch.float32)
