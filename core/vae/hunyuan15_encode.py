"""Exact sliced encoding of one frame with the HunyuanVideo 1.5 video VAE (the host's AutoencodingEngine around
comfy.ldm.hunyuan_video.vae_refiner.Encoder, `refiner_vae`): the start image of an image-to-video run.

For one frame the host's Encoder runs one chunk without carries: every CarriedConv3d pads its input by replicating
the frame twice in front and the border rows and columns, and each DnSmpl convolves, folds 2x2 pixels into channels
(its first-frame branch, with time downsampling: the folded frame twice over the channels) and adds the folded
input averaged over channel groups. Nothing but the latent-resolution middle (its attention mixes all positions)
reads beyond a few rows, so conv_in, the down stages' ResnetBlocks and DnSmpls run as a checkpointed row program
(`wan.frame_checkpoints`) and the middle, the grouped-mean skip, norm_out, conv_out and the regularisers run
whole, as the host's modules compute them. The result equals the host's encode up to float summation order.

Not covered (the caller uses the host's encode): several frames (a video).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hunyuan15 import CarriedConv, _resblock, is_hunyuan15
from .kl import SliceUnsupported
from .rowops import RowOp, Save
from .stream import Program
from .wan import FirstChunk, carried_stream, chunk_source, frame_checkpoints, split_frames
from .wan_encode import check_frame, check_video, run_frame_program


def can_encode_hunyuan15(model: nn.Module) -> bool:
    enc = getattr(model, "encoder", None)
    return is_hunyuan15(model) and type(enc).__name__ == "Encoder" and getattr(enc, "refiner_vae", False) \
        and all(hasattr(enc, n) for n in ("conv_in", "down", "mid", "norm_out", "conv_out", "regul"))


def _fold(t: Tensor) -> Tensor:
    """2x2 pixels into channels, in the host's order: (B, C, F, 2h, 2w) -> (B, 4C as (row, column, C), F, h, w)."""
    b, c, f, ht, wd = t.shape
    t = t.reshape(b, c, f, ht // 2, 2, wd // 2, 2).permute(0, 4, 6, 1, 2, 3, 5)
    return t.reshape(b, 4 * c, f, ht // 2, wd // 2)


class Fold2x(RowOp):
    """The rest of DnSmpl after its convolution on one (first) frame: pops the DnSmpl input, folds both into
    channels and adds them, the input averaged over groups of `gs` channels (half as many, with the folded
    convolution output repeated, under time downsampling). Output row r reads input rows 2r and 2r + 1."""

    pops_saved = True

    def __init__(self, down: nn.Module):
        if type(down).__name__ != "DnSmpl" or not down.refiner_vae:
            raise SliceUnsupported(f"unsupported HunyuanVideo 1.5 downsampling {type(down).__name__}")
        self.tds, self.gs = bool(down.tds), down.gs

    def out_height(self, h_in):
        return h_in // 2

    def need(self, a, b, h_in):
        return 2 * a, 2 * b

    @staticmethod
    def saved_need(a: int, b: int) -> tuple[int, int]:
        """The rows of the DnSmpl input that output rows [a, b) fold (the carried stream keeps them)."""
        return 2 * a, 2 * b

    def __call__(self, h, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        x = _fold(s[..., 2 * a - s0:2 * b - s0, :])
        h = _fold(h[..., 2 * a - r0:2 * b - r0, :])
        if self.tds:
            h, groups = torch.cat([h, h], dim=1), self.gs // 2
        else:
            groups = self.gs
        bsz, _, t, ht, wd = x.shape
        return h + x.view(bsz, h.shape[1], groups, t, ht, wd).mean(dim=2)


def down_ops(model: nn.Module, fold: type[Fold2x]) -> list[RowOp]:
    """conv_in and the down stages as row ops, each DnSmpl's fold after its convolution a `fold`."""
    enc = model.encoder
    ops: list[RowOp] = [CarriedConv(enc.conv_in)]
    for stage in enc.down:
        for blk in stage.block:
            ops += _resblock(blk)
        down = getattr(stage, "downsample", None)
        if down is not None:
            ops += [Save(), CarriedConv(down.conv), fold(down)]
    return ops


def encode_program(model: nn.Module, h: int) -> Program:
    """The checkpointed row program of conv_in and the down stages, for an input of h rows."""
    ops = down_ops(model, Fold2x)
    return Program([FirstChunk(op) for op in ops], frame_checkpoints(ops, h), h)


def _tail(model: nn.Module, x: Tensor) -> Tensor:
    """The host's Encoder after the down stages, then the engine's regulariser (`AutoencodingEngine.encode`)."""
    enc = model.encoder
    x = enc.mid.block_2(enc.mid.attn_1(enc.mid.block_1(x)))
    b, c, t, h, w = x.shape
    grp = c // (enc.z_channels << 1)
    skip = x.view(b, c // grp, grp, t, h, w).mean(2)
    y = F.pad(F.silu(enc.norm_out(x)), (1, 1, 1, 1, 2, 0), mode="replicate")
    del x
    out = enc.regul(enc.conv_out(y) + skip)[0]
    return model.regularization(out)[0]


@torch.no_grad()
def hunyuan15_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for one frame, as fp32, computed in bands of `slice_rows` latent rows.

    x: (B, 3, 1, H, W) in [-1, 1], H and W multiples of 16, in the model's dtype and device. Returns
    (B, 32, 1, H/16, W/16) fp32 on `out_device`.
    """
    if not can_encode_hunyuan15(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a HunyuanVideo 1.5 VAE")
    check_frame(x, slice_rows, "HunyuanVideo 1.5", 16)
    h = run_frame_program(encode_program(model, x.shape[-2]), x.squeeze(2), slice_rows)
    return _tail(model, h).to(device=out_device or x.device, dtype=torch.float32)


def _fold_time(t: Tensor) -> Tensor:
    """2 frames and 2x2 pixels into channels, in the host's order: (B, C, 2f, 2h, 2w) -> (B, 8C, f, h, w)."""
    b, c, f, ht, wd = t.shape
    t = t.reshape(b, c, f // 2, 2, ht // 2, 2, wd // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
    return t.reshape(b, 8 * c, f // 2, ht // 2, wd // 2)


class Fold2xVideo(Fold2x):
    """Fold2x for a video in the host's chunks: under time downsampling the first chunk (one frame) folds as one
    frame does, later chunks fold pairs of frames too, the input averaged over groups of `gs` channels."""

    def __init__(self, down: nn.Module):
        super().__init__(down)
        self.first = True

    def reset(self) -> None:
        self.first = True

    def __call__(self, h, r0, a, b, h_in, stack):
        if not self.tds:
            return super().__call__(h, r0, a, b, h_in, stack)
        if self.first:
            self.first = False
            if h.shape[2] != 1:
                raise SliceUnsupported(f"a HunyuanVideo 1.5 encode starts with one frame, got {h.shape[2]}")
            return super().__call__(h, r0, a, b, h_in, stack)
        s, s0 = stack.pop()
        x = _fold_time(s[..., 2 * a - s0:2 * b - s0, :])
        h = _fold_time(h[..., 2 * a - r0:2 * b - r0, :])
        bsz, _, t, ht, wd = x.shape
        return h + x.view(bsz, h.shape[1], self.gs, t, ht, wd).mean(dim=2)


@torch.no_grad()
def hunyuan15_encode_video(model: nn.Module, x: Tensor, slice_rows: int,
                           out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns for a video, as fp32, computed in bands of `slice_rows` latent rows (16 input
    rows each).

    The host's chunks: the first frame, then 8 frames at a time of the first 1 + 4k (the rest dropped). x: (1, 3, T,
    H, W) in [-1, 1], H and W multiples of 16, the model's dtype and device. Returns (1, 32, 1 + (T - 1) // 4, H/16,
    W/16) fp32 on `out_device`.
    """
    if not can_encode_hunyuan15(model):
        raise SliceUnsupported(f"{type(model).__name__} is not a HunyuanVideo 1.5 VAE")
    check_video(x, slice_rows, "HunyuanVideo 1.5", 16)
    step = model.encoder.ffactor_temporal
    used = (x.shape[2] - 1) // step * step
    chunks = [1, *split_frames(used, 2 * step)] if used else [1]
    ops = down_ops(model, Fold2xVideo)   # the DnSmpls fold time too
    h = carried_stream(ops, x.shape[-2], len(chunks), chunk_source(x, chunks), 1 + used // step, 16 * slice_rows,
                       x.device, x.dtype)
    return _tail(model, h).to(device=out_device or x.device, dtype=torch.float32)
