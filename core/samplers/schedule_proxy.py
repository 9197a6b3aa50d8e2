"""Cheap quality proxies for a step schedule: the analytic model's per-band error (AutoDiffusion's fitness slot).

The analytic prior (core/analytic) is a stationary Gaussian: its exact denoiser multiplies every opponent-basis
Fourier mode by the Wiener gain a P / (a² P + s²) (a = 1 for eps, 1 - s for flow). A deterministic sampler only
adds and scales x and the denoised estimate, so it maps the initial noise to G · noise, mode by mode, with a
real gain G that depends on the schedule alone. The proxy therefore runs the sampler ONCE on a (1, 3, H, W)
tensor of per-mode gains (the start gain: sqrt(1 + sigma_max²) for eps, as the host's noise_scaling with
max_denoise, 1 for flow) instead of on a batch of images: the output spectrum of every noise sample n is
G · n̂, exactly. With M = mean over the samples of |n̂|² / P, the generated band power is band_mean(G² M) and
that of the exact PF-ODE solution from the SAME noise (common random numbers) is band_mean(G*² M), G* from
`NaturalImagePrior.pf_ode_gain` solved down to the family's smallest sigma (where every sampler's last,
denoising, step starts at best). Score: mean over the 3 channels and the bands of |log(generated / target)|.

With a reference set, the target is the reference images' own band power (`reference_band_power`) instead of
the exact solution: the schedule is searched so that the analytic model's samples match the reference's
spectrum, as AutoDiffusion matches FID statistics of a reference set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..analytic import NaturalImagePrior, band_power, radial_bands
from ..analytic.bands import band_mean
from ..analytic.prior import opponent_spectrum
from .ode_samplers import SAMPLERS, SamplerFn
from .schedule_families import Family


def reference_band_power(images: Tensor, size: int, prior: NaturalImagePrior, n_bands: int = 8) -> Tensor:
    """(3, n_bands) band power of reference images (B, 3, H, W) in model space ([-1, 1]) at size x size.

    Each image is centre-cropped to the largest square of side f · size (f an integer) and average-pooled by f,
    the prior's own resolution map (a non-integer resize would blur the top bands: to 0.14 of their power at
    40 -> 32 px). Raises ValueError for anything that is not a batch of 3-channel images of at least size px.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"reference images must be (B, 3, H, W) pixel-space tensors, got {tuple(images.shape)}; decode "
            "4- or 16-channel latents to images first"
        )
    factor = min(images.shape[-2:]) // size
    if factor < 1:
        raise ValueError(f"reference images of {tuple(images.shape[-2:])} px are smaller than the proxy's {size}px")
    side = factor * size
    top, left = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
    square = images[..., top : top + side, left : left + side].double()
    return band_power(F.avg_pool2d(square, factor), n_bands, prior)


class BandErrorProxy:
    """Score a schedule (model-time fractions, descending, starting at 1) on the analytic model; lower is better.

    family: the noise schedule and parametrisation; sampler: a name in ode_samplers.SAMPLERS or any function with
    k-diffusion's contract (e.g. the host's comfy.k_diffusion.sampling.sample_dpmpp_2m); samples, seed: the
    noise batch (common random numbers for every candidate); reference: (3, n_bands) target band power from
    `reference_band_power`, or None for the exact PF-ODE solution.
    """

    def __init__(self, family: Family, sampler: str | SamplerFn, prior: NaturalImagePrior | None = None,
                 size: int | None = None, samples: int = 8, seed: int = 0, n_bands: int = 8,
                 reference: Tensor | None = None):
        self.family, self.prior, self.n_bands = family, prior or NaturalImagePrior(), n_bands
        self.sampler = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
        self.size = size or family.proxy_size
        self.power = self.prior.power(self.size, self.size)
        self.index = radial_bands(self.size, self.size, n_bands)
        noise = torch.randn(samples, 3, self.size, self.size, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        self.weights = opponent_spectrum(noise).abs().square().mean(0) / self.power  # M: (3, H, W)
        grid = family.grid()
        self.sigma_max, self.sigma_min = float(family.sigma_of(grid[-1:])), float(family.sigma_of(grid[:1]))
        self.start = math.sqrt(1 + self.sigma_max**2) if family.parametrisation == "eps" else 1.0
        if reference is None:
            exact = self.prior.pf_ode_gain(self.size, self.size, self.sigma_max, family.parametrisation,
                                           self.sigma_min)
            reference = self.band_power_of_gain(exact)
        self.target = reference

    def denoise(self, gain: Tensor, sigma: Tensor) -> Tensor:
        """The exact denoiser acting on per-mode gains (1, 3, H, W): multiply by a P / (a² P + s²)."""
        s = sigma.view(-1, 1, 1, 1).to(torch.float64)
        a = 1.0 if self.family.parametrisation == "eps" else 1.0 - s
        return gain * (a * self.power / (a**2 * self.power + s**2))

    def gain(self, sigmas: Tensor) -> Tensor:
        """(3, H, W) per-mode gain G of the sampler on `sigmas` (N + 1,), ending at 0: output = G · noise."""
        start = torch.full((1, 3, self.size, self.size), self.start, dtype=torch.float64)
        return self.sampler(self.denoise, start, sigmas.to(torch.float64), disable=True)[0]

    def band_power_of_gain(self, gain: Tensor) -> Tensor:
        """(3, n_bands) band power (relative to the prior) of the outputs G · noise over the noise batch."""
        return band_mean(gain.square() * self.weights, self.index, self.n_bands)

    def band_ratio(self, sigmas: Tensor) -> Tensor:
        """(3, n_bands) generated / target band power for the schedule `sigmas` (N + 1,), ending at 0."""
        return self.band_power_of_gain(self.gain(sigmas)) / self.target

    def score_sigmas(self, sigmas: Tensor) -> float:
        ratio = self.band_ratio(sigmas)
        if not torch.isfinite(ratio).all() or (ratio <= 0).any():
            return math.inf
        return float(ratio.log().abs().mean())

    def __call__(self, fractions: Tensor) -> float:
        """Score of the schedule given as model-time fractions (N,), descending, followed by sigma 0."""
        return self.score_sigmas(self.family.sigmas(fractions))
