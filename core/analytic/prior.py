"""A stationary Gaussian natural-image prior whose exact denoiser and exact PF-ODE solution are closed form.

Model (images in model space: 3 channels, values in about [-1, 1], mean 0):

- Colour: pixels are rotated into the orthonormal opponent basis `OPPONENT_BASIS` (Ruderman, Cronin & Chiao
  1998, "lαβ"): luminance (1, 1, 1)/√3, yellow-blue (1, 1, -2)/√6, red-green (1, -1, 0)/√2. The three opponent
  channels are independent; their variances are `colour` times the luminance variance (default (1, 0.3, 0.1):
  natural images are mostly luminance, with yellow-blue the stronger chromatic axis).
- Space: each opponent channel is a stationary Gaussian field. In the orthonormal 2-D DFT
  (`torch.fft.fft2(..., norm="ortho")`) every mode x̂(f) has variance
  P(f) = A / (f0 + |f|)^alpha, |f| = the radial frequency in cycles per pixel on the current grid
  (fy = fftfreq(H), fx = fftfreq(W)). alpha = 2 is the classic 1/f² power spectrum of natural images
  (Field 1987; van der Schaaf & van Hateren 1996: 1.9-2.1). f0 = 1/128 cycles per pixel is the large-scale
  cut-off: structure keeps growing up to ~128-pixel wavelengths, and the mean of an image (the DC mode)
  stays a modest part of the variance on 64-256 pixel grids (its std is ~0.11 at 128x128, ~0.21 at 64x64).
- A is set PER GRID so that the luminance per-pixel std is `std` (default 0.5, typical of photographs
  mapped to [-1, 1]): mean over modes of P equals std² (Parseval, ortho FFT). Because the spectrum is a
  fixed function of cycles per pixel, a crop of a larger draw has nearly, but not exactly, the statistics
  of a draw on the smaller grid: the model is approximately scale-consistent (like natural images, which
  are nearly scale-invariant), not exactly (the per-grid A and the fixed f0 break exact invariance).

Noising, per mode, with a(s) the signal scale:
    "eps"  (EDM / VE):         x = x0 + s·n          a(s) = 1
    "flow" (rectified flow):   x = (1 - s)·x0 + s·n  a(s) = 1 - s
so x̂ ~ N(0, v(s)) with v(s) = a(s)² P + s², and the exact denoiser (posterior mean) is the Wiener gain
E[x̂0 | x̂] = a P / (a² P + s²) · x̂.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PARAMETRISATIONS = ("eps", "flow")

# rows: luminance, yellow-blue, red-green (orthonormal; x_opp = B @ x_rgb, x_rgb = Bᵀ @ x_opp)
OPPONENT_BASIS = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
    ],
    dtype=torch.float64,
)


def radial_frequency(height: int, width: int, device=None) -> Tensor:
    """(H, W) float64 |f| in cycles per pixel of every fft2 mode (fy = fftfreq(H), fx = fftfreq(W))."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64, device=device)[None, :]
    return torch.sqrt(fy**2 + fx**2)


def _rotate(basis: Tensor, x: Tensor) -> Tensor:
    """basis (3, 3) applied to the channels of x (B, 3, H, W), in float64."""
    flat = x.to(torch.float64).reshape(x.shape[0], 3, -1)
    return (basis.to(x.device) @ flat).view(x.shape)


def opponent_spectrum(x: Tensor) -> Tensor:
    """(B, 3, H, W) complex128: the ortho fft2 of `x` (B, 3, H, W) rotated into the opponent basis."""
    return torch.fft.fft2(_rotate(OPPONENT_BASIS, x), norm="ortho")


def filter_modes(x: Tensor, gain: Tensor) -> Tensor:
    """Multiply every opponent-basis Fourier mode of `x` (B, 3, H, W) by a real `gain`.

    gain: (3, H, W) or (B, 3, H, W), indexed like fft2 and symmetric under f -> -f (a function of |f|),
    so the result is real; it is computed with rfft2 on the non-redundant half. Returns (B, 3, H, W) float64.
    """
    height, width = x.shape[-2:]
    spec = torch.fft.rfft2(_rotate(OPPONENT_BASIS, x), norm="ortho") * gain[..., : width // 2 + 1]
    return _rotate(OPPONENT_BASIS.T, torch.fft.irfft2(spec, s=(height, width), norm="ortho"))


def _check_parametrisation(parametrisation: str) -> None:
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")


def _signal_scale(sigma: Tensor | float, parametrisation: str) -> Tensor | float:
    """a(s): 1 for "eps", 1 - s for "flow"."""
    return 1.0 if parametrisation == "eps" else 1.0 - sigma


def _marginal_var(power: Tensor, sigma: float, parametrisation: str) -> Tensor:
    """v(s) = a(s)² P + s², the variance of a noised mode."""
    return _signal_scale(sigma, parametrisation) ** 2 * power + sigma**2


def _wiener_gain(power: Tensor, sigma: Tensor | float, parametrisation: str) -> Tensor:
    """a P / (a² P + s²): E[x̂0 | x̂] / x̂ per mode (P > 0 everywhere, so s = 0 gives 1 and flow s = 1 gives 0)."""
    scale = _signal_scale(sigma, parametrisation)
    return scale * power / (scale**2 * power + sigma**2)


def _per_sample_sigma(sigma: Tensor | float, batch: int, device) -> Tensor:
    """sigma as a float64 (B or 1, 1, 1, 1) tensor; accepts a float, a 0-d tensor, (1,) or (B,)."""
    flat = torch.as_tensor(sigma, dtype=torch.float64, device=device).reshape(-1)
    if flat.numel() not in (1, batch):
        raise ValueError(f"sigma must be a scalar or have shape ({batch},), got {tuple(flat.shape)}")
    return flat.view(-1, 1, 1, 1)


@dataclass(frozen=True)
class NaturalImagePrior:
    """The stationary Gaussian image prior described in the module docstring (see there for the defaults)."""

    alpha: float = 2.0
    f0: float = 1 / 128
    std: float = 0.5
    colour: tuple[float, float, float] = (1.0, 0.3, 0.1)

    def power(self, height: int, width: int, device=None) -> Tensor:
        """(3, H, W) float64 per-mode variance P of the ortho fft2 in the opponent basis (fft2 mode order).

        Luminance: A / (f0 + |f|)^alpha with A chosen so its mean over the H·W modes is std²;
        the chromatic channels are that times colour[1], colour[2].
        """
        shape = (self.f0 + radial_frequency(height, width, device)) ** -self.alpha
        luminance = self.std**2 * shape / shape.mean()
        colour = torch.tensor(self.colour, dtype=torch.float64, device=luminance.device)
        return colour[:, None, None] * luminance

    def sample(
        self,
        n: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """(n, 3, H, W) exact draws: white noise coloured by sqrt(P) per opponent mode (computed in float64)."""
        white = torch.randn(n, 3, height, width, generator=generator, device=device, dtype=torch.float64)
        return filter_modes(white, self.power(height, width, white.device).sqrt()).to(dtype)

    def denoise(self, x: Tensor, sigma: Tensor | float, parametrisation: str) -> Tensor:
        """The exact denoiser E[x0 | x] for x (B, 3, H, W) noised at `sigma` (scalar or (B,)).

        Per opponent mode: "eps" x̂0 = P / (P + s²) · x̂; "flow" x̂0 = (1 - s) P / ((1 - s)² P + s²) · x̂.
        s = 0 returns x; flow s = 1 returns 0. Computed in float64, returned in x.dtype.
        """
        _check_parametrisation(parametrisation)
        sigma = _per_sample_sigma(sigma, x.shape[0], x.device)
        gain = _wiener_gain(self.power(*x.shape[-2:], device=x.device), sigma, parametrisation)
        return filter_modes(x, gain).to(x.dtype)

    def pf_ode_gain(
        self, height: int, width: int, sigma_max: float, parametrisation: str, sigma_min: float = 0.0, device=None
    ) -> Tensor:
        """(3, H, W) float64 per-mode factor g of an exact PF-ODE solve, x0 = g · noise (see pf_ode_solution)."""
        _check_parametrisation(parametrisation)
        if parametrisation == "flow" and sigma_max != 1.0:
            raise ValueError(f"flow sampling starts from pure noise: sigma_max must be 1.0, got {sigma_max}")
        if not 0.0 <= sigma_min < sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        power = self.power(height, width, device)
        start = math.sqrt(1.0 + sigma_max**2) if parametrisation == "eps" else 1.0
        transport = torch.sqrt(
            _marginal_var(power, sigma_min, parametrisation) / _marginal_var(power, sigma_max, parametrisation)
        )
        return start * transport * _wiener_gain(power, sigma_min, parametrisation)

    def pf_ode_solution(self, noise: Tensor, sigma_max: float, parametrisation: str, sigma_min: float = 0.0) -> Tensor:
        """What an EXACT probability-flow ODE solve yields from the host's initial `noise` (B, 3, H, W) ~ N(0, I).

        Derivation: per mode the noised marginal is N(0, v(s)), v(s) = a(s)² P + s², and the PF ODE
        dx/ds = (x - D(x, s)) / s (the same form for both parametrisations, D the exact denoiser) is linear:
        (x - D)/s = x · d/ds ½ log v(s). So it scales each mode by the ratio of marginal stds,
        x(s') = x(s) · sqrt(v(s') / v(s)).
        - "eps": the host starts from x_T = noise · sqrt(1 + sigma_max²) (EPS noise_scaling with max_denoise,
          NOT the model's marginal std sqrt(P + sigma_max²)) and integrates to 0:
          x0 = x_T · sqrt(P / (P + sigma_max²)).
        - "flow": the host starts from x_1 = noise (sigma_max must be 1.0, v(1) = 1): x0 = noise · sqrt(P).
        sigma_min > 0 models a sampler that solves exactly down to sigma_min and then takes the usual last
        Euler step to 0, which returns the denoiser output D(x(sigma_min), sigma_min):
        x0 = x_start · sqrt(v(sigma_min) / v(sigma_max)) · a P / v(sigma_min). Returned in noise.dtype.
        """
        gain = self.pf_ode_gain(*noise.shape[-2:], sigma_max, parametrisation, sigma_min, device=noise.device)
        return filter_modes(noise, gain).to(noise.dtype)
