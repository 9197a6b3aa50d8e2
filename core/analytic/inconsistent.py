"""A Gaussian image family that is NOT consistent under pooling: every size has its own statistics.

A model trained at several resolutions does not see one scene at many grids (NaturalImagePrior, where
pooling a 2N x 2N draw gives an N x N draw exactly). It sees, at each size, images normalised for that size
(latents or pixels scaled to a fixed variance) of content whose spectrum depends on how the size was made
(downscaled photographs, crops, aspect buckets). This family models both, per grid H x W with geometric-mean
side n = sqrt(H·W):

- the same opponent colour model and cell-averaged stationary field as NaturalImagePrior, with spectrum
  S_n(ν) = A_n / (k0(n) + ν)^alpha(n), ν in cycles per geometric-mean side (prior.py, module docstring);
- a slope and a knee that move with size: alpha(n) = alpha + alpha_per_octave · log2(n / ref_size) and
  k0(n) = k0 · (n / ref_size)^knee_exponent (knee_exponent = 1: the knee stays at a fixed scale in pixels);
- normalisation per size: A_n is set so that the luminance per-pixel variance is std² at EVERY size (mean of
  the luminance power over all modes, DC included; Parseval).

The per-mode power of a grid is P_n = A_n · U(H, W; alpha(n), k0(n)) with U the alias sum of prior.py
(`unit_power`), so the exact denoiser (posterior mean per Fourier mode, Wiener gain a P / (a² P + s²)),
exact draws and the exact PF-ODE solve are GaussianFieldPrior's, in eps (VE) and flow form.

Pooling is exact but leaves the family: pool(x, f) of a draw at (f H, f W) is the cell average of the big
grid's field, so its per-mode power is A_N · U(H, W; alpha(N), k0(N)) (`pooled_power`, N the big grid's
side), which differs from the family's own P at H x W (other slope, knee and scale). With alpha_per_octave =
knee_exponent = 0 only the scale differs; with std = NaturalImagePrior's pixel std at the reference size and all
three zero the family is NaturalImagePrior at ref_size (and no other size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .bands import band_mean, radial_bands
from .prior import GaussianFieldPrior, unit_power


@dataclass(frozen=True)
class PerResolutionPrior(GaussianFieldPrior):
    """Each size its own Gaussian image statistics (module docstring): a model trained at several resolutions.

    alpha, k0: slope and knee (cycles per image) at ref_size x ref_size; alpha_per_octave: slope change per
    doubling of the side; knee_exponent: k0 grows as side^knee_exponent; std: luminance per-pixel std at every
    size; colour: variance multipliers of the opponent channels.
    """

    alpha: float = 2.0
    alpha_per_octave: float = 0.05
    k0: float = 1.0
    knee_exponent: float = 0.25
    std: float = 1.0
    colour: tuple[float, float, float] = (1.0, 0.3, 0.1)
    ref_size: int = 128

    def __post_init__(self):
        if not (self.alpha > 0 and self.k0 > 0 and self.std > 0 and self.ref_size >= 1):
            raise ValueError(f"need alpha, k0, std > 0 and ref_size >= 1, got {self}")

    def size_parameters(self, height: int, width: int) -> tuple[float, float]:
        """(alpha, k0) of the H x W grid; raises ValueError where the slope would not be positive."""
        octaves = math.log2(math.sqrt(height * width) / self.ref_size)
        alpha = self.alpha + self.alpha_per_octave * octaves
        if alpha <= 0:
            raise ValueError(f"the spectral slope at {height}x{width} would be {alpha:.3f}: reduce alpha_per_octave")
        return alpha, self.k0 * 2.0 ** (self.knee_exponent * octaves)

    def _luminance(self, height: int, width: int, grid: tuple[int, int], device) -> Tensor:
        """(H, W) luminance power of an H x W grid whose field is that of the `grid` size (normalised there)."""
        alpha, k0 = self.size_parameters(*grid)
        scale = self.std**2 / unit_power(*grid, alpha, k0, torch.device("cpu")).mean().item()
        return unit_power(height, width, alpha, k0, device) * scale

    def _coloured(self, luminance: Tensor) -> Tensor:
        colour = torch.tensor(self.colour, dtype=torch.float64, device=luminance.device)
        return colour[:, None, None] * luminance

    def power(self, height: int, width: int, device=None) -> Tensor:
        """(3, H, W) float64 per-mode variance P of the ortho fft2 in the opponent basis (fft2 mode order).

        The luminance mean over all modes (the per-pixel variance) is std² at every size.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        return self._coloured(self._luminance(height, width, (height, width), device))

    def pooled_power(self, height: int, width: int, factor: int, device=None) -> Tensor:
        """(3, H, W) float64 exact per-mode variance of pool(x, factor) for x drawn at (factor·H) x (factor·W).

        Cell averages compose, so this is the big grid's field (its slope, knee and scale) cell-averaged at
        H x W: not `power(H, W)` unless the family is consistent.
        """
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        device = torch.device("cpu") if device is None else torch.device(device)
        return self._coloured(self._luminance(height, width, (height * factor, width * factor), device))

    def band_truth(self, height: int, width: int, n_bands: int = 8, pooled_from: int = 1) -> Tensor:
        """(3, n_bands) float64 expected band power of exact draws: the mean of E|x̂|² over each band's modes.

        Opponent basis, ortho fft2, bands of `radial_bands`. pooled_from = f > 1: of pool(x, f) for x drawn at
        f times the size. The relative form (band_power / P) of an exact draw has expectation 1 by construction.
        """
        power = self.power(height, width) if pooled_from == 1 else self.pooled_power(height, width, pooled_from)
        return band_mean(power, radial_bands(height, width, n_bands), n_bands)

    def pixel_std_ratio(self, height: int, width: int, factor: int) -> float:
        """std of pool(x, factor) for x drawn at (factor·H) x (factor·W), over this family's std at H x W.

        Luminance per-pixel std: how much smaller (< 1) the pooled full-size data is than the data the
        H x W model was normalised to (1 for a pooling-consistent family).
        """
        pooled = self._luminance(height, width, (height * factor, width * factor), torch.device("cpu"))
        return math.sqrt(pooled.mean().item()) / self.std
