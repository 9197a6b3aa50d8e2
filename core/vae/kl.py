"""Exact sliced decoding for the KL VAE decoder of SD1.5, SDXL, SD3 and Flux (the host's AutoencoderKL).

Structure: post_quant_conv, conv_in, mid (ResnetBlock, AttnBlock, ResnetBlock) at latent resolution, then up
levels of ResnetBlocks and nearest Upsample + conv, then GroupNorm, SiLU, conv_out. The latent-resolution part
runs whole (it is small; its global attention is one fused SDPA call on CUDA, query chunks elsewhere). With
`fast` (the default) the up steps whose whole-tensor peak stays under one full-resolution activation also run
whole with the host's own modules (`whole_steps`: up to the 1/4-resolution blocks in the SDXL layout).
Everything after that becomes a row-op program with a checkpoint after every ResnetBlock (and, fast, after an
upsampling no larger than a full-resolution activation); an upsample and its convolution are fused into the next
block's segment, so the widest full-resolution tensors (the upsampled 256- and 512-channel ones) never exist
whole, and norm_out + conv_out write band by band straight into the output.
SD3 and Flux files have no post_quant_conv (the host wraps the same Decoder in an AutoencodingEngine).
Flux.2's VAE is the same decoder (32 z channels) behind a latent batch norm over 2x2 patches (the host's
AutoencoderKL with `bn`: 128 latent channels at 1/16): `latent_in` undoes the norm and the patches exactly as the
host's decode does (per position, so outside the bands), and the rest is the decode above.

Why it costs what it costs (convolution FLOPs, memory traffic and the live-tensor peak per pass, host against
this path, the reference path `fast=False` beside it): `benchmarks/decode_cost.py`, results in
`benchmarks/results/decode-cost-2048.md` and `decode-cost-4096.md`. In short: a GroupNorm inside a segment needs the
whole tensor's statistics first, so some convolutions run twice; the low-resolution steps run whole to avoid that
where they fit, and checkpoints bound the peak to about one full-resolution activation plus the output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...kernels.sdpa import chunked_sdpa, fused_sdpa
from .rowops import AddSkip, Conv, Elementwise, GroupNormAct, RowOp, Save, UpConv2x, Upsample2x
from .stream import Program, Rows, run_program


class SliceUnsupported(ValueError):
    """The module is not a decoder this slicer can reproduce exactly; the caller should use the plain decode."""


def is_host_class(module: nn.Module | None, name: str) -> bool:
    """Whether `module` is the host's comfy.ldm.modules.diffusionmodules.model.<name> (not a subclass)."""
    return type(module).__name__ == name and type(module).__module__.endswith("diffusionmodules.model")


def is_kl(model: nn.Module) -> bool:
    """The host's AutoencoderKL (SD1.5/SDXL files, with post_quant_conv), or its AutoencodingEngine around the same
    Decoder (the host builds that for files without the quant convolutions: SD3 and Flux VAEs)."""
    dec = getattr(model, "decoder", None)
    if not all(hasattr(dec, n) for n in ("conv_in", "mid", "up", "norm_out", "conv_out")):
        return False
    return hasattr(model, "post_quant_conv") or (hasattr(model, "regularization") and is_host_class(dec, "Decoder"))


def _post_quant(model: nn.Module, z: Tensor) -> Tensor:
    conv = getattr(model, "post_quant_conv", None)
    return z if conv is None else conv(z)


def check_latent_norm(model: nn.Module) -> None:
    """Raise SliceUnsupported for a latent batch norm other than Flux.2's (2x2 patches, running statistics)."""
    bn = getattr(model, "bn", None)
    if bn is not None and (not isinstance(bn, nn.BatchNorm2d) or tuple(getattr(model, "ps", ())) != (2, 2)
                           or bn.running_var is None or not hasattr(model, "bn_eps")):
        raise SliceUnsupported("only the Flux.2 latent batch norm (2x2 patches, running statistics) is supported")


def latent_in(model: nn.Module, z: Tensor) -> Tensor:
    """The decoder's latent for the file's latent z: Flux.2's (B, 4c, h, w) batch-normalised 2x2 patches back to
    (B, c, 2h, 2w), in the host's order (z * sqrt(var + eps) + mean, then "(c pi pj) i j -> c (i pi) (j pj)");
    z itself for every other KL VAE."""
    bn = getattr(model, "bn", None)
    if bn is None:
        return z
    s = torch.sqrt(bn.running_var.view(1, -1, 1, 1).to(device=z.device, dtype=z.dtype) + model.bn_eps)
    m = bn.running_mean.view(1, -1, 1, 1).to(device=z.device, dtype=z.dtype)
    z = z * s + m
    b, c4, h, w = z.shape
    return z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


def upscale(model: nn.Module) -> int:
    """Output pixels per latent pixel and side: 8, or 16 for Flux.2 (its 2x2 latent patches)."""
    return 2 ** (model.decoder.num_resolutions - 1) * (1 if getattr(model, "bn", None) is None else 2)


def resblock_ops(blk: nn.Module, fast: bool = True) -> list[RowOp]:
    if not isinstance(blk.norm1, nn.GroupNorm) or not isinstance(blk.norm2, nn.GroupNorm):
        raise SliceUnsupported(f"{type(blk).__name__} without GroupNorm")
    shortcut = None
    if blk.in_channels != blk.out_channels:
        if blk.use_conv_shortcut:
            raise SliceUnsupported("3x3 conv shortcuts are not supported")
        shortcut = blk.nin_shortcut
    return [Save(), GroupNormAct(blk.norm1, True, fast), Conv(blk.conv1), GroupNormAct(blk.norm2, True, fast),
            Conv(blk.conv2), AddSkip(shortcut)]


def _check(model: nn.Module, z: Tensor) -> None:
    dec = model.decoder
    if z.ndim != 4:
        raise SliceUnsupported(f"the KL slicer decodes 4-D image latents, got {z.ndim}-D")
    check_latent_norm(model)
    if not all(hasattr(dec.mid.attn_1, n) for n in ("norm", "q", "k", "v", "proj_out")):
        raise SliceUnsupported(f"unknown mid attention {type(dec.mid.attn_1).__name__}")
    if not isinstance(dec.conv_in, nn.Conv2d):
        raise SliceUnsupported("3-D (video) KL decoders are not supported")
    # give_pre_end left the host in 0.8.1 (the temporal rolling VAE); older decoders may still set it
    if getattr(dec, "give_pre_end", False) or getattr(dec, "temb_ch", 0):
        raise SliceUnsupported("decoders with give_pre_end or a time embedding are not supported")
    for level in dec.up:
        if len(level.attn) > 0:
            raise SliceUnsupported("attention inside the up levels is not supported")
        up = getattr(level, "upsample", None)
        if up is not None and (not up.with_conv or up.scale_factor not in (2, 2.0)):
            raise SliceUnsupported("only 2x nearest upsampling followed by a convolution is supported")


def mid_attention(blk: nn.Module, x: Tensor, budget_bytes: int = 1 << 28) -> Tensor:
    """The mid AttnBlock (one head over all latent pixels): the same softmax per query as the host's.

    On CUDA one call to a fused SDPA kernel (memory-efficient, flash or cuDNN: none materialises the score
    matrix), as the host's single call would pick. Elsewhere, or when no fused kernel takes the shape, queries run
    in chunks with keys and values whole and each chunk's score matrix under `budget_bytes`, so the memory does
    not depend on the kernel. (On the GPU small chunks would starve it: 2048x2048 needs 97 chunks of 682 queries,
    a few dozen thread blocks each.)
    """
    b, c, h, w = x.shape
    y = blk.norm(x)
    # (B, 1, hw, c) with the channels contiguous, as the fused kernels require (the host makes the same copy)
    q, k, v = (conv(y).reshape(b, 1, c, h * w).transpose(2, 3).contiguous() for conv in (blk.q, blk.k, blk.v))
    del y
    out = fused_sdpa(q, k, v) if q.is_cuda else None
    if out is None:
        out = chunked_sdpa(q, k, v, budget_bytes)
    del q, k, v
    return x + blk.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


def up_steps(model: nn.Module) -> list[nn.Module]:
    """The decoder after its mid block, in host order: every up-level ResnetBlock and Upsample."""
    dec = model.decoder
    steps = []
    for i_level in reversed(range(dec.num_resolutions)):
        steps += list(dec.up[i_level].block)
        if i_level != 0:
            steps.append(dec.up[i_level].upsample)
    return steps


def whole_steps(model: nn.Module, h: int, w: int) -> int:
    """How many leading up steps run whole (the host's own modules) without raising the sliced decode's peak.

    Whole, a ResnetBlock holds about three tensors at once (input, normalised, convolved: up to 2 c_in + c_out
    or c_in + 2 c_out channels), an Upsample its input and two tensors of 4x its pixels. The sliced rest always
    holds at least one full-resolution activation of the last level (its checkpoints), so a step whose whole
    peak stays under that costs no memory and saves its statistics passes, halos and band loop. In the SDXL/Flux
    layout that is every step up to the 1/4-resolution blocks (peak 3/4 of that activation).
    """
    steps = up_steps(model)
    scale = 2 ** (model.decoder.num_resolutions - 1)
    floor = steps[-1].out_channels * h * w * scale * scale
    pixels, n = h * w, 0
    for step in steps:
        if hasattr(step, "in_channels"):   # a ResnetBlock
            peak = (max(2 * step.in_channels + step.out_channels, step.in_channels + 2 * step.out_channels)
                    * pixels)
        else:
            peak = step.conv.in_channels * 9 * pixels
        if peak > floor:
            break
        pixels *= 1 if hasattr(step, "in_channels") else 4
        n += 1
    return n


def kl_program(model: nn.Module, h_in: int, skip: int = 0, fast: bool = True) -> Program:
    """The decoder after its mid block and its first `skip` up steps, as a row-op program of input height h_in.

    Checkpoints after every ResnetBlock. `fast`: upsample + conv as one sub-pixel `UpConv2x`, fused GroupNorm, and
    a checkpoint after an upsampling whose output is no larger than a full-resolution activation of the last level
    (the 1/2-resolution 512-channel one in the SDXL layout): the next block's statistics passes then start from
    it instead of recomputing it twice. Otherwise their references, and no such checkpoint.
    """
    dec = model.decoder
    steps = up_steps(model)
    floor = steps[-1].out_channels * 4 ** (dec.num_resolutions - 1)   # per latent pixel
    ops: list[RowOp] = []
    checkpoints, pixels = [], 1
    for i, step in enumerate(steps):
        is_block = hasattr(step, "in_channels")
        if i >= skip and is_block:
            ops += resblock_ops(step, fast)
            checkpoints.append(len(ops))
        elif i >= skip:
            ops += [UpConv2x(step.conv)] if fast else [Upsample2x(), Conv(step.conv)]
            if fast and step.conv.out_channels * 4 * pixels <= floor:
                checkpoints.append(len(ops))
        pixels *= 1 if is_block else 4
    ops += [GroupNormAct(dec.norm_out, True, fast), Conv(dec.conv_out)]
    if dec.tanh_out:
        ops.append(Elementwise(torch.tanh))
    return Program(ops, checkpoints, h_in)


@torch.no_grad()
def kl_decode(model: nn.Module, z: Tensor, slice_rows: int, out_device: torch.device | None = None,
              out_dtype: torch.dtype = torch.float32, fast: bool = True) -> Tensor:
    """What `model.decode(z)` returns, in `out_dtype` (default fp32), computed in bands of `slice_rows` latent rows.

    z: (B, C, h, w) in the model's dtype and device. Returns (B, out_ch, 8h, 8w) on `out_device` (16h, 16w for
    Flux.2; a band is still `slice_rows` rows of z).
    `fast=False` is the reference: every up step sliced, `Upsample2x` + `Conv`, unfused GroupNorm.
    """
    _check(model, z)
    dec = model.decoder
    h = dec.conv_in(_post_quant(model, latent_in(model, z)))
    h = dec.mid.block_2(mid_attention(dec.mid.attn_1, dec.mid.block_1(h, None)), None)
    skip = whole_steps(model, *z.shape[-2:]) if fast else 0
    for step in up_steps(model)[:skip]:
        h = step(h, None) if hasattr(step, "in_channels") else step(h)
    prog = kl_program(model, h.shape[-2], skip, fast)
    rows = max(1, slice_rows * h.shape[-2] // z.shape[-2])   # bands stay slice_rows latent rows tall
    src = Rows.split(h, rows) if skip else Rows(h)   # in blocks, so the first segment releases them as it goes
    del h
    return run_program(prog, src, rows, out_dtype, out_device)
