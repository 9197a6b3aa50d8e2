"""Exact low-memory VAE decoding and encoding through the host's VAE object: its decoder or KL encoder run in row
bands with whole-tensor GroupNorm statistics (core/vae/), the host's own decode or encode where no exact sliced
program exists, and out-of-memory handled by halving the band."""

from __future__ import annotations

import functools
import logging

import comfy.model_management as mm
import comfy.utils
import torch

from ..core.vae import SliceUnsupported, auto_slice_rows, band_channels, decoder_for
from ..core.vae.carry import on_each_band
from ..core.vae.hunyuan15_encode import can_encode_hunyuan15, hunyuan15_encode, hunyuan15_encode_video
from ..core.vae.kl_encode import can_encode, kl_encode
from ..core.vae.ltx_encode import can_encode_ltx, ltx_encode
from ..core.vae.wan22_encode import can_encode_wan22, wan22_encode, wan22_encode_video
from ..core.vae.wan_encode import can_encode_wan, wan_encode, wan_encode_video

log = logging.getLogger("pyra.vae")

class LatentMismatch(ValueError):
    """The latent does not fit the VAE (channels or dimensions)."""

def check_latent(vae, z: torch.Tensor) -> None:
    """Raise LatentMismatch, naming both sides, when `z` cannot be decoded by `vae`."""
    if z.ndim - 2 != vae.latent_dim:
        want = "4-D image latents (batch, channels, height, width)" if vae.latent_dim == 2 else \
            f"{vae.latent_dim + 2}-D latents"
        raise LatentMismatch(f"this VAE ({type(vae.first_stage_model).__name__}) decodes {want}, but the latent is "
                             f"{z.ndim}-D {tuple(z.shape)}: connect a VAE of the family that made the latent")
    if z.shape[1] != vae.latent_channels:
        name = type(vae.first_stage_model).__name__
        raise LatentMismatch(f"the latent has {z.shape[1]} channels but this VAE ({name})"
                             f" expects {vae.latent_channels}: connect the VAE of the model family that made the latent"
                             " (SD1.5/SDXL: 4 channels; SD3/Flux/Wan 2.1/Qwen-Image: 16; Flux.2: 128; Wan 2.2: 48)")

def run_in_bands(vae, run, x: torch.Tensor, slice_rows: int, what: str, on_device: bool = True) -> torch.Tensor:
    """run(model, x in the VAE's dtype on its device (`on_device`, else where x is), rows, output device) for one
    sample; out-of-memory halves the band and starts again (never a partial result). `what` names the work in the
    log ("decode", "encode")."""
    rows = slice_rows
    while True:
        failed = False
        try:
            return run(vae.first_stage_model, x.to(vae.device if on_device else x.device, vae.vae_dtype), rows,
                       vae.output_device)
        except mm.OOM_EXCEPTION:
            if rows <= 1:
                raise
            failed = True
        if failed:   # outside the except block, so the failed attempt's tensors can be freed
            mm.soft_empty_cache(True)
            log.warning("Pyra exact VAE %s ran out of memory with %d-row bands; retrying with %d", what, rows,
                        rows // 2)
            rows //= 2

def spatial_upscale(vae) -> int:
    """Output pixels per latent pixel along a side (8; 16 for Flux.2 and Wan 2.2): the host's upscale_ratio, whose
    last entry is the spatial one for video VAEs."""
    ratio = vae.upscale_ratio
    return int(ratio[-1] if isinstance(ratio, tuple) else ratio)


def exact_decode(vae, z: torch.Tensor, slice_rows: int = 0) -> torch.Tensor:
    """IMAGE (B, H, W, C), or (B, T, H, W, C) for video, exactly as `vae.decode` returns it."""
    vae.throw_exception_if_invalid()
    check_latent(vae, z)
    try:
        _, decode = decoder_for(vae.first_stage_model)
    except SliceUnsupported as err:
        log.info("Pyra exact VAE decode: %s; using the host's own decode", err)
        return vae.decode(z)
    mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_decode(z[:1].shape, vae.vae_dtype) / 4,
                       force_full_load=vae.disable_offload)
    if slice_rows <= 0:
        slice_rows = auto_slice_rows(tuple(z[:1].shape), mm.dtype_size(vae.vae_dtype), mm.get_free_memory(vae.device),
                                     band_channels(vae.first_stage_model), spatial_upscale(vae))
    out = _per_sample(vae, z.shape[0], "decode",
                      lambda i: vae.process_output(run_in_bands(vae, decode, z[i:i + 1], slice_rows, "decode")))
    return vae.decode(z) if out is None else out.movedim(1, -1)


def _frames(vae, pixels: torch.Tensor) -> torch.Tensor | None:
    """The host's encode input for a video VAE as one frame per sample (B, C, 1, H, W), or None where the host
    encodes the batch as one video of B frames (its `not_video` is off and B > 1: `_video`)."""
    if getattr(vae, "not_video", False):
        return vae.vae_encode_crop_pixels(pixels).movedim(-1, 1).unsqueeze(2)
    return _video(vae, pixels) if pixels.shape[0] == 1 else None


def _video(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The host's encode input for B images through a video VAE: one video of B frames (1, C, B, H, W)."""
    return vae.vae_encode_crop_pixels(pixels).movedim(-1, 1).movedim(1, 0).unsqueeze(0)


VIDEO_VAE_ENCODERS = [   # the video VAEs' exact encoders: (is it this VAE, one frame per sample, one video)
    (can_encode_wan, wan_encode, wan_encode_video), (can_encode_wan22, wan22_encode, wan22_encode_video),
    (can_encode_hunyuan15, hunyuan15_encode, hunyuan15_encode_video)]


def exact_encode(vae, pixels: torch.Tensor, slice_rows: int = 0) -> torch.Tensor:
    """LATENT samples for IMAGE `pixels` (B, H, W, C), exactly as `vae.encode` returns them."""
    vae.throw_exception_if_invalid()
    model = vae.first_stage_model
    if vae.latent_dim == 3 and can_encode_ltx(model):
        return _ltx_encode(vae, pixels, slice_rows)
    encoders = next((encs for can, *encs in VIDEO_VAE_ENCODERS if can(model)), None)
    if vae.latent_dim == 3 and encoders is not None:
        x, encode = _frames(vae, pixels), encoders[0]
        if x is None:   # B images, which the host encodes as one video of B frames
            x, encode = _video(vae, pixels), encoders[1]
        up = spatial_upscale(vae)
        out = _encode(vae, x, encode, slice_rows, (1, vae.latent_channels, 1, x.shape[-2] // up, x.shape[-1] // up),
                      up)
        return vae.encode(pixels) if out is None else out
    if not can_encode(model) or vae.latent_dim != 2:
        log.info("Pyra exact VAE encode: no exact sliced encoder for %s; using the host's own encode",
                 type(model).__name__)
        return vae.encode(pixels)
    x = vae.vae_encode_crop_pixels(pixels).movedim(-1, 1)
    out = _encode(vae, x, kl_encode, slice_rows, (1, vae.latent_channels, x.shape[-2] // 8, x.shape[-1] // 8))
    return vae.encode(pixels) if out is None else out


def _ltx_encode(vae, pixels: torch.Tensor, slice_rows: int) -> torch.Tensor:
    """The LTX video VAE's encode of the images as one video (the host's: B images are B frames), in bands; the
    video stays in host memory as the host keeps it, each band goes to the device as it is needed."""
    if (pixels.shape[0] - 1) % 8:   # 0.33.0 crops such a clip to 1 + 8k frames, 0.8.1 refuses it: as the host does
        log.info("Pyra exact VAE encode: %d frames are not 1 + 8k, which the LTX VAE encodes; using the host's own "
                 "encode", pixels.shape[0])
        return vae.encode(pixels)
    x = _video(vae, pixels)
    out = _encode(vae, x, functools.partial(ltx_encode, device=vae.device), slice_rows,
                  (1, vae.latent_channels, 1, x.shape[-2] // 32, x.shape[-1] // 32), 32, on_device=False)
    return vae.encode(pixels) if out is None else out


def _encode(vae, x: torch.Tensor, encode, slice_rows: int, latent_shape: tuple[int, ...],
            upscale: int = 8, on_device: bool = True) -> torch.Tensor | None:
    """encode(model, x, rows, device) of every sample of x (the host's encode input) in bands, x moved to the
    VAE's device first (`on_device`) or left where it is (the encoder moves its bands); None where the slicer met a
    layer it cannot reproduce (logged)."""
    mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_encode(x[:1].shape, vae.vae_dtype) / 4,
                       force_full_load=vae.disable_offload)
    if slice_rows <= 0:
        slice_rows = auto_slice_rows(latent_shape, mm.dtype_size(vae.vae_dtype), mm.get_free_memory(vae.device),
                                     upscale=upscale)
    return _per_sample(vae, x.shape[0], "encode",
                       lambda i: run_in_bands(vae, encode, vae.process_input(x[i:i + 1]), slice_rows, "encode",
                                              on_device))


def _per_sample(vae, n: int, what: str, run_one):
    """run_one(i) for every sample of the batch, into one tensor on the VAE's output device, with the host's
    progress bar (moved per band of a carried video decode or LTX encode, which also stop there when the prompt is
    cancelled); None when the slicer meets a layer it cannot reproduce (logged: the caller runs the host's own
    `what`)."""
    steps = 1000   # per sample: a video's bands move the bar within its sample
    pbar = comfy.utils.ProgressBar(n * steps)
    out = None
    for i in range(n):
        def band_done(k, bands, i=i):
            mm.throw_exception_if_processing_interrupted()   # Cancel stops a long video between two bands
            pbar.update_absolute(i * steps + steps * k // bands, n * steps)
        try:
            with on_each_band(band_done):
                y = run_one(i)
        except SliceUnsupported as err:   # found while building the program for this layer
            log.info("Pyra exact VAE %s: %s; using the host's own %s", what, err, what)
            return None
        if out is None:
            out = torch.empty((n, *y.shape[1:]), dtype=y.dtype, device=vae.output_device)
        out[i:i + 1] = y
        pbar.update_absolute((i + 1) * steps, n * steps)
    return out
