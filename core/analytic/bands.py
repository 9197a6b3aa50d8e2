"""Radial frequency bands and per-band power relative to the analytic prior (the sampler oracle's statistics).

A band statistic is a mean of |x̂|² / P over the opponent-basis fft2 modes of a band (and over the batch):
1.0 means "has exactly the prior's power". Sampler claims are checked band by band against the exact
PF-ODE prediction, optionally with common random numbers (the same initial noise through the exact solve)
to cancel the sampling noise of the few low-frequency modes.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .prior import NaturalImagePrior, opponent_spectrum


def _nominal_bands(radius: Tensor, n_bands: int) -> list[int]:
    """Log-spaced band of each (sorted, nonzero) radius: floor(n · log(r / r_min) / log(r_max / r_min))."""
    span = math.log(radius[-1] / radius[0])
    if span == 0:  # a single distinct radius (a 1x2 grid): one band
        return [0] * radius.numel()
    position = torch.log(radius / radius[0]) / span
    return torch.clamp(torch.floor(position * n_bands), 0, n_bands - 1).long().tolist()


def _fill_empty_bands(nominal: list[int], n_bands: int) -> list[int]:
    """Band per distinct radius, non-decreasing, never skipping a band and ending at n_bands - 1.

    Follows `nominal` where it can; where the discrete radii would leave a band empty, the next distinct
    radius is moved down into it, and near the top radii are moved up just enough that every band is reached.
    """
    count = len(nominal)
    bands, previous = [], -1
    for j, band in enumerate(nominal):
        previous = max(min(band, previous + 1), n_bands - count + j, previous)
        bands.append(previous)
    return bands


@functools.lru_cache(maxsize=32)
def _band_index_cpu(height: int, width: int, n_bands: int) -> Tensor:
    ky = torch.fft.fftfreq(height, d=1 / height, dtype=torch.float64).round().long()[:, None]
    kx = torch.fft.fftfreq(width, d=1 / width, dtype=torch.float64).round().long()[None, :]
    key = (ky * width) ** 2 + (kx * height) ** 2  # (|f| · H · W)², exact in integers, so equal radii tie
    distinct, inverse = torch.unique(key, return_inverse=True)  # distinct[0] == 0 is DC
    if not 1 <= n_bands <= distinct.numel() - 1:
        raise ValueError(f"{n_bands} bands: a {height}x{width} grid allows 1 to {distinct.numel() - 1}")
    radius = distinct[1:].double().sqrt()
    bands = _fill_empty_bands(_nominal_bands(radius, n_bands), n_bands)
    return torch.tensor([-1, *bands], dtype=torch.long)[inverse]


def radial_bands(height: int, width: int, n_bands: int, device=None) -> Tensor:
    """(H, W) long band index of every fft2 mode; DC (f = 0) is -1 (excluded from every band).

    Nominal edges are log-spaced from the lowest nonzero frequency r_min = 1 / max(H, W) to the Nyquist
    corner r_max = sqrt((⌊H/2⌋/H)² + (⌊W/2⌋/W)²) (cycles per pixel):
        e_b = r_min · (r_max / r_min)^(b / n_bands),  b = 0 .. n_bands,
    band b holding e_b <= |f| < e_{b+1} (the corner itself in the last band). Small grids have few distinct
    low radii, so a nominal band can be empty; then the next distinct radius is moved into it (see
    `_fill_empty_bands`), so every band holds at least one radius (every band is non-empty at 32x32 with
    8 bands even without this). Raises ValueError when the grid has fewer distinct radii than bands.
    """
    return _band_index_cpu(height, width, n_bands).to(device=device, copy=True)


def band_mean(values: Tensor, index: Tensor, n_bands: int) -> Tensor:
    """(C, n_bands) mean of `values` (C, H, W) over the modes of each band of `index` (H, W)."""
    keep = index >= 0
    band = index[keep]
    sums = values.new_zeros(values.shape[0], n_bands).index_add_(1, band, values[:, keep])
    return sums / torch.bincount(band, minlength=n_bands).to(values.dtype)


def band_power(x: Tensor, n_bands: int, prior: NaturalImagePrior) -> Tensor:
    """(3, n_bands) float64 mean over the batch and each band's modes of |x̂|² / P for x (B, 3, H, W).

    Opponent basis, ortho fft2: 1.0 means "matches the prior's power" in that band and channel.
    """
    height, width = x.shape[-2:]
    relative = opponent_spectrum(x).abs().square().mean(0) / prior.power(height, width, x.device)
    return band_mean(relative, radial_bands(height, width, n_bands, x.device), n_bands)


def band_ratio(samples: Tensor, prior: NaturalImagePrior, n_bands: int = 8, reference: Tensor | None = None) -> Tensor:
    """(3, n_bands) generated / true power per band for samples (B, 3, H, W).

    reference=None: band_power(samples) (the truth is 1). With a reference of the same shape, e.g.
    prior.pf_ode_solution(noise, ...) from the SAME initial noise (common random numbers):
    band_power(samples) / band_power(reference), which cancels the sampling noise of the few low-band modes.
    """
    power = band_power(samples, n_bands, prior)
    if reference is None:
        return power
    if reference.shape != samples.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} != samples shape {tuple(samples.shape)}")
    return power / band_power(reference, n_bands, prior)


def expected_eps_ratio(
    prior: NaturalImagePrior, height: int, width: int, sigma_max: float, n_bands: int = 8, sigma_min: float = 0.0
) -> Tensor:
    """(3, n_bands) expected band_power of an exact eps PF-ODE solve started from N(0, 1 + sigma_max²).

    Per mode (1 + s²) / (P + s²) with s = sigma_max (< 1 where P > 1: the host's starting variance
    1 + s² is smaller than the model's P + s², so the low bands come out short), averaged over each band.
    sigma_min > 0: the solve stops at sigma_min and returns the denoiser there (as prior.pf_ode_solution),
    which multiplies each mode by P / (P + sigma_min²).
    """
    gain = prior.pf_ode_gain(height, width, sigma_max, "eps", sigma_min)
    relative = gain.square() / prior.power(height, width)
    return band_mean(relative, radial_bands(height, width, n_bands), n_bands)


def band_standard_error(prior: NaturalImagePrior, height: int, width: int, n_samples: int, n_bands: int = 8) -> Tensor:
    """(3, n_bands) one-sigma sampling error of band_power for n_samples exact prior draws.

    For an exact draw |x̂|² / P = |ŵ|² with w real white noise, whatever the prior's parameters (so `prior`
    only names the model being checked). A band is closed under f -> -f; the fft2 of real noise has
    ŵ(-f) = conj ŵ(f), so of its M modes only M real degrees of freedom are independent: a self-conjugate
    mode is one real N(0, 1), a conjugate pair is two (real, imaginary parts, each N(0, ½) per mode).
    The band sum of |ŵ|² is chi²_M (variance 2M), so the error of the mean is sqrt(2 / (n_samples · M)),
    not the sqrt(1 / (n_samples · M)) of M independent complex modes.
    """
    counts = torch.bincount(radial_bands(height, width, n_bands).flatten() + 1, minlength=n_bands + 1)[1:]
    error = torch.sqrt(2.0 / (n_samples * counts.double()))
    return error.expand(len(prior.colour), n_bands).clone()
