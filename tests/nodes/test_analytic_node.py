"""The analytic MODEL inside the host: the host's own samplers against the exact per-band truth."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def analytic(comfy_host):
    return comfy_host.module("core.analytic"), comfy_host.node("PyraAnalyticModel")


def node_defaults(node) -> dict:
    return {k: v[1]["default"] for k, v in node.INPUT_TYPES()["required"].items() if k != "parametrisation"}


def host_sample(node, parametrisation, sampler, scheduler, steps, noise, seed=0):
    """Run comfy.sample.sample on the analytic MODEL (node defaults) from `noise` (B, 3, H, W)."""
    import comfy.sample

    (patcher,) = node.execute(parametrisation=parametrisation, **node_defaults(node)).args
    cond = [[torch.zeros(1, 1, 8), {}]]
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, 1.0, sampler, scheduler, cond, cond, latent,
                               seed=seed, disable_pbar=True).float()


def crn_band_error(core, samples, noise, sigma_max, parametrisation, sigma_min=0.0) -> float:
    """Largest relative band-power error against the exact ODE solution from the same noise (all channels).

    `sigma_min`: the schedule's last nonzero sigma; the sampler's final step returns the denoiser there.
    """
    prior = core.NaturalImagePrior()
    reference = prior.pf_ode_solution(noise, sigma_max, parametrisation, sigma_min=sigma_min)
    ratio = core.band_ratio(samples, prior, n_bands=8, reference=reference)
    return (ratio - 1).abs().max().item()


def sd_sigmas() -> tuple[float, float]:
    """(sigma_max, sigma_min) of the SD1.5 schedule the eps analytic model uses."""
    import comfy.model_sampling

    sampling = comfy.model_sampling.ModelSamplingDiscrete()
    return float(sampling.sigma_max), float(sampling.sigma_min)


@pytest.mark.parametrize(("parametrisation", "sampler", "scheduler", "steps"), [
    ("flow", "dpmpp_2m", "simple", 300),
    ("eps", "dpmpp_2m", "karras", 300),
    ("eps", "heun", "karras", 150),
])
def test_accurate_host_solve_matches_exact_bands(analytic, parametrisation, sampler, scheduler, steps):
    core, node = analytic
    noise = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    samples = host_sample(node, parametrisation, sampler, scheduler, steps, noise)
    sigma_max, sigma_min = (1.0, 0.0) if parametrisation == "flow" else sd_sigmas()
    assert crn_band_error(core, samples, noise, sigma_max, parametrisation, sigma_min) < 0.01


def test_eps_prediction_is_not_one_in_low_bands(analytic):
    """The SD schedule stops at sigma_max, so even an exact solve comes out short in the lowest band.

    Common random numbers: the samples are compared with exact prior draws made from the same noise
    (`pf_ode_solution(noise, 1, "flow")` is `sqrt(P) * noise`), so the few low-band modes do not drown the
    effect in sampling noise; the result must be the predicted ratio, not 1.
    """
    core, node = analytic
    prior = core.NaturalImagePrior()
    sigma_max, sigma_min = sd_sigmas()
    expected = core.expected_eps_ratio(prior, 128, 128, sigma_max, n_bands=8, sigma_min=sigma_min)
    noise = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    samples = host_sample(node, "eps", "dpmpp_2m", "karras", 100, noise)
    measured = core.band_ratio(samples, prior, n_bands=8, reference=prior.pf_ode_solution(noise, 1.0, "flow"))
    assert expected[0, 0] < 0.9
    assert (measured - expected).abs().max() < 0.01
    assert (measured[0, 0] - 1).abs() > 0.1, "the low band must be measurably short of 1"


def test_biased_host_solver_fails_the_band_check(analytic):
    """A coarse solve (10 Euler steps at shift 1) loses low-band power: the same check must reject it."""
    core, node = analytic
    noise = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    samples = host_sample(node, "flow", "euler", "simple", 10, noise)
    assert crn_band_error(core, samples, noise, 1.0, "flow") > 0.05


def test_model_is_not_mutated_and_conditioning_is_ignored(analytic):
    _, node = analytic
    noise = torch.randn(2, 3, 32, 24, generator=torch.Generator().manual_seed(5))
    a = host_sample(node, "flow", "euler", "simple", 4, noise)
    b = host_sample(node, "flow", "euler", "simple", 4, noise)
    assert torch.equal(a, b)
    assert a.shape == noise.shape and torch.isfinite(a).all()
