"""A resolution-consistent stationary Gaussian natural-image prior with an exact denoiser and PF-ODE solution.

Model (images in model space: 3 channels, values in about [-1, 1], mean 0):

- Colour: pixels are rotated into the orthonormal opponent basis `OPPONENT_BASIS` (Ruderman, Cronin & Chiao
  1998, "lαβ"): luminance (1, 1, 1)/√3, yellow-blue (1, 1, -2)/√6, red-green (1, -1, 0)/√2. The three opponent
  channels are independent; their variances are `colour` times the luminance variance (default (1, 0.3, 0.1):
  natural images are mostly luminance, with yellow-blue the stronger chromatic axis).
- Space, "the same scene at every resolution": each opponent channel is a continuous stationary Gaussian field
  on a fixed periodic domain, the Fourier series f(y, x) = Σ_k c_k exp(2πi (ky·y + kx·x)), y, x ∈ [0, 1), with
  integer wavenumbers k = (ky, kx) in cycles per image height / width and independent modes (c_-k = conj c_k) of
  variance E|c_k|² = S(ν) = A / (k0 + ν)^alpha. ν = sqrt((kx/W)² + (ky/H)²) · sqrt(H·W) is the radial frequency
  in cycles per geometric-mean side: the same for a grid and its pooled grid, and isotropic on non-square grids
  (square pixels). alpha = 2 is the classic 1/f² power spectrum of natural images (Field 1987; van der Schaaf &
  van Hateren 1996: 1.9-2.1). k0 = 1 cycle per image puts the knee at the scale of the whole image (at 128 px
  the old per-pixel knee f0 = 1/128).
- Pixels: an H x W image is the cell average (box filter) of the field over H x W equal cells. Cell averages
  compose, so `pool(x, f)` of an H x W draw IS an H/f x W/f draw of the same field, exactly.
- Scale: A is one constant per prior, set so that the luminance per-pixel std is `std` (default 0.5, typical of
  photographs mapped to [-1, 1]) on the reference grid `ref_size` x `ref_size` (128 x 128). Larger grids resolve
  more of the scene, so their pixel variance grows slowly (like natural images gaining detail) and smaller grids
  have less; the image mean (the DC mode) has std sqrt(A) / k0^(alpha/2) on every grid (0.11 with the defaults).

The per-mode variance of a grid (`NaturalImagePrior.power`). In 1-D, N cells: pixel n is
p_n = N ∫_{n/N}^{(n+1)/N} f = Σ_k c_k e^{2πi k n/N} B(k/N), B(u) = e^{iπu} sinc(u), sinc(u) = sin(πu)/(πu).
Its ortho DFT p̂_q = N^-½ Σ_n p_n e^{-2πi q n/N} keeps the k ≡ q (mod N): p̂_q = sqrt(N) Σ_{k ≡ q} c_k B(k/N).
Distinct residues use disjoint c_k, so the modes are uncorrelated (but for the conjugate pair q, -q of a real
image) with E|p̂_q|² = N Σ_m S(q + mN) sinc²(q/N + m). In 2-D, q in the symmetric range (fftfreq · size):
    P(qy, qx) = H·W · Σ_{(my, mx) ∈ Z²} S(ν(qy + my·H, qx + mx·W)) · sinc²(qx/W + mx) · sinc²(qy/H + my),
a stationary Gaussian on the discrete torus, so the denoiser and the PF ODE below act per mode.

The alias sum: the aliases with |my|, |mx| <= M = `ALIAS_ORDER` are summed term by term. Beyond, with
v = (qy/H + my, qx/W + mx) in cycles per pixel, sinc²(vx) = sin²(π qx/W) / (π vx)² (the same numerator for every
alias, likewise in y), so the two arms (|mx| > M, |my| <= M and its mirror) and the four corners (both > M) are
sums over unit cells of smooth functions of v; each is replaced by its integral (the midpoint rule), computed by
Gauss-Legendre quadrature with `TAIL_NODES` nodes. Plain truncation would be off by T_M ≈ 0.2-0.4 / M² relative
for alpha = 1 (0.1-0.5 / M³ for alpha = 2), so 1e-6 would need M ≈ 500. The midpoint rule leaves about
(1 + alpha)(2 + alpha) / (24 (M + ½)²) of T_M: the relative error is < 5e-7 at M = 24 for alpha >= 1 and
k0 <= sqrt(H·W) (the worst case, alpha = 1 and k0 = sqrt(H·W), measured: 2.6e-7 against M = 48, 4.7e-7 against a
brute-force sum to M = 1500, itself ~2e-7 short), ~1e-8 for the defaults.

Noising, per mode, with a(s) the signal scale:
    "eps"  (EDM / VE):         x = x0 + s·n          a(s) = 1
    "flow" (rectified flow):   x = (1 - s)·x0 + s·n  a(s) = 1 - s
so x̂ ~ N(0, v(s)) with v(s) = a(s)² P + s², and the exact denoiser (posterior mean) is the Wiener gain
E[x̂0 | x̂] = a P / (a² P + s²) · x̂.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

PARAMETRISATIONS = ("eps", "flow")
ALIAS_ORDER = 24  # M: aliases with |my|, |mx| <= M summed term by term, the rest by integrals
TAIL_NODES = 8  # Gauss-Legendre nodes per tail integral (per dimension)
CHUNK_ELEMENTS = 1 << 22  # aliases are batched into tensor ops of about this many float64 values

# rows: luminance, yellow-blue, red-green (orthonormal; x_opp = B @ x_rgb, x_rgb = Bᵀ @ x_opp)
OPPONENT_BASIS = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
    ],
    dtype=torch.float64,
)

Spectrum = Callable[[Tensor], Tensor]  # |v|² (cycles per pixel, squared) -> (k0 + ν)^-alpha


def pool(x: Tensor, factor: int) -> Tensor:
    """(B, C, H/factor, W/factor) mean of every factor x factor block of x (B, C, H, W): the prior's resolution map.

    The prior at H/factor x W/factor is the law of pool(x, factor) for x drawn at H x W (exactly; numerically
    to the alias sum's < 5e-7).
    Raises ValueError unless factor is a positive integer dividing H and W.
    """
    height, width = x.shape[-2:]
    if not isinstance(factor, int) or factor < 1 or height % factor or width % factor:
        raise ValueError(f"factor must be a positive integer dividing {height}x{width}, got {factor!r}")
    blocks = x.reshape(*x.shape[:-2], height // factor, factor, width // factor, factor)
    return blocks.mean(dim=(-3, -1))


def _gauss_legendre(n: int, device) -> tuple[Tensor, Tensor]:
    """(n,) nodes and (n,) weights of the n-point Gauss-Legendre rule on (0, 1) (Golub-Welsch), float64."""
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / torch.sqrt(4 * k**2 - 1)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return ((nodes + 1) / 2).to(device), vectors[0].square().to(device)


def _chunks(offsets: Tensor, per_offset: int) -> tuple[Tensor, ...]:
    """offsets in blocks whose temporaries hold about CHUNK_ELEMENTS values: few, large tensor ops."""
    return offsets.split(max(1, CHUNK_ELEMENTS // per_offset))


def _box(uy: Tensor, ux: Tensor, spectrum: Spectrum, offsets: Tensor) -> Tensor:
    """(h, w) Σ over |my|, |mx| <= M of s(v) sinc²(vx) sinc²(vy), v = u + m; uy (h, 1), ux (1, w), offsets (2M+1,)."""
    vx = ux[..., None] + offsets  # (1, w, 2M+1)
    weight_x = torch.sinc(vx) ** 2
    total = torch.zeros(uy.shape[0], ux.shape[1], dtype=torch.float64, device=ux.device)
    for block in _chunks(offsets, uy.shape[0] * vx.numel()):
        vy = uy + block[:, None, None]  # (c, h, 1)
        terms = spectrum(vx**2 + vy[..., None] ** 2) * weight_x  # (c, h, w, 2M+1)
        total += (torch.sinc(vy) ** 2 * terms.sum(-1)).sum(0)
    return total


def _arm_integral(spectrum: Spectrum, edge: Tensor, offset: Tensor, rule: tuple[Tensor, Tensor]) -> Tensor:
    """∫_edge^∞ s(t² + offset²) t⁻² dt = (1/edge) ∫_0^1 s(edge²/r² + offset²) dr (t = edge/r), broadcast."""
    nodes, weights = rule
    return (spectrum((edge[..., None] / nodes) ** 2 + offset[..., None] ** 2) * weights).sum(-1) / edge


def _arms(rows: Tensor, cols: Tensor, spectrum: Spectrum, offsets: Tensor, rule: tuple[Tensor, Tensor]) -> Tensor:
    """(h, w) Σ over |m_row| <= M, |m_col| > M of s(v) sinc²(v_row) sinc²(v_col); rows (h, 1), cols (1, w).

    sinc²(v_col) = sin²(π u_col) / (π v_col)²: the cells of m_col = ±(M+1), ±(M+2), ... cover |v_col| >= M + ½ ± u_col.
    """
    order = offsets.shape[0] // 2
    edges = (order + 0.5 + cols, order + 0.5 - cols)
    total = torch.zeros(rows.shape[0], cols.shape[1], dtype=torch.float64, device=cols.device)
    for block in _chunks(offsets, rows.shape[0] * cols.shape[1] * TAIL_NODES):
        v_row = rows + block[:, None, None]  # (c, h, 1)
        total += (torch.sinc(v_row) ** 2 * sum(_arm_integral(spectrum, e, v_row, rule) for e in edges)).sum(0)
    return total * torch.sin(math.pi * cols) ** 2 / math.pi**2


def _corners(uy: Tensor, ux: Tensor, spectrum: Spectrum, order: int, rule: tuple[Tensor, Tensor]) -> Tensor:
    """(h, w) Σ over |my|, |mx| > M of s(v) sinc²(vx) sinc²(vy): four 2-D integrals, Gauss-Legendre in both."""
    nodes, weights = rule
    total = torch.zeros(uy.shape[0], ux.shape[1], dtype=torch.float64, device=ux.device)
    for edge_y in (order + 0.5 + uy, order + 0.5 - uy):
        for edge_x in (order + 0.5 + ux, order + 0.5 - ux):
            t = (edge_x[..., None, None] / nodes[:, None]) ** 2
            r = (edge_y[..., None, None] / nodes) ** 2
            total += (spectrum(t + r) * weights[:, None] * weights).sum((-2, -1)) / (edge_x * edge_y)
    return total * (torch.sin(math.pi * uy) * torch.sin(math.pi * ux)) ** 2 / math.pi**4


def aliased_spectrum(uy: Tensor, ux: Tensor, alpha: float, k0: float, scale: float, order: int = ALIAS_ORDER) -> Tensor:
    """(h, w) Σ_{m ∈ Z²} (k0 + scale·|u + m|)^-alpha sinc²(ux + mx) sinc²(uy + my), for uy (h, 1), ux (1, w).

    u in cycles per pixel (float64), scale = sqrt(H·W); the |m| <= order aliases term by term, the rest by
    the tail integrals of the module docstring.
    """
    rule = _gauss_legendre(TAIL_NODES, ux.device)
    offsets = torch.arange(-order, order + 1, dtype=torch.float64, device=ux.device)

    def spectrum(v2: Tensor) -> Tensor:
        return (k0 + scale * v2.sqrt()) ** -alpha

    arms = _arms(uy, ux, spectrum, offsets, rule) + _arms(ux.T, uy.T, spectrum, offsets, rule).T
    return _box(uy, ux, spectrum, offsets) + arms + _corners(uy, ux, spectrum, order, rule)


@functools.lru_cache(maxsize=32)
def unit_power(height: int, width: int, alpha: float, k0: float, device: torch.device) -> Tensor:
    """(H, W) float64 per-mode variance P / A of the cell-averaged H x W grid (fft2 mode order; do not modify).

    P is even in qy and in qx, so it is computed on 0 <= q <= size // 2 and mirrored.
    """
    uy = torch.arange(height // 2 + 1, dtype=torch.float64, device=device)[:, None] / height
    ux = torch.arange(width // 2 + 1, dtype=torch.float64, device=device)[None, :] / width
    quadrant = height * width * aliased_spectrum(uy, ux, alpha, k0, math.sqrt(height * width))
    rows = torch.fft.fftfreq(height, 1 / height, device=device).abs().round().long()
    cols = torch.fft.fftfreq(width, 1 / width, device=device).abs().round().long()
    return quadrant[rows][:, cols]


def _rotate(basis: Tensor, x: Tensor) -> Tensor:
    """basis (3, 3) applied to the channels of x (B, 3, H, W), in float64."""
    flat = x.to(torch.float64).reshape(x.shape[0], 3, -1)
    return (basis.to(x.device) @ flat).view(x.shape)


def opponent_spectrum(x: Tensor) -> Tensor:
    """(B, 3, H, W) complex128: the ortho fft2 of `x` (B, 3, H, W) rotated into the opponent basis."""
    return torch.fft.fft2(_rotate(OPPONENT_BASIS, x), norm="ortho")


def filter_modes(x: Tensor, gain: Tensor) -> Tensor:
    """Multiply every opponent-basis Fourier mode of `x` (B, 3, H, W) by a real `gain`.

    gain: (3, H, W) or (B, 3, H, W), indexed like fft2 and symmetric under q -> -q (as the prior's power),
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


class GaussianFieldPrior:
    """Sampling, the exact denoiser and the exact PF-ODE solve of any stationary Gaussian image prior.

    A subclass gives `power(height, width, device)`: the (3, H, W) float64 per-mode variance of the ortho fft2
    in the opponent basis (fft2 mode order, even under q -> -q), and `colour` (one entry per opponent channel).
    Everything below acts per Fourier mode on that power, whatever the grid, so it holds for priors that are
    consistent under pooling (NaturalImagePrior) and for those that are not (inconsistent.py).
    """

    colour: tuple[float, float, float]

    def power(self, height: int, width: int, device=None) -> Tensor:
        raise NotImplementedError

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


@dataclass(frozen=True)
class NaturalImagePrior(GaussianFieldPrior):
    """The resolution-consistent Gaussian image prior of the module docstring (see there for the defaults).

    alpha: spectral slope; k0: knee in cycles per image (geometric-mean side); std: luminance per-pixel std on
    the ref_size x ref_size grid; colour: variance multipliers of the opponent channels.
    """

    alpha: float = 2.0
    k0: float = 1.0
    std: float = 0.5
    colour: tuple[float, float, float] = (1.0, 0.3, 0.1)
    ref_size: int = 128

    def __post_init__(self):
        if not (self.alpha > 0 and self.k0 > 0 and self.std > 0 and self.ref_size >= 1):
            raise ValueError(f"need alpha, k0, std > 0 and ref_size >= 1, got {self}")

    def power(self, height: int, width: int, device=None) -> Tensor:
        """(3, H, W) float64 per-mode variance P of the ortho fft2 in the opponent basis (fft2 mode order).

        Luminance: the alias sum of the module docstring with S = A / (k0 + ν)^alpha, A such that the mean
        over the modes of the ref_size x ref_size grid is std²; the chromatic channels are that times
        colour[1], colour[2].
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        reference = unit_power(self.ref_size, self.ref_size, self.alpha, self.k0, torch.device("cpu")).mean()
        luminance = unit_power(height, width, self.alpha, self.k0, device) * (self.std**2 / reference.item())
        colour = torch.tensor(self.colour, dtype=torch.float64, device=device)
        return colour[:, None, None] * luminance
