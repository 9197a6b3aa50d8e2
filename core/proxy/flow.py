"""The rectified-flow objective as Flux is trained: x_t = (1 - t) x_0 + t eps, target eps - x_0, with logit-normal
t shifted by the image's token count (Flux's rule: mu linear in the tokens, 0.5 at 256, 1.15 at 4096)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def flux_mu(tokens: float) -> float:
    """Flux's time-shift mu for an image of `tokens` image tokens (base 0.5 at 256, max 1.15 at 4096)."""
    return 0.5 + (tokens - 256) * (1.15 - 0.5) / (4096 - 256)


def sample_timesteps(n: int, tokens: float, generator: torch.Generator, device=None) -> Tensor:
    """(n,) t in (0, 1): u = sigmoid(N(0, 1)), t = e^mu / (e^mu + 1 / u - 1) (the host's flux_time_shift)."""
    u = torch.sigmoid(torch.randn(n, generator=generator, device=generator.device)).clamp(1e-4, 1 - 1e-4)
    e = math.exp(flux_mu(tokens))
    return (e / (e + 1 / u - 1)).to(device)


def flow_targets(x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, v): the noised input at t (B,) and the velocity eps - x_0 a flow model predicts."""
    tt = t.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - tt) * x0 + tt * noise, noise - x0
