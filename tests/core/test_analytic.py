"""The analytic natural-image model is a correct oracle: exact draws, exact denoiser, exact PF-ODE solution.

Every band check below is shown to be able to fail: a biased or too-coarse sampler is rejected by the
same helper that accepts an accurate one, and the standard error is checked against an empirical spread.
The resolution map is checked the same way: pooled draws and the pooled covariance match the prior at the
pooled grid, and decimation (the same aliases without the box filter) is rejected by the same checks.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
analytic = importlib.import_module("pyra_pack.core.analytic")
prior_module = importlib.import_module("pyra_pack.core.analytic.prior")
NaturalImagePrior = analytic.NaturalImagePrior
band_power, band_ratio, radial_bands = analytic.band_power, analytic.band_ratio, analytic.radial_bands
expected_eps_ratio, band_standard_error = analytic.expected_eps_ratio, analytic.band_standard_error
pool = analytic.pool

F64 = torch.float64
PRIOR = NaturalImagePrior()
SD_SIGMA_MAX, SD_SIGMA_MIN = 14.6146, 0.0292


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def eps_sigmas(steps: int = 200) -> list[float]:
    """VE sigmas log-spaced over the SD range, then 0."""
    sigmas = torch.exp(torch.linspace(math.log(SD_SIGMA_MAX), math.log(SD_SIGMA_MIN), steps, dtype=F64))
    return [*sigmas.tolist(), 0.0]


def flow_sigmas(steps: int) -> list[float]:
    return torch.linspace(1.0, 0.0, steps + 1, dtype=F64).tolist()


def sample_heun(denoise, x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """k-diffusion sample_heun: Euler predictor, trapezoidal corrector, plain Euler for the last step to 0.

    d = (x - denoised) / sigma is the PF-ODE derivative for both the eps (VE) and the rectified-flow
    parametrisation (for flow it is the velocity E[n - x0 | x]).
    """
    for sigma, sigma_next in itertools.pairwise(sigmas):
        d = (x - denoise(x, sigma)) / sigma
        euler = x + d * (sigma_next - sigma)
        if sigma_next == 0:
            x = euler
        else:
            d_next = (euler - denoise(euler, sigma_next)) / sigma_next
            x = x + (d + d_next) / 2 * (sigma_next - sigma)
    return x


def sample_euler(denoise, x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    for sigma, sigma_next in itertools.pairwise(sigmas):
        x = x + (x - denoise(x, sigma)) / sigma * (sigma_next - sigma)
    return x


def crn_deviation(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Worst |generated / exact - 1| over bands and channels, with common random numbers (one helper for
    the accurate and the broken samplers: the accurate ones must be < 1 %, the broken ones > 5 %)."""
    return (band_ratio(samples, PRIOR, reference=reference) - 1).abs().max().item()


def within_standard_errors(power: torch.Tensor, expected: torch.Tensor, error: torch.Tensor, k: float = 4.0):
    assert power.shape == expected.shape == error.shape
    z = (power - expected) / error
    assert z.abs().max() < k, f"band power off by {z.abs().max():.1f} standard errors:\n{power}\nvs\n{expected}"


# --- the model itself -------------------------------------------------------------------------------


def alias_sum(prior, height: int, width: int, qy: int, qx: int, order: int) -> float:
    """P(qy, qx) / A of the luminance, the module docstring's alias sum term by term over |my|, |mx| <= order."""
    m = torch.arange(-order, order + 1, dtype=F64)
    ky, kx = qy + m[:, None] * height, qx + m[None, :] * width
    nu = torch.sqrt((kx / width) ** 2 + (ky / height) ** 2) * math.sqrt(height * width)
    terms = (prior.k0 + nu) ** -prior.alpha * torch.sinc(kx / width) ** 2 * torch.sinc(ky / height) ** 2
    return height * width * terms.sum().item()


def test_opponent_basis_and_colour():
    basis = prior_module.OPPONENT_BASIS
    torch.testing.assert_close(basis @ basis.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(basis[0], torch.full((3,), 3**-0.5, dtype=F64), rtol=0, atol=1e-15)
    for height, width in [(32, 32), (48, 40), (33, 31)]:
        power = PRIOR.power(height, width)
        torch.testing.assert_close(
            power[1:] / power[0],
            torch.tensor(PRIOR.colour[1:], dtype=F64)[:, None, None].expand(2, height, width),
            rtol=1e-12,
            atol=0,
        )


@pytest.mark.parametrize("alpha,order", [(2.0, 300), (1.0, 1500)])
def test_power_is_the_cell_averaged_alias_sum(alpha, order):
    """Against the formula summed term by term far out (the DC mode, A·H·W / k0^alpha exactly, gives A).

    alpha = 1 is the slowest alias sum (plain truncation error ~ 1 / M²), so there only three modes.
    """
    prior, (height, width) = NaturalImagePrior(alpha=alpha), (6, 5)
    power = prior.power(height, width)[0]
    amplitude = power[0, 0].item() / (height * width) * prior.k0**alpha
    modes = [(qy, qx) for qy in range(-3, 3) for qx in range(-2, 3)]
    for qy, qx in modes if alpha == 2.0 else [(1, 0), (-3, -2), (2, 1)]:
        expected = amplitude * alias_sum(prior, height, width, qy, qx, order)
        assert power[qy % height, qx % width].item() == pytest.approx(expected, rel=1e-6), (qy, qx)
    truncated = amplitude * alias_sum(prior, height, width, -3, -2, prior_module.ALIAS_ORDER)
    assert power[3, 3].item() / truncated - 1 > 1e-6  # plain truncation at ALIAS_ORDER would fail this test


@pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("k0", [1.0, 128.0])
def test_alias_truncation_error_is_below_1e_6(alpha, k0):
    """M = ALIAS_ORDER against 2M over the whole frequency square, on a 128x128 grid (k0 <= sqrt(H·W))."""
    uy = torch.linspace(0, 0.5, 11, dtype=F64)[:, None]
    ux = torch.linspace(0, 0.5, 9, dtype=F64)[None, :]
    order = prior_module.ALIAS_ORDER
    coarse = prior_module.aliased_spectrum(uy, ux, alpha, k0, 128.0, order)
    fine = prior_module.aliased_spectrum(uy, ux, alpha, k0, 128.0, 2 * order)
    assert (coarse / fine - 1).abs().max() < 1e-6


def test_one_scene_at_every_resolution():
    """A is one constant: pixel variance std² on the reference grid, the same mean (DC) variance on every grid."""
    for prior in (PRIOR, NaturalImagePrior(alpha=1.5, k0=2.0, std=0.3, ref_size=64)):
        assert prior.power(prior.ref_size, prior.ref_size)[0].mean().item() == pytest.approx(prior.std**2, rel=1e-12)
        dc = [prior.power(h, w)[0, 0, 0].item() / (h * w) for h, w in [(128, 128), (64, 48), (33, 31), (1, 1)]]
        assert dc == pytest.approx([dc[0]] * 4, rel=1e-12)
    pixel_std = [PRIOR.power(n, n)[0].mean().sqrt().item() for n in (32, 64, 128, 256)]  # 0.38 0.44 0.50 0.55
    assert pixel_std == sorted(pixel_std) and pixel_std[2] == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError):
        NaturalImagePrior(k0=0.0)  # S(0) = A / k0^alpha: the image mean needs k0 > 0


def test_radial_bands_cover_every_band():
    for height, width in [(32, 32), (48, 40), (33, 31), (128, 128), (8, 8), (6, 5)]:
        index = radial_bands(height, width, 8)
        assert index[0, 0] == -1 and (index.flatten()[1:] >= 0).all()
        assert (torch.bincount(index.flatten()[1:], minlength=8) >= 1).all(), (height, width)
        fy, fx = torch.fft.fftfreq(height, dtype=F64)[:, None], torch.fft.fftfreq(width, dtype=F64)
        radius = (fy**2 + fx**2).sqrt().flatten()[1:]
        order = torch.argsort(radius)
        assert (torch.diff(index.flatten()[1:][order]) >= 0).all(), "bands are not monotone in |f|"
    with pytest.raises(ValueError):
        radial_bands(3, 3, 8)


@pytest.mark.parametrize("height,width", [(32, 32), (48, 40), (33, 31)])
def test_samples_match_the_prior(height, width):
    n = 128
    samples = PRIOR.sample(n, height, width, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert samples.shape == (n, 3, height, width)
    error = band_standard_error(PRIOR, height, width, n)
    within_standard_errors(band_power(samples, 8, PRIOR), torch.ones_like(error), error)
    luminance = samples.mean(1) * math.sqrt(3)
    assert luminance.std().item() == pytest.approx(PRIOR.power(height, width)[0].mean().sqrt().item(), rel=0.05)


def test_band_standard_error_matches_the_spread():
    """The conjugate-pair accounting matters: treating the M modes as independent would be sqrt(2) too small."""
    groups, n, height, width = 400, 4, 16, 16
    draws = PRIOR.sample(groups * n, height, width, generator=torch.Generator().manual_seed(2), dtype=F64)
    powers = torch.stack([band_power(chunk, 8, PRIOR) for chunk in draws.split(n)])
    spread = powers.std(0) / band_standard_error(PRIOR, height, width, n)
    assert ((spread - 1).abs() < 0.15).all(), spread


# --- the exact denoiser -----------------------------------------------------------------------------


def dense_covariance(height: int, width: int, prior=PRIOR) -> torch.Tensor:
    """(3HW, 3HW) covariance of the prior in the RGB pixel basis, C = Σ_k u_k u_kᵀ ⊗ Fᴴ diag(P_k) F."""

    def dft(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=F64)
        return torch.exp(-2j * math.pi * torch.outer(k, k) / n) / math.sqrt(n)

    fourier = torch.kron(dft(height), dft(width))  # acts on row-major flattened (H, W) images
    power = prior.power(height, width).reshape(3, -1).to(torch.complex128)
    basis = prior_module.OPPONENT_BASIS
    blocks = [(fourier.conj().T @ torch.diag(p) @ fourier) for p in power]
    assert max(b.imag.abs().max().item() for b in blocks) < 1e-14
    return sum(torch.kron(torch.outer(basis[k], basis[k]), blocks[k].real) for k in range(3))


@pytest.mark.parametrize(
    "parametrisation,sigma", [("eps", 0.05), ("eps", 0.7), ("eps", 3.0), ("flow", 0.1), ("flow", 0.5), ("flow", 0.9)]
)
def test_denoiser_is_the_dense_posterior_mean(parametrisation, sigma):
    height, width = 6, 5
    cov = dense_covariance(height, width)
    scale = 1.0 if parametrisation == "eps" else 1.0 - sigma
    x = gaussian((2, 3, height, width), seed=3)
    flat = x.reshape(2, -1).T
    noisy_cov = scale**2 * cov + sigma**2 * torch.eye(cov.shape[0], dtype=F64)
    expected = (scale * cov @ torch.linalg.solve(noisy_cov, flat)).T.reshape(x.shape)
    torch.testing.assert_close(PRIOR.denoise(x, sigma, parametrisation), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("parametrisation", ["eps", "flow"])
def test_denoiser_per_sample_sigma(parametrisation):
    x = gaussian((3, 3, 12, 10), seed=4)
    sigmas = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float32)
    batched = PRIOR.denoise(x, sigmas, parametrisation)
    for i, sigma in enumerate(sigmas.tolist()):
        torch.testing.assert_close(batched[i : i + 1], PRIOR.denoise(x[i : i + 1], sigma, parametrisation))
    assert not torch.allclose(batched[0], batched[1])
    with pytest.raises(ValueError):
        PRIOR.denoise(x, torch.ones(2), parametrisation)


def test_denoiser_boundaries_and_dtype():
    x = gaussian((2, 3, 9, 7), seed=5).float()
    for parametrisation in ("eps", "flow"):
        out = PRIOR.denoise(x, 0.0, parametrisation)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    assert PRIOR.denoise(x, 1.0, "flow").abs().max() == 0
    assert PRIOR.denoise(x, 1e4, "eps").abs().max() < 1e-4
    with pytest.raises(ValueError):
        PRIOR.denoise(x, 0.5, "v")


# --- the resolution map: pool -----------------------------------------------------------------------


def box_response(size: int, factor: int) -> torch.Tensor:
    """(size,) |G(k)|² in fft order, G(k) = (1/f) Σ_{i<f} exp(-2πi k i / size): the DFT of the f-tap box average."""
    k, i = torch.arange(size, dtype=F64)[:, None], torch.arange(factor, dtype=F64)
    return torch.exp(-2j * math.pi * k * i / size).mean(-1).abs().square()


def pooled_power(power: torch.Tensor, factor: int, box: bool = True) -> torch.Tensor:
    """(C, H/f, W/f) per-mode variance of pool(x, f) for x of per-mode variance `power` (C, H, W), exactly.

    Per axis (N = n·f): the pooled signal's ortho DFT is ŷ(q) = f^-½ Σ_{a<f} G(q + a·n) x̂(q + a·n) (box
    average, then keep every f-th sample). Distinct modes of x are uncorrelated (a pair q, -q shares a pooled
    mode only when that mode is self-conjugate, and there E[x̂(q)²] = 0), so Var ŷ(q) = (1/f) Σ_a |G|² P, and
    in 2-D the sum runs over the f² big-grid modes q + (a·h, b·w). box=False drops G: plain decimation.
    """
    channels, height, width = power.shape
    gain = box_response(height, factor)[:, None] * box_response(width, factor) if box else 1.0
    blocks = (gain * power).reshape(channels, factor, height // factor, factor, width // factor)
    return blocks.sum(dim=(1, 3)) / factor**2


def test_pool_is_block_averaging():
    x = gaussian((2, 3, 12, 8), seed=10)
    torch.testing.assert_close(pool(x, 4), torch.nn.functional.avg_pool2d(x, 4), rtol=0, atol=1e-15)
    assert torch.equal(pool(x, 1), x)
    for factor in (0, 3, 8, 2.0):
        with pytest.raises(ValueError):
            pool(x, factor)


@pytest.mark.parametrize("prior", [PRIOR, NaturalImagePrior(alpha=1.0, k0=3.0)], ids=["default", "alpha1"])
@pytest.mark.parametrize("factor", [2, 4])
def test_pooled_prior_is_the_prior_at_the_pooled_grid(prior, factor):
    """The exact covariance of pool(x) in the Fourier domain equals the power at H/f x W/f (to the alias sum's 1e-6)."""
    height, width = 64, 48
    small = prior.power(height // factor, width // factor)
    pooled = pooled_power(prior.power(height, width), factor)
    assert (pooled / small - 1).abs().max() < 1e-6
    decimated = pooled_power(prior.power(height, width), factor, box=False)
    assert (decimated / small - 1).abs().max() > 0.1  # the same check rejects decimation


@pytest.mark.parametrize("height,width,factor", [(8, 6, 2), (12, 8, 4)])
def test_pool_maps_the_dense_covariance(height, width, factor):
    """In the pixel basis, with pool as a matrix Q: Q C_big Qᵀ = C_small (independent of the Fourier derivation)."""
    pixels = 3 * height * width
    matrix = pool(torch.eye(pixels, dtype=F64).reshape(pixels, 3, height, width), factor).reshape(pixels, -1).T
    small = dense_covariance(height // factor, width // factor)
    pooled = matrix @ dense_covariance(height, width) @ matrix.T
    torch.testing.assert_close(pooled, small, rtol=1e-6, atol=1e-6 * small.abs().max().item())


@pytest.mark.parametrize("factor", [2, 4])
def test_pooled_draws_have_the_statistics_of_the_pooled_grid(factor):
    n, height, width = 256, 64, 48
    draws = PRIOR.sample(n, height, width, generator=torch.Generator().manual_seed(11), dtype=F64)
    error = band_standard_error(PRIOR, height // factor, width // factor, n)
    within_standard_errors(band_power(pool(draws, factor), 8, PRIOR), torch.ones_like(error), error)
    decimated = band_power(draws[..., ::factor, ::factor], 8, PRIOR)
    assert ((decimated - 1) / error).abs().max() > 10  # the same check rejects decimation


# --- exact PF-ODE solutions vs accurate and broken samplers -----------------------------------------


def test_flow_heun_matches_the_exact_solution():
    noise = gaussian((64, 3, 64, 64), seed=6)
    sigmas = flow_sigmas(200)
    samples = sample_heun(lambda x, s: PRIOR.denoise(x, s, "flow"), noise, sigmas)
    error = band_standard_error(PRIOR, 64, 64, noise.shape[0])
    within_standard_errors(band_ratio(samples, PRIOR), torch.ones_like(error), error)
    # 0.7 % off at most (the top red-green band: the last Euler step returns D(x, 0.005), not x(0))
    assert crn_deviation(samples, PRIOR.pf_ode_solution(noise, 1.0, "flow")) < 0.01


def test_eps_heun_matches_the_exact_solution_and_shows_the_low_band_deficit():
    noise = gaussian((16, 3, 128, 128), seed=7)
    sigmas = eps_sigmas(200)
    x_start = noise * math.sqrt(1 + SD_SIGMA_MAX**2)  # the host's EPS noise_scaling with max_denoise
    samples = sample_heun(lambda x, s: PRIOR.denoise(x, s, "eps"), x_start, sigmas)
    expected = expected_eps_ratio(PRIOR, 128, 128, SD_SIGMA_MAX, sigma_min=SD_SIGMA_MIN)
    error = band_standard_error(PRIOR, 128, 128, noise.shape[0]) * expected
    within_standard_errors(band_power(samples, 8, PRIOR), expected, error)
    # the last Euler step returns D(x, sigma_min): against the solve to 0 the top red-green band is 21 % short,
    # against the exact solve with that same last step the Heun result is within 0.03 %
    exact = PRIOR.pf_ode_solution(noise, SD_SIGMA_MAX, "eps", sigma_min=SD_SIGMA_MIN)
    assert crn_deviation(samples, exact) < 0.01
    # the deficit itself, sampled with common random numbers against exact prior draws from the same noise:
    truth = PRIOR.pf_ode_solution(noise, 1.0, "flow")  # = noise coloured by sqrt(P), a draw from the prior
    assert band_ratio(samples, PRIOR, reference=truth)[0, 0] < 0.9


def test_lowest_band_deficit_of_eps_sampling():
    """Starting from N(0, 1 + s²) instead of the model's N(0, P + s²) loses power where P > 1."""
    ratio = expected_eps_ratio(PRIOR, 128, 128, SD_SIGMA_MAX)
    assert ratio[0, 0] < 0.9  # 0.830 with the defaults (alpha 2, k0 1, std 0.5 at 128x128)
    assert ratio[0, 0] < ratio[1, 0] < ratio[2, 0] < 1  # luminance < yellow-blue < red-green < 1
    assert (ratio[:, -1] - 1).abs().max() < 0.01  # the high bands have P << 1: no deficit
    truncated = expected_eps_ratio(PRIOR, 128, 128, SD_SIGMA_MAX, sigma_min=SD_SIGMA_MIN)
    assert truncated[2, -1] < 0.9  # stopping at sigma_min loses the faint red-green fine detail


def test_broken_samplers_fail_the_same_check():
    noise = gaussian((16, 3, 32, 32), seed=8)
    x_start = noise * math.sqrt(1 + SD_SIGMA_MAX**2)
    biased = sample_heun(lambda x, s: 0.95 * PRIOR.denoise(x, s, "eps"), x_start, eps_sigmas(200))
    exact = PRIOR.pf_ode_solution(noise, SD_SIGMA_MAX, "eps", sigma_min=SD_SIGMA_MIN)
    assert crn_deviation(biased, exact) > 0.05
    sigmas = flow_sigmas(10)
    coarse = sample_euler(lambda x, s: PRIOR.denoise(x, s, "flow"), noise, sigmas)
    assert crn_deviation(coarse, PRIOR.pf_ode_solution(noise, 1.0, "flow", sigma_min=sigmas[-2])) > 0.05


@pytest.mark.parametrize("sigma_min", [0.0, SD_SIGMA_MIN])
def test_expected_eps_ratio_matches_monte_carlo(sigma_min):
    n, height, width = 256, 48, 40
    noise = gaussian((n, 3, height, width), seed=9)
    solved = PRIOR.pf_ode_solution(noise, SD_SIGMA_MAX, "eps", sigma_min=sigma_min)
    expected = expected_eps_ratio(PRIOR, height, width, SD_SIGMA_MAX, sigma_min=sigma_min)
    error = band_standard_error(PRIOR, height, width, n) * expected
    within_standard_errors(band_power(solved, 8, PRIOR), expected, error)
