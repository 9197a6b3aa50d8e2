"""Exact low-memory VAE encoding: the host's KL VAE encoder run in row bands with whole-tensor GroupNorm statistics."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..core.vae import SliceUnsupported, auto_slice_rows
from ..core.vae.kl_encode import can_encode, kl_encode
from .host_features import search_aliases
from .vae_decode import run_in_bands

log = logging.getLogger(__name__)


def exact_encode(vae, pixels: torch.Tensor, slice_rows: int = 0) -> torch.Tensor:
    """LATENT samples for IMAGE `pixels` (B, H, W, C), exactly as `vae.encode` returns them."""
    vae.throw_exception_if_invalid()
    model = vae.first_stage_model
    if not can_encode(model) or vae.latent_dim != 2:
        log.info("Pyra exact VAE encode: no exact sliced encoder for %s; using the host's own encode",
                 type(model).__name__)
        return vae.encode(pixels)
    x = vae.vae_encode_crop_pixels(pixels).movedim(-1, 1)
    mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_encode(x[:1].shape, vae.vae_dtype) / 4,
                       force_full_load=vae.disable_offload)
    if slice_rows <= 0:
        latent_shape = (1, vae.latent_channels, x.shape[-2] // 8, x.shape[-1] // 8)
        slice_rows = auto_slice_rows(latent_shape, mm.dtype_size(vae.vae_dtype), mm.get_free_memory(vae.device))
    pbar = comfy.utils.ProgressBar(x.shape[0])
    out = None
    for i in range(x.shape[0]):
        try:
            z = run_in_bands(vae, kl_encode, vae.process_input(x[i:i + 1]), slice_rows, "encode")
        except SliceUnsupported as err:
            log.info("Pyra exact VAE encode: %s; using the host's own encode", err)
            return vae.encode(pixels)
        if out is None:
            out = torch.empty((x.shape[0], *z.shape[1:]), dtype=z.dtype, device=vae.output_device)
        out[i:i + 1] = z
        pbar.update(1)
    return out


class PyraExactVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraExactVAEEncode",
            **search_aliases("tiled encode", "vae encode", "low memory encode"),
            display_name="Exact VAE Encode (Pyra)",
            category="Pyra/decoding",
            description=(
                "Encodes an image in row bands with a fraction of VAE Encode's memory and the same result (up to "
                "float rounding): every convolution gets its full halo and GroupNorm statistics cover the whole "
                "image, so there are no seams as with tiled encoding. Exact for the KL VAEs of SD1.5/SDXL/SD3/Flux; "
                "other VAEs (TAESD, Wan, ...) use the host's own encode."
            ),
            inputs=[
                io.Image.Input("pixels", tooltip="The image to encode (cropped to a multiple of 8, as VAE Encode "
                                                 "does; only the first 3 channels are used)."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE. KL VAEs (SD1.5, SDXL, SD3, Flux) encode sliced and exact; any other VAE falls back "
                    "to the host's plain encode, with one line in the log saying why.")),
                io.Int.Input("slice_rows", default=0, min=0, max=16384, tooltip=(
                    "Latent rows per band (8 image rows each). 0 picks it from free device memory (at most 16, and "
                    "an eighth of the height). The result is the same for every value. If a band runs out of memory "
                    "the node halves it and starts again.")),
            ],
            outputs=[io.Latent.Output(tooltip="The latent, as VAE Encode gives it.")],
        )

    @classmethod
    def execute(cls, pixels, vae, slice_rows: int) -> io.NodeOutput:
        return io.NodeOutput({"samples": exact_encode(vae, pixels[:, :, :, :3], slice_rows)})
