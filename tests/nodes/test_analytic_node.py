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


def crn_band_error(core, samples, noise, sigma_max, parametrisation) -> float:
    """Largest relative band-power error against the exact ODE solution from the same noise (all channels)."""
    prior = core.NaturalImagePrior()
    reference = prior.pf_ode_solution(noise, sigma_max, parametrisation)
    ratio = core.band_ratio(samples, prior, n_bands=8, reference=reference)
    return (ratio - 1).abs().max().item()


def sd_sigma_max() -> float:
    import comfy.model_sampling

    return float(comfy.model_sampling.ModelSamplingDiscrete().sigma_max)


@pytest.mark.parametrize(("parametrisation", "sampler", "scheduler", "steps"), [
    ("flow", "dpmpp_2m", "simple", 300),
    ("eps", "dpmpp_2m", "karras", 300),
    ("eps", "heun", "normal", 150),
])
def test_accurate_host_solve_matches_exact_bands(analytic, parametrisation, sampler, scheduler, steps):
    core, node = analytic
    noise = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    samples = host_sample(node, parametrisation, sampler, scheduler, steps, noise)
    sigma_max = 1.0 if parametrisation == "flow" else sd_sigma_max()
    assert crn_band_error(core, samples, noise, sigma_max, parametrisation) < 0.02


def test_eps_prediction_is_not_one_in_low_bands(analytic):
    """The SD schedule stops at sigma_max, so even an exact solve comes out short in the lowest band."""
    core, node = analytic
    prior = core.NaturalImagePrior()
    expected = core.expected_eps_ratio(prior, 128, 128, sd_sigma_max(), n_bands=8)
    assert expected[0, 0] < 0.8
    noise = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    samples = host_sample(node, "eps", "dpmpp_2m", "karras", 200, noise)
    measured = core.band_power(samples, 8, prior)
    stderr = core.band_standard_error(prior, 128, 128, 8, n_bands=8)
    assert ((measured - expected).abs() < 4 * stderr + 0.01).all()
    assert ((measured[0, 0] - 1).abs() > 4 * stderr[0, 0]), "the low band must be measurably short of 1"


def test_biased_host_solver_fails_the_band_check(analytic):
    """A coarse solve (10 Euler steps at shift 1) loses low-band power: the same check must reject it."""
    core, node = analytic
    noise = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    samples = host_sample(node, "flow", "euler", "simple", 10, noise)
    assert crn_band_error(core, samples, noise, 1.0, "flow") > 0.05


def test_model_is_not_mutated_and_conditioning_is_ignored(analytic):
    core, node = analytic
    noise = torch.randn(2, 3, 32, 24, generator=torch.Generator().manual_seed(5))
    a = host_sample(node, "flow", "euler", "simple", 4, noise)
    b = host_sample(node, "flow", "euler", "simple", 4, noise)
    assert torch.equal(a, b)
    assert a.shape == noise.shape and torch.isfinite(a).all()
