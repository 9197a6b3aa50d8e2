"""PerResolutionPrior is a correct oracle for a model with per-size statistics, and really is inconsistent.

- Its denoiser equals the posterior mean computed by brute force from the pixel covariance (explicit DFT
  matrices, a linear solve) on a tiny grid, eps and flow; the consistent prior's denoiser does not.
- Its band truth matches the band power of exact draws within the standard error; the truth of the
  neighbouring size does not.
- Pooling a 2N draw gives `pooled_power`'s statistics, which are not the family's own at N.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
analytic = importlib.import_module("pyra_pack.core.analytic")
inconsistent = importlib.import_module("pyra_pack.core.analytic.inconsistent")
prior_module = importlib.import_module("pyra_pack.core.analytic.prior")
pyramid = importlib.import_module("pyra_pack.core.samplers.pyramid")
FAMILY = inconsistent.PerResolutionPrior()
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def covariance(power: torch.Tensor) -> torch.Tensor:
    """(3HW, 3HW) pixel covariance (RGB, channel-major) of the Gaussian with per-mode opponent `power` (3, H, W).

    Built from explicit ortho DFT matrices: C = Bᵀ (Fᴴ diag(P_c) F) B, independent of filter_modes' rfft path.
    """
    _, h, w = power.shape
    fy = torch.fft.fft(torch.eye(h, dtype=torch.complex128), norm="ortho")
    fx = torch.fft.fft(torch.eye(w, dtype=torch.complex128), norm="ortho")
    dft = torch.kron(fy, fx)  # (HW, HW), row-major pixels
    blocks = [(dft.conj().T @ torch.diag(power[c].flatten().to(torch.complex128)) @ dft).real for c in range(3)]
    opponent = torch.block_diag(*blocks)
    basis = torch.kron(prior_module.OPPONENT_BASIS, torch.eye(h * w, dtype=F64))
    return basis.T @ opponent @ basis


def brute_force_posterior_mean(power, x, sigma, parametrisation):
    cov = covariance(power)
    a = 1.0 if parametrisation == "eps" else 1.0 - sigma
    flat = x.reshape(x.shape[0], -1).T
    mean = a * cov @ torch.linalg.solve(a * a * cov + sigma**2 * torch.eye(cov.shape[0], dtype=F64), flat)
    return mean.T.reshape(x.shape)


@pytest.mark.parametrize(("parametrisation", "sigma"), [("eps", 0.7), ("eps", 3.0), ("flow", 0.3), ("flow", 0.8)])
def test_denoiser_is_the_brute_force_posterior_mean(parametrisation, sigma):
    h, w = 4, 6
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1), dtype=F64) * 1.5
    expected = brute_force_posterior_mean(FAMILY.power(h, w), x, sigma, parametrisation)
    got = FAMILY.denoise(x, sigma, parametrisation)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-10)
    # the same check rejects the consistent prior and the pooled statistics of the next size up
    for other in (analytic.NaturalImagePrior().power(h, w), FAMILY.pooled_power(h, w, 2)):
        wrong = brute_force_posterior_mean(other, x, sigma, parametrisation)
        assert (wrong - got).abs().max() > 1e-3


def test_normalised_per_size_and_parameters_move():
    for size in (8, 32, 128, 256):
        lum = FAMILY.power(size, size)[0]
        assert lum.mean().item() == pytest.approx(FAMILY.std**2, rel=1e-12)  # per-pixel variance (Parseval)
    assert FAMILY.size_parameters(128, 128) == (FAMILY.alpha, FAMILY.k0)
    a64, k64 = FAMILY.size_parameters(64, 64)
    a256, k256 = FAMILY.size_parameters(256, 256)
    assert a64 < FAMILY.alpha < a256 and k64 < FAMILY.k0 < k256
    with pytest.raises(ValueError, match="slope"):
        inconsistent.PerResolutionPrior(alpha=0.5, alpha_per_octave=1.0).power(8, 8)


def z_scores(samples, truth_power, n_bands):
    """(3, n_bands) (band_power relative to truth_power - 1) / standard error for exact draws."""
    h, w = samples.shape[-2:]
    relative = prior_module.opponent_spectrum(samples).abs().square().mean(0) / truth_power
    band = analytic.radial_bands(h, w, n_bands)
    power = importlib.import_module("pyra_pack.core.analytic.bands").band_mean(relative, band, n_bands)
    return (power - 1) / analytic.band_standard_error(FAMILY, h, w, samples.shape[0], n_bands)


def test_band_truth_matches_exact_draws():
    n, size, bands = 64, 32, 6
    g = torch.Generator().manual_seed(3)
    x = FAMILY.sample(n, size, size, generator=g, dtype=F64)
    assert z_scores(x, FAMILY.power(size, size), bands).abs().max() < 4.5
    # absolute band truth: the band means of |x̂|² against band_truth, within 5 empirical standard errors
    spec = prior_module.opponent_spectrum(x).abs().square()
    index = analytic.radial_bands(size, size, bands)
    bands_mod = importlib.import_module("pyra_pack.core.analytic.bands")
    per_sample = torch.stack([bands_mod.band_mean(s, index, bands) for s in spec])
    err = per_sample.std(0) / math.sqrt(n)
    truth = FAMILY.band_truth(size, size, bands)
    assert ((per_sample.mean(0) - truth).abs() / err).max() < 5
    # the checks can fail: the statistics of another size are rejected
    assert z_scores(x, FAMILY.power(size * 2, size * 2)[:, ::2, ::2], bands).abs().max() > 8
    assert ((per_sample.mean(0) - FAMILY.band_truth(size, size, bands, pooled_from=2)).abs() / err).max() > 8


def test_pooling_leaves_the_family():
    n, size, bands = 64, 32, 6
    big = FAMILY.sample(n, 2 * size, 2 * size, generator=torch.Generator().manual_seed(4), dtype=F64)
    pooled = analytic.pool(big, 2)
    assert z_scores(pooled, FAMILY.pooled_power(size, size, 2), bands).abs().max() < 4.5  # exact pooled law
    own = z_scores(pooled, FAMILY.power(size, size), bands)
    # not the family's own statistics at N: short in every band and channel (pooling removed variance that
    # the N-size model's normalisation puts back), far outside the error in the many-mode bands
    assert (own < -2).all() and own.abs().max() > 20
    assert FAMILY.pixel_std_ratio(size, size, 2) < 0.95
    # a family with no moving parameters and the consistent prior's std at its reference is consistent there
    flat = inconsistent.PerResolutionPrior(alpha_per_octave=0.0, knee_exponent=0.0)
    ratio = flat.pooled_power(size, size, 2) / flat.power(size, size)
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-9)  # only the scale differs
    assert flat.pixel_std_ratio(size, size, 2) ** 2 == pytest.approx(ratio.flatten()[0].item(), rel=1e-9)


def test_pyramid_level_scale_and_renoise():
    sig = torch.tensor([1.0, 0.9, 0.5, 0.1, 0.0], dtype=F64)
    for param in ("flow", "ve"):
        s = sig if param == "flow" else torch.tensor([14.6, 5.0, 1.0, 0.1, 0.0], dtype=F64)
        scaled = pyramid.to_ve(pyramid.level_sigmas(s, 2, param, scale=0.8), param)
        ve = pyramid.to_ve(s, param)
        finite = torch.isfinite(ve)
        assert torch.allclose(scaled[finite], ve[finite] / 1.6)
        assert torch.equal(pyramid.level_sigmas(s, 2, param), pyramid.level_sigmas(s, 2, param, scale=1.0))
    g = torch.Generator().manual_seed(5)
    x, d = (torch.randn(2, 3, 8, 8, generator=g, dtype=F64) for _ in range(2))
    noise = torch.randn(2, 3, 16, 16, generator=g, dtype=F64)
    clean, unit = pyramid.lift(x, d, 0.5, 2, noise, "flow")
    clean_r, unit_r = pyramid.lift(x, d, 0.5, 2, noise, "flow", rescale=0.9)
    assert torch.allclose(clean_r, clean * 0.9) and torch.equal(unit_r, unit)
    white = torch.randn(4000, 4, generator=g, dtype=F64)
    out = pyramid.renoise(white, 0.5, 2.0, torch.randn(4000, 4, generator=g, dtype=F64))
    assert out.var().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(pyramid.renoise(white, 0.5, 0.5, torch.zeros_like(white)), white)
    with pytest.raises(ValueError, match="only adds noise"):
        pyramid.renoise(white, 2.0, 0.5, white)
    assert pyramid.renoise_start(10, 3, torch.linspace(1, 0, 31, dtype=F64), "flow") == 7
    assert pyramid.renoise_start(2, 3, torch.linspace(1, 0, 31, dtype=F64), "flow") == 1  # never t = 1
