"""Training-free high resolution with structure guidance (DiffuseHigh, Kim et al. 2025), host-free parts.

A high-resolution stage starts from an upscaled (and sharpened) reference, re-noises it to an intermediate
noise level and denoises it; for the first k steps the predicted clean image x0 keeps its own wavelet detail
bands but takes its coarsest low band from the reference:

    x0 <- iDWT(LL(reference), details(x0))

so the composition of the lower-resolution image is kept while the model draws new detail. The edit acts on
the denoised prediction, after CFG, so it is the same for eps, v and flow models. In latent mode the transform
runs on the latent itself (no VAE round trip); pixel mode decodes x0, swaps the band in pixels and encodes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..multilevel.pyramids import upsample
from ..multilevel.wavelet import low_band, replace_low_band
from ..text_lists import parse_numbers


def parse_scales(text: str) -> list[float]:
    """'2' or '1.5, 2, 3': target sizes as multiples of the base size, strictly increasing, each above 1."""
    scales = parse_numbers(text, "scales", example="1.5, 2")
    if not scales:
        raise ValueError("scales is empty: give at least one target size, e.g. '2' for twice the base size")
    if any(s <= 1 for s in scales):
        raise ValueError(f"scales {text!r}: every target must be larger than the base (above 1)")
    if any(b <= a for a, b in itertools.pairwise(scales)):
        raise ValueError(f"scales {text!r}: targets must increase from stage to stage")
    return scales


def parse_per_stage(text: str, stages: int, name: str) -> list[float]:
    """'10' or '10, 7': one number per stage; the last one repeats."""
    values = parse_numbers(text, name, example="7, 5")
    if not values:
        raise ValueError(f"{name} is empty: give one number, or one per stage")
    return (values + [values[-1]] * stages)[:stages]


def stage_size(base: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """(h, w) of a stage: the base size times `scale`, rounded to a multiple of `multiple` (at least one)."""
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in base)


def wavelet_levels(step_scale: float) -> int:
    """Transform levels whose low band holds only frequencies the previous stage had: floor(log2(scale)), >= 1."""
    return max(1, math.floor(math.log2(step_scale) + 1e-6))


def gaussian_blur3(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """3x3 Gaussian blur of the last two dims with reflected borders, any leading dims."""
    t = torch.arange(-1, 2, dtype=torch.float32)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).to(x.device)[None, None]
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, *x.shape[-2:]).float()
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode=mode), kernel)
    return y.reshape(*lead, *x.shape[-2:])


def sharpen(x: torch.Tensor, alpha: float, sigma: float = 1.0) -> torch.Tensor:
    """Unsharp mask (1 + alpha) x - alpha blur(x); alpha 0 returns x unchanged."""
    if alpha == 0:
        return x
    return ((1 + alpha) * x.float() - alpha * gaussian_blur3(x, sigma)).to(x.dtype)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize the last two dims of a 4-D or 5-D (video: frames kept) tensor, keeping its dtype."""
    return upsample(x, size, mode).to(x.dtype)


class StructureGuide:
    """A post-CFG function that swaps the low wavelet band of the denoised prediction for the reference's.

    Active while the step's sigma is at least `until_sigma` (the sigma of the k-th step of the stage), so
    the first k steps are guided whatever the sampler's intermediate evaluations are. `to_pixels` and
    `from_pixels` switch on pixel mode: the band is swapped on the decoded image and the result encoded.
    """

    def __init__(self, reference: torch.Tensor, until_sigma: float, levels: int = 1, wave: str = "db4",
                 strength: float = 1.0, to_pixels: Callable | None = None, from_pixels: Callable | None = None):
        self.reference, self.until_sigma, self.levels = reference, float(until_sigma), levels
        self.wave, self.strength = wave, strength
        self.to_pixels, self.from_pixels = to_pixels, from_pixels
        self.reference_ll = low_band(reference, levels, wave)  # the reference is fixed: transform it once
        self.calls = 0

    def active(self, sigma: torch.Tensor) -> bool:
        return float(sigma.max()) >= self.until_sigma * (1 - 1e-4)

    def __call__(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        if self.strength == 0 or not self.active(args["sigma"]):
            return denoised
        self.calls += 1
        if self.to_pixels is None:
            return replace_low_band(denoised, self.reference, self.levels, self.wave, self.strength,
                                    self.reference_ll)
        image = self.to_pixels(denoised)
        image = replace_low_band(image, self.reference, self.levels, self.wave, self.strength, self.reference_ll)
        return self.from_pixels(image).to(denoised)
