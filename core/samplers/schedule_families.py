"""Model families a searched schedule is tied to: their noise schedules, host-free, as the host computes them.

A schedule is stored as model-time fractions u in (0, 1] (u = 1 is pure noise), followed by sigma = 0. The
host maps u to sigma with the model's own `model_sampling.percent_to_sigma(1 - u)`, so a shift the user set
(ModelSamplingSD3 / ModelSamplingFlux) is honoured. `sigma_of` is the same map for the family's default:

- "eps" families (sd15, sdxl): the discrete DDPM schedule (1000 steps, betas linear in sqrt from 0.00085 to
  0.012), sigma_k = sqrt((1 - alphabar_k) / alphabar_k), u = k / 999; log sigma linear between integers.
- "flow" families: sigma = shift · u / (1 + (shift - 1) · u) (ModelSamplingDiscreteFlow, SD3: shift 3, Wan 2.1:
  shift 8, the host's WAN21 default, comfy/supported_models.py WAN21_T2V) and Flux's
  sigma = e^mu / (e^mu + 1/u - 1) (ModelSamplingFlux) with mu = 1.15, the value ModelSamplingFlux computes
  at 1024x1024 (max_shift at 4096 tokens), which is the same map as the first with shift = e^mu.

The search grid is the model's own discrete time grid: u = k / 999 (eps) or (k + 1) / 1000 (flow),
k = 0 .. 999, so the last point is always u = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

GRID_POINTS = 1000


@dataclass(frozen=True)
class Family:
    """A model family: parametrisation ("eps" or "flow"), its flow shift (None for eps) and the proxy's size.

    proxy_size: pixels per side of the analytic proxy, the geometric-mean latent side at the family's native
    resolution (512² -> 64² latent for SD1.5, 1024² -> 128² for SDXL/SD3/Flux, 480x832 -> 60x104 for Wan).
    """

    name: str
    parametrisation: str
    shift: float | None
    proxy_size: int

    def grid(self) -> Tensor:
        """(1000,) float64 fractions u of the model's discrete time grid, ascending, ending at 1."""
        k = torch.arange(GRID_POINTS, dtype=torch.float64)
        return k / (GRID_POINTS - 1) if self.parametrisation == "eps" else (k + 1) / GRID_POINTS

    def sigma_of(self, fractions: Tensor) -> Tensor:
        """sigma for model-time fractions u (any shape, float64), as the host's default model_sampling gives it."""
        u = fractions.to(torch.float64)
        if self.parametrisation == "flow":
            return self.shift * u / (1 + (self.shift - 1) * u)
        position = u * (GRID_POINTS - 1)
        low = position.floor().long().clamp(0, GRID_POINTS - 1)
        high = position.ceil().long().clamp(0, GRID_POINTS - 1)
        log_sigmas = _discrete_log_sigmas()
        weight = position - low
        return torch.exp((1 - weight) * log_sigmas[low] + weight * log_sigmas[high])

    def sigmas(self, fractions: Tensor) -> Tensor:
        """(N + 1,) float64 schedule: sigma of each fraction (N, descending), then 0."""
        return torch.cat([self.sigma_of(fractions), fractions.new_zeros(1, dtype=torch.float64)])


def _discrete_log_sigmas() -> Tensor:
    """(1000,) log sigma of the SD1.5/SDXL discrete schedule, rounded through float32 as the host stores it."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, GRID_POINTS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    return sigmas.float().log().double()


FLUX_MU_1024 = 1.15  # ModelSamplingFlux: base_shift 0.5 at 256 tokens, max_shift 1.15 at 4096 tokens (1024²)

FAMILIES: dict[str, Family] = {
    "sd15": Family("sd15", "eps", None, 64),
    "sdxl": Family("sdxl", "eps", None, 128),
    "sd3": Family("sd3", "flow", 3.0, 128),
    "flux": Family("flux", "flow", math.exp(FLUX_MU_1024), 128),
    "wan21": Family("wan21", "flow", 8.0, 80),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
