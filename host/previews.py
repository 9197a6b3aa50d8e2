"""Coarse previews while sampling.

The host decodes the whole x0 latent for every preview (latent-to-RGB or TAESD), then shrinks the picture to
`--preview-size` (512 px by default). `coarse_callback` shrinks the latent first, by 2x2 means, until it is no
larger than what the preview shows, so a TAESD preview of a 4096x4096 image costs what one of 512x512 does.
The last step still reports the full x0 (SamplerCustomAdvanced returns it as its `denoised_output`).
"""

from __future__ import annotations

import math

import comfy.model_management
import torch
from comfy.cli_args import args

from ..core.multilevel.pyramids import pool2, upsample

LATENT_SCALE = 8  # pixels per latent pixel of the image VAEs the previewers stand for

def preview_factor(height: int, width: int, preview_size: int | None = None) -> int:
    """The power-of-two shrink that brings a latent within the preview size (1 = none)."""
    limit = max(1, (preview_size or args.preview_size) // LATENT_SCALE)
    return 2 ** max(0, math.ceil(math.log2(max(height, width) / limit))) if max(height, width) > limit else 1

def shrink(x0: torch.Tensor, factor: int) -> torch.Tensor:
    for _ in range(int(math.log2(factor))):
        x0 = pool2(x0)
    return x0

def coarse_callback(callback, preview_size: int | None = None):
    """Wrap a sampler callback(step, x0, x, total) so previews decode a shrunk x0, except at the last step."""
    if callback is None:
        return None

    def wrapped(step, x0, x, total):
        factor = preview_factor(*x0.shape[-2:], preview_size)
        if factor > 1 and step < total - 1:
            x0 = shrink(x0, factor).to(x0.dtype)
        callback(step, x0, x, total)

    return wrapped

class CoarsePreviewGuider:
    """A GUIDER wrapper: the inner guider samples; its previews decode a shrunk latent."""

    def __init__(self, inner, preview_size: int):
        self.inner, self.preview_size = inner, preview_size
        self.model_patcher = inner.model_patcher
        self.model_options = inner.model_options
        self.original_conds = inner.original_conds

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        return self.inner.sample(noise, latent_image, sampler, sigmas, denoise_mask=denoise_mask,
                                 callback=coarse_callback(callback, self.preview_size), disable_pbar=disable_pbar,
                                 seed=seed)


def decode_levels(vae, latent: torch.Tensor, levels: int) -> torch.Tensor:
    """The 2x2-mean levels of `latent` decoded, coarsest first, each upscaled (nearest) to the full decode's size,
    then the full decode: one image batch."""
    if latent.shape[1] != vae.latent_channels:
        raise ValueError(f"the latent has {latent.shape[1]} channels, the VAE {vae.latent_channels}: connect the "
                         "VAE of the model that made the latent")
    chain = [latent]
    for _ in range(levels):
        if min(chain[-1].shape[-2:]) < 2:
            break
        chain.append(pool2(chain[-1]).to(latent.dtype))
    full = vae.decode(latent)
    size = tuple(full.shape[-3:-1])
    images = []
    for level in reversed(chain[1:]):
        comfy.model_management.throw_exception_if_processing_interrupted()
        img = vae.decode(level).movedim(-1, 1)
        img = img.reshape(-1, *img.shape[-3:])
        images.append(upsample(img, size, "nearest").movedim(1, -1))
    images.append(full.reshape(-1, *full.shape[-3:]))
    return torch.cat([i.to(full) for i in images])
