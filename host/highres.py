"""Structure-guided high resolution (DiffuseHigh) on the host: one `guider.sample()` per target size.

Each stage: upscale the previous result (in latent space, or in pixels through the VAE, optionally with an
upscale model), sharpen, re-noise to the stage's first sigma and denoise with a CFGGuider whose post-CFG
function (core.samplers.highres.StructureGuide) keeps the reference's low wavelet band for the first k steps.
The math is in core/; the node class in nodes/sampling.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..core.samplers.highres import StructureGuide, resize, sharpen, stage_size, wavelet_levels
from .pyramid import StageCallback, min_level_size, scale_areas

log = logging.getLogger("pyra")
UPSCALE_METHODS = ("latent", "pixels", "upscale model")
GUIDANCE_MODES = ("latent", "pixel")


class HighResError(ValueError):
    """A high-resolution request that cannot run; the message says what to change."""


@dataclass
class HighResSettings:
    scales: list[float]
    cfgs: list[float]
    steps: int = 15
    denoise: float = 0.3
    sampler_name: str = "euler"
    scheduler: str = "normal"
    guidance_steps: int = 5
    guidance_mode: str = "latent"
    wavelet: str = "db4"
    guidance_strength: float = 1.0
    sharpen: float = 1.0
    sharpen_sigma: float = 1.0
    renoise: float = 1.0
    upscale_method: str = "latent"


def stage_sigmas(model_sampling, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The last `steps` sigmas of a schedule of steps / denoise steps, as KSampler's denoise does."""
    if not 0 < denoise <= 1:
        raise HighResError(f"denoise must be in (0, 1], got {denoise}")
    total = int(steps / denoise)
    return comfy.samplers.calculate_sigmas(model_sampling, scheduler, total)[-(steps + 1):].cpu()


class _Pixels:
    """VAE round trips between the model's latent space and BCHW pixels in [0, 1]."""

    def __init__(self, vae, latent_format):
        self.vae, self.fmt = vae, latent_format

    def decode(self, latent_vae_space: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_vae_space).movedim(-1, 1).float()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image.clamp(0, 1).movedim(1, -1)[..., :3]).float()

    def to_pixels(self, denoised: torch.Tensor) -> torch.Tensor:
        return self.decode(self.fmt.process_out(denoised))

    def from_pixels(self, image: torch.Tensor) -> torch.Tensor:
        return self.fmt.process_in(self.encode(image))


def _upscale_image(image: torch.Tensor, size: tuple[int, int], upscale_model) -> torch.Tensor:
    if upscale_model is not None:
        from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

        image = ImageUpscaleWithModel.execute(upscale_model, image.movedim(1, -1))[0].movedim(-1, 1).float()
    return resize(image, size, "bicubic").clamp(0, 1)


def _exact_means(s: HighResSettings, shape: tuple[int, int], size: tuple[int, int]) -> bool:
    """Haar guidance on a 2x, 4x or 8x step: the reference can carry the base's block means exactly."""
    factor = size[0] // shape[0]
    return (s.wavelet == "haar" and factor in (2, 4, 8) and tuple(size) == (shape[0] * factor, shape[1] * factor))


def _references(current: torch.Tensor, size: tuple[int, int], s: HighResSettings, pixels: _Pixels | None,
                upscale_model) -> tuple[torch.Tensor, torch.Tensor]:
    """(start latent, structure reference) of one stage; latents in VAE space, the reference in pixels (BCHW)
    for pixel guidance.

    The start is the sharpened upscale: sharpening seeds the detail bands the model refines. The structure
    reference is the upscale WITHOUT sharpening: unsharp masking also boosts the base's own upper octave, and
    that would otherwise be pinned into the kept low band (measured in benchmarks/highres_quality.py). With the
    Haar wavelet on a 2x/4x/8x step the reference is the nearest-neighbour upscale, whose Haar low band is
    exactly the base's block means (in the space the guidance works in): guided steps then keep the block
    means of the result equal to the base's.
    """
    exact = _exact_means(s, tuple(current.shape[-2:]), size)
    image = pixels.decode(current) if pixels is not None and (s.upscale_method != "latent"
                                                              or s.guidance_mode == "pixel") else None
    ratio = pixels.vae.spacial_compression_encode() if pixels is not None else 1
    pixel_size = (size[0] * ratio, size[1] * ratio)
    if s.upscale_method == "latent":
        plain_latent = resize(current, size, "bicubic")
        start = sharpen(plain_latent, s.sharpen, s.sharpen_sigma)
        plain_image = None
    else:
        plain_image = _upscale_image(image, pixel_size, upscale_model)
        start = pixels.encode(sharpen(plain_image, s.sharpen, s.sharpen_sigma).clamp(0, 1))
        plain_latent = None
    if s.guidance_mode == "pixel":
        if exact:
            return start, resize(image, pixel_size, "nearest")
        return start, plain_image if plain_image is not None else pixels.decode(plain_latent)
    if exact:
        return start, resize(current, size, "nearest")
    if plain_latent is not None:
        return start, plain_latent
    return start, (pixels.encode(plain_image) if s.sharpen else start)


def check_request(latent: torch.Tensor, s: HighResSettings, vae, upscale_model) -> None:
    needs_vae = s.guidance_mode == "pixel" or s.upscale_method != "latent"
    if needs_vae and vae is None:
        raise HighResError(f"guidance_mode '{s.guidance_mode}' with upscale_method '{s.upscale_method}' needs a "
                           "VAE: connect the vae input, or use latent guidance with latent upscaling")
    if s.upscale_method == "upscale model" and upscale_model is None:
        raise HighResError("upscale_method 'upscale model' needs the upscale_model input (UpscaleModelLoader)")
    if needs_vae and latent.ndim != 4:
        raise HighResError("pixel guidance and pixel upscaling are for images; for video latents use "
                           "guidance_mode 'latent' and upscale_method 'latent'")
    if s.guidance_steps > s.steps:
        raise HighResError(f"guidance_steps ({s.guidance_steps}) is more than the steps per stage ({s.steps})")
    if needs_vae and vae.latent_channels != latent.shape[1]:
        raise HighResError(f"the VAE makes {vae.latent_channels}-channel latents, the latent has "
                           f"{latent.shape[1]}: connect the VAE of this model family")


def highres_sample(model, positive, negative, latent: dict, seed: int, s: HighResSettings, vae=None,
                   upscale_model=None, callback=None, disable_pbar=False) -> torch.Tensor:
    """All stages; returns the final latent (VAE space). `callback(step, x0, x, total)` as KSampler's."""
    current = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    check_request(current, s, vae, upscale_model)
    base = tuple(current.shape[-2:])
    multiple = min_level_size(model)
    fmt = model.get_model_object("latent_format")
    ms = model.get_model_object("model_sampling")
    pixels = _Pixels(vae, fmt) if vae is not None else None
    sampler = comfy.samplers.sampler_object(s.sampler_name)
    sigmas = stage_sigmas(ms, s.scheduler, s.steps, s.denoise)
    total = len(s.scales) * s.steps
    previous = 1.0
    for i, scale in enumerate(s.scales):
        size = stage_size(base, scale, multiple)
        exact = (base[0] * scale, base[1] * scale)
        if size != exact:
            log.info("Pyra high-res: stage %d latent %sx%s rounded to %sx%s (a multiple of %d)", i + 1,
                     exact[1], exact[0], size[1], size[0], multiple)
        start, reference = _references(current, size, s, pixels, upscale_model)
        start = start.to(current.dtype)
        levels = wavelet_levels(scale / previous)
        until = float(sigmas[max(0, s.guidance_steps - 1)])
        if s.guidance_mode == "pixel":
            guide = StructureGuide(reference, until, levels, s.wavelet, s.guidance_strength,
                                   pixels.to_pixels, pixels.from_pixels)
        else:
            guide = StructureGuide(fmt.process_in(reference.to(start)), until, levels, s.wavelet,
                                   s.guidance_strength)
        patched = model.clone()
        if s.guidance_steps > 0:
            patched.set_model_sampler_post_cfg_function(guide)
        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds(positive, negative)
        guider.set_cfg(s.cfgs[i])
        guider.original_conds = scale_areas(guider.original_conds, size[-1] / base[-1])
        noise = comfy.sample.prepare_noise(start, seed + i, latent.get("batch_index")) * s.renoise
        cb = StageCallback(callback, i * s.steps, total)
        current = guider.sample(noise, start, sampler, sigmas, denoise_mask=latent.get("noise_mask"),
                                callback=cb, disable_pbar=disable_pbar, seed=seed + i)
        comfy.model_management.throw_exception_if_processing_interrupted()
        previous = scale
    return current
