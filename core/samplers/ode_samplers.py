"""Host-free deterministic ODE samplers with k-diffusion's contract, for cheap schedule evaluation.

`sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None)`: `model(x, sigma * s_in)` returns the
denoised estimate, `sigmas` is a descending 1-D schedule ending at 0. The update formulas are those of the
papers (Karras et al. 2022, Algorithm 2; Lu et al. 2022, DPM-Solver++(2M)), written for any tensor `x`: the
schedule search runs them on per-mode gains of the analytic model, where the denoiser is a multiplication.
tests/host/test_schedules.py checks them against the host's comfy.k_diffusion functions on the same sigmas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


@torch.no_grad()
def sample_euler(model, x: Tensor, sigmas: Tensor, extra_args=None, callback=None, disable=None) -> Tensor:
    """Euler steps on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x: Tensor, sigmas: Tensor, extra_args=None, callback=None, disable=None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in lambda = -log sigma, first order at the ends."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = torch.log(sigmas[i] / sigmas[i + 1])  # lambda_next - lambda
            target = denoised
            if previous is not None:
                r = torch.log(sigmas[i - 1] / sigmas[i]) / h  # h_last / h
                target = (1 + 1 / (2 * r)) * denoised - previous / (2 * r)
            x = sigmas[i + 1] / sigmas[i] * x - torch.expm1(-h) * target
        previous = denoised
    return x


SamplerFn = Callable[..., Tensor]
SAMPLERS: dict[str, SamplerFn] = {"euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}
