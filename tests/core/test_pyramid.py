"""core/samplers/pyramid.py: ladder planning, schedule mapping and the exact lift."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
pyr = importlib.import_module("pyra_pack.core.samplers.pyramid")


def test_parse_and_plan():
    assert pyr.parse_ladder("4:0.35, 2:0.25") == [(4, 0.35), (2, 0.25)]
    stages = pyr.plan_stages(30, pyr.parse_ladder("4:0.35, 2:0.25"))
    assert [(s.factor, s.start, s.end) for s in stages] == [(4, 0, 10), (2, 10, 18), (1, 18, 30)]
    assert [(s.factor, s.end - s.start) for s in pyr.plan_stages(30, [(2, 0.4)])] == [(2, 12), (1, 18)]
    assert all(s.end > s.start for s in pyr.plan_stages(3, [(4, 0.01), (2, 0.01)]))


@pytest.mark.parametrize("bad", ["2", "2:0.4,4:0.2", "3:0.2,2:0.2", "1:0.5", "2:1.0", "2:0.5,2:0.2", "x:y"])
def test_bad_ladders_are_rejected(bad):
    with pytest.raises(ValueError):
        pyr.parse_ladder(bad)


def test_too_few_steps_for_the_ladder():
    with pytest.raises(ValueError, match="more steps"):
        pyr.plan_stages(2, [(4, 0.3), (2, 0.3)])


@pytest.mark.parametrize("param", ["ve", "flow"])
def test_level_sigmas_divide_the_ve_noise_level(param):
    sigmas = torch.tensor([1.0, 0.9, 0.5, 0.1, 0.0]) * (14.6 if param == "ve" else 1.0)
    low = pyr.level_sigmas(sigmas, 2, param)
    ve, ve_low = pyr.to_ve(sigmas.double(), param), pyr.to_ve(low.double(), param)
    finite = torch.isfinite(ve)
    assert torch.allclose(ve_low[finite], ve[finite] / 2, rtol=1e-6)
    assert (low[1:] <= low[:-1]).all() and low[-1] == 0
    if param == "flow":
        assert low[0] == 1.0  # pure noise stays pure noise at every level


def test_pool_unpool_detail_are_projections():
    x = torch.randn(2, 3, 5, 8, 12, dtype=torch.float64)  # a 5-D video latent: T is kept
    p = pyr.unpool(pyr.pool(x, 4), 4)
    assert p.shape == x.shape
    assert torch.allclose(pyr.unpool(pyr.pool(p, 4), 4), p)  # idempotent
    assert abs(float((p * pyr.detail(x, 4)).sum())) < 1e-9  # orthogonal
    with pytest.raises(ValueError, match="divisible"):
        pyr.pool(torch.zeros(1, 1, 6, 6), 4)


def test_lift_of_pure_noise_recovers_the_coupled_noise_exactly():
    """The level's noise is f * pool(n); lifting a pure-noise state must give back n itself."""
    n = torch.randn(2, 4, 16, 24, dtype=torch.float64)
    s_low = 3.0
    x_low = s_low * pyr.level_noise(n, 2)
    clean, unit = pyr.lift(x_low, torch.zeros_like(x_low), s_low, 2, n, "ve")
    assert torch.allclose(unit, n, atol=1e-12)
    assert clean.abs().max() == 0


@pytest.mark.parametrize("param", ["ve", "flow"])
def test_lift_keeps_the_coarse_state_and_whitens_the_noise(param):
    torch.manual_seed(0)
    b, c, h, w, f = 64, 2, 16, 16, 2
    sigma_low = 0.6 if param == "flow" else 2.0
    s_low = float(pyr.to_ve(torch.tensor(sigma_low, dtype=torch.float64), param))
    d = torch.randn(b, c, h, w, dtype=torch.float64).cumsum(-1) * 0.1  # a smooth-ish clean estimate
    e = torch.randn(b, c, h, w, dtype=torch.float64)
    x_low = pyr.signal_scale(sigma_low, param) * (d + s_low * e)
    n = torch.randn(b, c, h * f, w * f, dtype=torch.float64)
    clean, unit = pyr.lift(x_low, d, sigma_low, f, n, param)
    state_ve = clean + f * s_low * unit
    # the P-part of the full state is exactly the level's whole state
    assert torch.allclose(pyr.pool(state_ve, f), x_low / pyr.signal_scale(sigma_low, param), atol=1e-10)
    # the noise is white with unit variance: flat power spectrum, no neighbour correlation
    spec = torch.fft.fft2(unit, norm="ortho").abs().pow(2).mean(dim=(0, 1))
    assert abs(float(spec.mean()) - 1) < 0.02 and float(spec.std()) < 0.1
    corr = float((unit[..., :, 1:] * unit[..., :, :-1]).mean())
    assert abs(corr) < 0.01, "upsampled noise is correlated unless the detail noise is added"


def test_naive_upsampled_noise_is_correlated():
    """What the correction is for: nearest-upsampled level noise alone is correlated and too weak."""
    n = torch.randn(64, 2, 32, 32, dtype=torch.float64)
    up = pyr.unpool(pyr.level_noise(n, 2), 2) / 2
    assert abs(float(up.var()) - 0.25) < 0.01
    assert float((up[..., :, 1:] * up[..., :, :-1]).mean()) > 0.1


def test_predicted_speedup_bounds():
    a = pyr.predicted_speedup(pyr.plan_stages(30, [(2, 0.4)]))
    b = pyr.predicted_speedup(pyr.plan_stages(30, [(4, 0.35), (2, 0.25)]))
    assert math.isclose(a, 30 / (12 / 4 + 1 / 4 + 18))
    assert 1.3 < a < 1.47 and 1.9 < b < 2.2
    assert pyr.predicted_speedup(pyr.plan_stages(30, [(2, 0.4)]), attention_share=1.0) > a


def _gaussian_field(power: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, 1, H, W) draws whose ortho fft2 modes have variance `power` (H, W)."""
    white = torch.randn(n, 1, *power.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.fft.ifft2(torch.fft.fft2(white, norm="ortho") * power.sqrt(), norm="ortho").real


def test_detail_topup_fills_the_detail_modes_to_the_marginal_power():
    """A lifted state whose detail modes hold noise only (no signal) at VE level s: with the exact denoiser of a
    Gaussian field, the top-up brings their power to P + s^2 per band; the modes the level held stay as they were."""
    h = w = 64
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64).abs()[:, None], torch.fft.fftfreq(w, dtype=torch.float64)
    radius = (fy.square() + fx.abs()[None, :].square()).sqrt().clamp(min=1 / h)
    power = 0.02 * radius ** -2.0
    held = torch.maximum(fy.expand(h, w), fx.abs()[None, :].expand(h, w)) < 0.25   # factor 2
    x0 = _gaussian_field(power, 32, 0)
    clean = torch.fft.ifft2(torch.fft.fft2(x0, norm="ortho") * held, norm="ortho").real
    ve = 0.5
    unit = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    state = clean + ve * unit
    denoised = torch.fft.ifft2(torch.fft.fft2(state, norm="ortho") * power / (power + ve**2), norm="ortho").real
    fresh = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    topped = pyr.detail_topup(clean, unit, denoised, ve, 2, fresh)

    def detail_power(u):
        return (torch.fft.fft2(clean + ve * u, norm="ortho").abs().square().mean(0)[0])[~held]

    target = (power + ve**2)[~held]
    assert (detail_power(topped).mean() / target.mean() - 1).abs() < 0.05
    assert (detail_power(unit).mean() / target.mean() - 1).abs() > 0.2   # the check can fail: without it
    spec = torch.fft.fft2(topped - unit, norm="ortho")
    assert spec.abs()[..., held].max() < 1e-9   # the held modes are untouched
    # a model that shrinks nothing (g = 0) measures no data power: a state of noise only keeps its power (a band
    # whose sampled power fell short of s^2 gets the shortfall)
    zero = torch.zeros_like(clean)
    same = pyr.detail_topup(zero, unit, zero, ve, 2, fresh)
    assert (same.square().mean() / unit.square().mean() - 1).abs() < 0.02
    with pytest.raises(ValueError, match="finite positive"):
        pyr.detail_topup(clean, unit, denoised, math.inf, 2, fresh)
