"""Exact sliced encoding for the KL VAE encoder of SD1.5, SDXL, SD3, Flux and Flux.2 (the host's AutoencoderKL, or its
AutoencodingEngine for files without quant convolutions).

The mirror of `kl.py`: conv_in and the down levels (ResnetBlocks, then a stride-2 convolution with the host's
right/bottom zero padding) become a row-op program over the image, with a checkpoint after every ResnetBlock and
whole-tensor GroupNorm statistics (a statistics pass, then the normalising pass per band); the latent-resolution
rest (mid blocks with the global attention in query chunks, norm_out, conv_out, quant_conv where the file has one,
the posterior's mode, Flux.2's 2x2 patches and latent batch norm) runs whole. The widest tensors (the
full-resolution 128-channel activations) exist one band at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kl import SliceUnsupported, check_latent_norm, is_host_class, mid_attention, resblock_ops
from .rowops import Conv, RowOp, conv_weights
from .stream import Program, run_program


def can_encode(model: nn.Module) -> bool:
    """The host's AutoencoderKL, or its AutoencodingEngine around the same Encoder (SD3/Flux files: no quant_conv)."""
    enc = getattr(model, "encoder", None)
    if not hasattr(model, "regularization") or not all(
            hasattr(enc, n) for n in ("conv_in", "down", "mid", "norm_out", "conv_out")):
        return False
    return hasattr(model, "quant_conv") or is_host_class(enc, "Encoder")


class Downsample2x(RowOp):
    """The host's Downsample: zero-pad one row and column at the bottom/right, then a 3x3 stride-2 convolution."""

    def __init__(self, conv: nn.Conv2d):
        if conv.kernel_size != (3, 3) or conv.stride != (2, 2) or conv.padding != (0, 0) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise SliceUnsupported(f"unsupported downsampling convolution {conv}")
        self.conv = conv

    def out_height(self, h_in):
        return (h_in + 1 - 3) // 2 + 1

    def need(self, a, b, h_in):
        return 2 * a, min(2 * (b - 1) + 3, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        bottom = 2 * (b - 1) + 3 - (r0 + x.shape[-2])
        x = F.pad(x, (0, 1, 0, bottom))
        w, bias = conv_weights(self, self.conv, x.device, x.dtype)
        return F.conv2d(x, w, bias, stride=2)


def _check(model: nn.Module, x: Tensor) -> None:
    enc = model.encoder
    if x.ndim != 4:
        raise SliceUnsupported(f"the KL slicer encodes 4-D images, got {x.ndim}-D")
    if not isinstance(enc.conv_in, nn.Conv2d):
        raise SliceUnsupported("3-D (video) KL encoders are not supported")
    check_latent_norm(model)
    if getattr(enc, "temb_ch", 0) or type(model.regularization).__name__ != "DiagonalGaussianRegularizer" \
            or model.regularization.sample:
        raise SliceUnsupported("only KL encoders with a deterministic Gaussian posterior (its mode) are supported")
    if not all(hasattr(enc.mid.attn_1, n) for n in ("norm", "q", "k", "v", "proj_out")):
        raise SliceUnsupported(f"unknown mid attention {type(enc.mid.attn_1).__name__}")
    for i_level, level in enumerate(enc.down):
        if len(level.attn) > 0:
            raise SliceUnsupported("attention inside the down levels is not supported")
        if i_level != enc.num_resolutions - 1 and not level.downsample.with_conv:
            raise SliceUnsupported("average-pool downsampling is not supported")


def kl_encode_program(model: nn.Module, h_image: int) -> Program:
    """conv_in and the down levels as a row-op program (output: the last down block's output)."""
    enc = model.encoder
    ops: list[RowOp] = [Conv(enc.conv_in)]
    checkpoints = [1]
    for i_level in range(enc.num_resolutions):
        for blk in enc.down[i_level].block:
            ops += resblock_ops(blk)
            checkpoints.append(len(ops))
        if i_level != enc.num_resolutions - 1:
            ops.append(Downsample2x(enc.down[i_level].downsample.conv))
    return Program(ops, checkpoints, h_image)


@torch.no_grad()
def kl_encode(model: nn.Module, x: Tensor, slice_rows: int, out_device: torch.device | None = None) -> Tensor:
    """What `model.encode(x)` returns, as fp32, computed in bands of `slice_rows` latent rows.

    x: (B, 3, H, W) in [-1, 1], the model's dtype and device. Returns (B, embed_dim, H/8, W/8) fp32 on `out_device`
    (Flux.2: (B, 4 embed_dim, H/16, W/16)).
    """
    if not can_encode(model):
        raise SliceUnsupported(f"no exact sliced encoder for {type(model).__name__}")
    _check(model, x)
    enc = model.encoder
    prog = kl_encode_program(model, x.shape[-2])
    rows = max(1, slice_rows * x.shape[-2] // prog.heights[-1])
    h = run_program(prog, x, rows, x.dtype, x.device)
    h = enc.mid.block_2(mid_attention(enc.mid.attn_1, enc.mid.block_1(h, None)), None)
    h = enc.conv_out(F.silu(enc.norm_out(h)))
    quant = getattr(model, "quant_conv", None)
    z = latent_out(model, model.regularization(h if quant is None else quant(h))[0])
    return z.to(device=out_device or x.device, dtype=torch.float32)


def latent_out(model: nn.Module, z: Tensor) -> Tensor:
    """The file's latent for the posterior's mode z: Flux.2's 2x2 patches "c (i pi) (j pj) -> (c pi pj) i j",
    batch-normalised with the running statistics, in z's dtype, as the host's encode does; z for other KL VAEs."""
    bn = getattr(model, "bn", None)
    if bn is None:
        return z
    b, c, h, w = z.shape
    z = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
    return F.batch_norm(z, bn.running_mean.to(device=z.device, dtype=z.dtype),
                        bn.running_var.to(device=z.device, dtype=z.dtype), momentum=model.bn_momentum, eps=model.bn_eps)
