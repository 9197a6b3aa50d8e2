"""Exact low-memory VAE decoding: the host's VAE decoder run in row bands with whole-tensor GroupNorm statistics."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..core.vae import SliceUnsupported, auto_slice_rows, band_channels, decoder_for
from .host_features import search_aliases

log = logging.getLogger(__name__)

SLICE_TOOLTIP = (
    "Latent rows per band. 0 picks it from free device memory (at most 16, and an eighth of the height). Smaller bands "
    "use less memory and recompute a little more; the result is the same for every value. If a band runs out of "
    "memory the node halves it and starts again."
)


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
                             " (SD1.5/SDXL: 4 channels; SD3/Flux/Wan 2.1: 16)")


def run_in_bands(vae, run, x: torch.Tensor, slice_rows: int, what: str) -> torch.Tensor:
    """run(model, x on the VAE's device and dtype, rows, output device) for one sample; out-of-memory halves the
    band and starts again (never a partial result). `what` names the work in the log ("decode", "encode")."""
    rows = slice_rows
    while True:
        failed = False
        try:
            return run(vae.first_stage_model, x.to(vae.device, vae.vae_dtype), rows, vae.output_device)
        except mm.OOM_EXCEPTION:
            if rows <= 1:
                raise
            failed = True
        if failed:   # outside the except block, so the failed attempt's tensors can be freed
            mm.soft_empty_cache(True)
            log.warning("Pyra exact VAE %s ran out of memory with %d-row bands; retrying with %d", what, rows,
                        rows // 2)
            rows //= 2


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
                                     band_channels(vae.first_stage_model))
    pbar = comfy.utils.ProgressBar(z.shape[0])
    out = None
    for i in range(z.shape[0]):
        try:
            img = vae.process_output(run_in_bands(vae, decode, z[i:i + 1], slice_rows, "decode"))
        except SliceUnsupported as err:   # a layer the slicer cannot reproduce, found while building its program
            log.info("Pyra exact VAE decode: %s; using the host's own decode", err)
            return vae.decode(z)
        if out is None:
            out = torch.empty((z.shape[0], *img.shape[1:]), dtype=img.dtype, device=vae.output_device)
        out[i:i + 1] = img
        pbar.update(1)
    return out.movedim(1, -1)


class PyraExactVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraExactVAEDecode",
            **search_aliases("tiled decode", "vae decode", "low memory decode"),
            display_name="Exact VAE Decode (Pyra)",
            category="Pyra/decoding",
            description=(
                "Decodes a latent in row bands with a fraction of VAE Decode's memory and the same result (up to "
                "float rounding): every convolution gets its full halo and GroupNorm statistics cover the whole "
                "image, so there are no seams or colour shifts as with tiled decoding. Exact for the KL VAEs of "
                "SD1.5/SDXL/SD3/Flux, for TAESD and for the Wan 2.1 video VAE and the Qwen-Image VAE (bands of "
                "rows walk all frames with their own causal caches); other VAEs (Wan 2.2, ...) use the host's own "
                "decode."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode (image, or video for video VAEs)."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE. KL VAEs (SD1.5, SDXL, SD3, Flux), TAESD and the Wan 2.1 VAE decode sliced and exact; "
                    "any other VAE falls back to the host's plain decode, with one line in the log saying why.")),
                io.Int.Input("slice_rows", default=0, min=0, max=16384, tooltip=SLICE_TOOLTIP),
            ],
            outputs=[io.Image.Output(tooltip="The decoded image, as VAE Decode gives it (video frames batched).")],
        )

    @classmethod
    def execute(cls, samples, vae, slice_rows: int) -> io.NodeOutput:
        images = exact_decode(vae, samples["samples"], slice_rows)
        if images.ndim == 5:   # as VAEDecode: combine the batch and time axes
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)
