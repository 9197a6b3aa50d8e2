"""Pyramid sampling: the early, high-noise steps run at reduced resolution, then the state is lifted.

Notation. A noisy latent is written in variance-exploding (VE) form x = x0 + s * n, n ~ N(0, I):
eps/v models sample in that form directly (s = sigma); a rectified-flow state x_t = (1 - t) x0 + t n is
(1 - t) times the VE state with s = t / (1 - t). Average pooling by an integer factor f (over H and W)
maps the VE state to pool(x0) + (s / f) n', with n' = f * pool(n) again unit white noise. So a level of
factor f sees the SAME state at noise level s / f: its schedule is the full-resolution schedule (computed
for the final size, as Flux/SD3 shifts require) with every VE noise level divided by f.

The lift back up. With U the nearest-neighbour upsampling, P = U pool is the orthogonal projection onto
piecewise-constant images, so x = P x + (I - P) x splits into independent parts for white noise.
Given the level's state x' = d' + s' e' (d' its denoised estimate, e' = (x' - d') / s' the implied noise):

    clean = U d' + (I - P) smooth_up(d')        noise = U e' / f + (I - P) n_full

and the full-resolution state clean + (f s') noise has:
  * P-part exactly U x' (the level's whole state, signal AND in-flight noise, is kept; nothing is re-drawn);
  * (I - P)-part: the smooth upsampler's detail of the clean estimate plus fresh detail noise at the full
    noise level f s'. Upsampling correlates noise (U e' / f has variance 1/f^2 per pixel, all of it in P):
    adding (I - P) n_full, whose variance is 1 - 1/f^2 per pixel, makes the noise white with variance 1
    again (P and I - P are orthogonal projections, so their covariances add to I).
Passing the same full-resolution noise that direct sampling would use gives n' = f pool(n_full) at the
start and (I - P) n_full at the lift: the pyramid is coupled to direct sampling (common random numbers).

All of this assumes the level's model IS the pooled full-resolution model. A model trained at several sizes is
not: each size has its own normalisation and spectrum (core/analytic/inconsistent.py). Two options, both off
by default (the exact behaviour above):

* Level scale r (`level_sigmas(..., scale=r)`, `lift(..., rescale=r / r_next)`). When the level's model was
  trained on data that are the pooled full-size data divided by r (r < 1 for a model that normalises every
  size to the same pixel variance: pooling removes variance), the pooled state x0p + (s / f) n is r times
  the state x0p / r + (s / (f r)) n of that model: the level runs on the state / r at VE noise s / (f r), and
  its clean estimate is multiplied by r again at the lift. For a flow model this is a resolution-dependent
  timestep shift of the level by 1 / (f r) in VE terms (t / (1 - t) scaled), with the state rescaled to
  match; a shift alone (relabelling t, state kept) rescales the implied VE state by a t-dependent factor.
* Corrective re-noise (`renoise`): the lifted state at VE level s_L gets fresh white noise up to s_R > s_L
  (the schedule `renoise_steps` steps earlier), and the next level re-runs those steps. Every mode whose
  power is small against s_R^2 is then decided by the next (finer) model again, so errors that a coarse,
  different model left there are washed out; modes far above s_R^2 keep what the coarse level made.

A third, also off by default: the detail top-up (`detail_topup`). The lift's detail modes (frequencies the level
could not hold) carry the smooth upsampler's detail of the clean estimate plus noise at s, where the full-size
state carries the data's own detail, power P + s^2 per mode. From there the sampler ends with too little power
there, P / (P + s^2) less per mode (a Gaussian mode's flow maps marginal to data). One evaluation of the
full-resolution model at the lifted state measures P: per radial band its denoiser shrinks the state by
g = P / (P + s^2), whatever power the state holds. Fresh noise then fills each detail band up to P + s^2.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..multilevel.pyramids import upsample
from ..text_lists import split_items

PARAMETRISATIONS = ("ve", "flow")


@dataclass(frozen=True)
class Stage:
    """One level of a ladder: `factor` (1 = full resolution) runs schedule steps [start, end)."""

    factor: int
    start: int
    end: int


def parse_ladder(text: str) -> list[tuple[int, float]]:
    """'4:0.35, 2:0.25' -> [(4, 0.35), (2, 0.25)]: factor:fraction of steps, coarse to fine."""
    levels = []
    for item in split_items(text):
        try:
            factor, frac = item.split(":")
            levels.append((int(factor), float(frac)))
        except ValueError as err:
            raise ValueError(f"ladder item {item!r} is not 'factor:fraction' (e.g. '2:0.4')") from err
        if not math.isfinite(levels[-1][1]):
            raise ValueError(f"ladder item {item!r}: the fraction must be a finite number (e.g. '2:0.4')")
    factors = [f for f, _ in levels]
    if any(f < 2 for f in factors) or factors != sorted(factors, reverse=True) or len(set(factors)) != len(factors):
        raise ValueError(f"ladder factors must be integers >= 2, coarse to fine, each once: got {factors}")
    if any(a % b for a, b in itertools.pairwise(factors)):
        raise ValueError(f"each ladder factor must be a multiple of the next (e.g. 4 then 2): got {factors}")
    if any(fr <= 0 for _, fr in levels) or sum(fr for _, fr in levels) >= 1:
        raise ValueError("ladder fractions must be > 0 and leave some steps for full resolution (sum < 1)")
    return levels


def plan_stages(n_steps: int, levels: list[tuple[int, float]]) -> list[Stage]:
    """Split `n_steps` schedule steps into stages; every stage gets at least one step, the last is full size."""
    if n_steps < len(levels) + 1:
        raise ValueError(f"{n_steps} steps cannot feed {len(levels) + 1} pyramid stages: use more steps")
    stages, start, acc = [], 0, 0.0
    for i, (factor, frac) in enumerate(levels):
        acc += frac
        end = min(max(round(acc * n_steps), start + 1), n_steps - (len(levels) - i))
        stages.append(Stage(factor, start, end))
        start = end
    stages.append(Stage(1, start, n_steps))
    return stages


def to_ve(sigma: Tensor, parametrisation: str) -> Tensor:
    """VE noise level s of a schedule sigma (flow: t / (1 - t), infinite at t = 1)."""
    if parametrisation == "ve":
        return sigma
    if parametrisation == "flow":
        return torch.where(sigma >= 1, torch.full_like(sigma, math.inf), sigma / (1 - sigma).clamp_min(1e-30))
    raise ValueError(f"unknown parametrisation {parametrisation!r}")


def from_ve(ve: Tensor, parametrisation: str) -> Tensor:
    if parametrisation == "ve":
        return ve
    return torch.where(torch.isinf(ve), torch.ones_like(ve), ve / (1 + ve))


def signal_scale(sigma: Tensor | float, parametrisation: str) -> Tensor | float:
    """alpha(sigma): the state is alpha * (x0 + s n); 1 for VE, 1 - t for flow."""
    return 1.0 if parametrisation == "ve" else 1 - sigma


def level_sigmas(sigmas: Tensor, factor: int, parametrisation: str, scale: float = 1.0) -> Tensor:
    """The full-resolution schedule as a level of `factor` sees it: VE noise levels divided by `factor`.

    scale r != 1: the level's model knows the pooled data divided by r (module docstring), so it is told
    VE noise s / (factor r) and sampled on the state divided by r.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"level scale must be a positive number, got {scale}")
    return from_ve(to_ve(sigmas.double(), parametrisation) / (factor * scale), parametrisation).to(sigmas.dtype)


def _as_4d(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """(B, C, [T,] H, W) -> (B*, C, H, W) so spatial ops apply per frame; returns the original shape."""
    if x.ndim == 4:
        return x, tuple(x.shape)
    if x.ndim == 5:
        b, c, t, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), tuple(x.shape)
    raise ValueError(f"expected a 4-D image or 5-D video latent, got shape {tuple(x.shape)}")


def _from_4d(y: Tensor, shape: tuple[int, ...]) -> Tensor:
    if len(shape) == 4:
        return y
    b, c, t = shape[:3]
    return y.reshape(b, t, c, *y.shape[-2:]).permute(0, 2, 1, 3, 4)


def pool(x: Tensor, factor: int) -> Tensor:
    """Average pooling of H and W by `factor` ((B, C, [T,] H, W), H and W divisible)."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"size {tuple(x.shape[-2:])} is not divisible by {factor}")
    y, shape = _as_4d(x)
    return _from_4d(F.avg_pool2d(y, factor), shape)


def unpool(x: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upsampling of H and W by `factor` (the adjoint of pool, times factor^2)."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def detail(x: Tensor, factor: int) -> Tensor:
    """(I - P) x: what pooling by `factor` discards (zero block means)."""
    return x - unpool(pool(x, factor), factor)


def smooth_upsample(x: Tensor, factor: int, mode: str = "bicubic") -> Tensor:
    """x resized by an integer `factor` (core.multilevel.pyramids.upsample), in x's dtype."""
    return upsample(x, (x.shape[-2] * factor, x.shape[-1] * factor), mode).to(x.dtype)


def level_noise(noise: Tensor, factor: int) -> Tensor:
    """Unit white noise of a level, coupled to full-resolution `noise`: factor * pool(noise)."""
    return pool(noise, factor) * factor


def lift(x_low: Tensor, denoised_low: Tensor, sigma_low: float, factor: int, noise: Tensor,
         parametrisation: str, upsample: str = "bicubic", noise_correction: bool = True,
         rescale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Lift a level's state at `sigma_low` to `factor` times the resolution (module docstring).

    x_low, denoised_low: (B, C, [T,] h, w) state and denoised estimate; noise: (B, C, [T,] h*f, w*f) unit
    noise for the new detail. Returns (clean, unit_noise) at full size such that the full-resolution
    state at VE level factor * s_low is clean + factor * s_low * unit_noise. `noise_correction=False`
    leaves out the detail noise (the upsampled noise stays correlated): only to show that it matters.
    rescale = r / r_next (level scales, module docstring) multiplies the clean part: the state then is the
    next level's, at VE level factor * s_low * rescale (what level_sigmas gives it at the same step).
    """
    s_low = float(to_ve(torch.tensor(float(sigma_low), dtype=torch.float64), parametrisation))
    if not math.isfinite(s_low) or s_low <= 0:
        raise ValueError(f"cannot lift at sigma {sigma_low}: the level must stop strictly inside the schedule")
    x_ve = x_low.double() / signal_scale(float(sigma_low), parametrisation)
    d = denoised_low.double()
    eps_low = (x_ve - d) / s_low
    clean = (unpool(d, factor) + detail(smooth_upsample(d, factor, upsample), factor)) * rescale
    unit = unpool(eps_low, factor) / factor
    if noise_correction:
        unit = unit + detail(noise.double(), factor)
    return clean.to(x_low.dtype), unit.to(x_low.dtype)


TOPUP_BANDS = 24   # radial bands of the detail top-up's estimate (equal width in cycles per pixel)


def detail_topup(clean: Tensor, unit: Tensor, denoised: Tensor, ve: float, factor: int, noise: Tensor) -> Tensor:
    """Unit noise of the lifted state clean + ve * unit with each detail band's missing power filled in.

    denoised: the full-resolution model's clean estimate at that state (VE form, as `clean`); factor: the lift's;
    noise: fresh unit white noise of unit's shape. Per radial band and channel (2-D fft over H, W; statistics over
    the batch and frames), g = <D, X> / <X, X> on the state X gives the data's power P = g ve^2 / (1 - g); the
    modes the level could not hold (a frequency of at least 1 / (2 factor) cycles per pixel along H or W) get
    fresh noise of power max(0, P + ve^2 - <X, X>), <X, X> over those modes of the band. The other modes are
    returned unchanged. Module docstring.
    """
    if not (math.isfinite(ve) and ve > 0):
        raise ValueError(f"the detail top-up needs a finite positive noise level, got {ve}")
    h, w = clean.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=clean.device).abs()[:, None].expand(h, w)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=clean.device).abs()[None, :].expand(h, w)
    band = ((fy.square() + fx.square()).sqrt() / math.sqrt(0.5) * TOPUP_BANDS).long().clamp(max=TOPUP_BANDS - 1)
    held = torch.maximum(fy, fx) < 0.5 / factor

    def spectrum(t: Tensor) -> Tensor:   # (C, N, H, W): channels first, batch and frames flattened
        y, _ = _as_4d(t.double())
        return torch.fft.fft2(y, norm="ortho").transpose(0, 1)

    def band_mean(v: Tensor, modes: Tensor) -> Tensor:   # (C, H, W) over `modes` (H, W) -> (C, TOPUP_BANDS)
        index = band[modes]
        sums = v.new_zeros(v.shape[0], TOPUP_BANDS).index_add_(1, index, v[:, modes])
        return sums / torch.bincount(index, minlength=TOPUP_BANDS).clamp(min=1)

    u = spectrum(unit)
    x = spectrum(clean) + ve * u
    power = x.abs().square().mean(1)
    every = torch.ones_like(held)
    g = (band_mean((spectrum(denoised) * x.conj()).real.mean(1), every) / band_mean(power, every).clamp(min=1e-30))
    g = g.clamp(0.0, 0.999)
    missing = (g * ve**2 / (1 - g) + ve**2 - band_mean(power, ~held)).clamp(min=0)   # over the detail modes
    fill = (missing.sqrt() / ve)[:, band] * (~held)   # (C, H, W)
    y = torch.fft.ifft2((u + spectrum(noise) * fill[:, None]).transpose(0, 1), norm="ortho").real
    return _from_4d(y, tuple(unit.shape)).to(unit.dtype)


def renoise(unit: Tensor, ve_from: float, ve_to: float, noise: Tensor) -> Tensor:
    """Unit noise of the state clean + ve_to * result, from clean + ve_from * unit plus fresh `noise` (unit, white).

    (ve_from unit + sqrt(ve_to^2 - ve_from^2) noise) / ve_to: white again when unit is; ve_to = ve_from is
    the identity. Raises ValueError unless 0 < ve_from <= ve_to < inf.
    """
    if not (0 < ve_from <= ve_to < math.inf):
        raise ValueError(f"re-noise needs 0 < {ve_from} <= {ve_to} < inf: it only adds noise")
    extra = math.sqrt(ve_to**2 - ve_from**2)
    return ((unit.double() * ve_from + noise.double() * extra) / ve_to).to(unit.dtype)


def renoise_start(stage_start: int, renoise_steps: int, sigmas: Tensor, parametrisation: str) -> int:
    """Schedule index a lifted stage restarts from: `renoise_steps` earlier, never at infinite VE noise."""
    start = max(stage_start - renoise_steps, 0)
    while start < stage_start and not math.isfinite(float(to_ve(sigmas[start].double(), parametrisation))):
        start += 1
    return start


def padded_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Smallest size >= (height, width) divisible by `factor`."""
    return -(-height // factor) * factor, -(-width // factor) * factor


def predicted_speedup(stages: list[Stage], area_exponent: float = 1.0, attention_share: float = 0.0) -> float:
    """Cost ratio direct / pyramid when a step at 1/f resolution costs f^-2 (linear) or f^-4 (attention).

    `attention_share`: the fraction of a full-resolution step spent in token-quadratic attention.
    """
    def step_cost(f: int) -> float:
        tokens = f ** (-2 * area_exponent)
        return (1 - attention_share) * tokens + attention_share * tokens**2

    n = stages[-1].end
    extra = sum(step_cost(s.factor) for s in stages[:-1])  # each lower level evaluates once more at its end
    pyramid = sum((s.end - s.start) * step_cost(s.factor) for s in stages) + extra
    return n / pyramid
