"""Exact sliced decoding for TAESD (the host's comfy.taesd.taesd.TAESD): no norms, so pure halo slicing.

The decoder is a Sequential of Clamp, Conv2d, ReLU, Block (3 convs + skip, then ReLU) and 2x nearest Upsample.
A checkpoint after every Block keeps each segment's halo, and so the recomputed overlap, a few rows deep.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kl import SliceUnsupported
from .rowops import AddSkip, Conv, Elementwise, RowOp, Save, Upsample2x
from .stream import Program, run_program


def is_taesd(model: nn.Module) -> bool:
    return isinstance(getattr(model, "taesd_decoder", None), nn.Sequential) and hasattr(model, "vae_scale")


def _block(blk: nn.Module) -> list[RowOp]:
    ops: list[RowOp] = [Save()]
    for m in blk.conv:
        ops.append(Conv(m) if isinstance(m, nn.Conv2d) else Elementwise(m))
    skip = blk.skip if isinstance(blk.skip, nn.Conv2d) else None
    return [*ops, AddSkip(skip), Elementwise(blk.fuse)]


def taesd_program(model: nn.Module, h_latent: int) -> Program:
    ops: list[RowOp] = []
    checkpoints = []
    for m in model.taesd_decoder:
        if isinstance(m, nn.Conv2d):
            ops.append(Conv(m))
        elif isinstance(m, nn.Upsample):
            if m.mode != "nearest" or m.scale_factor not in (2, 2.0):
                raise SliceUnsupported(f"unsupported upsampling {m}")
            ops.append(Upsample2x())
        elif hasattr(m, "conv") and hasattr(m, "skip"):
            ops += _block(m)
            checkpoints.append(len(ops))
        elif not list(m.parameters()):
            ops.append(Elementwise(m))
        else:
            raise SliceUnsupported(f"unknown TAESD decoder layer {type(m).__name__}")
    ops.append(Elementwise(lambda y: y.sub(0.5).mul(2)))
    return Program(ops, checkpoints, h_latent)


@torch.no_grad()
def taesd_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
                out_dtype: torch.dtype = torch.float32) -> Tensor:
    """What `model.decode(z)` returns, in `out_dtype` (default fp32), computed in bands of `slice_rows` latent rows."""
    if z.ndim != 4:
        raise SliceUnsupported(f"TAESD decodes 4-D image latents, got {z.ndim}-D")
    x = (z - model.vae_shift) * model.vae_scale
    return run_program(taesd_program(model, z.shape[-2]), x, slice_rows, out_dtype, out_device)
