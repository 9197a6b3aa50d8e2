"""Pyramid sampling on the host's guiders: one `guider.sample()` per level, one schedule, one progress bar.

Each stage runs at its own size, so masks, area and mask conditioning, ControlNet and concat-conditioned
models are resolved per stage by the host (HOST.md section 2, design B). The math is in
core/samplers/pyramid.py; the node classes are in nodes/sampling.py.
"""

from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..core.samplers.pyramid import level_noise, level_sigmas, lift, padded_size, plan_stages, pool
from ..kernels.cuda_graphs import store as graph_store
from . import models
from .cuda_graphs import GraphedForward

log = logging.getLogger("pyra")
UPSAMPLERS = ("bicubic", "bilinear", "nearest")


class PyramidError(ValueError):
    """A pyramid request that cannot run; the message says what to change."""


def start_noise_gain(model_patcher, sigmas: torch.Tensor, parametrisation: str) -> float:
    """Direct sampling starts eps models at sqrt(1 + s^2) n when sigmas[0] is the model's sigma_max."""
    ms = model_patcher.get_model_object("model_sampling")
    s0, s_max = float(sigmas[0]), float(ms.sigma_max)
    if parametrisation != "ve" or not (abs(s0 - s_max) <= 1e-5 * s_max or s0 > s_max):
        return 1.0
    return float((1 + s0**2) ** 0.5 / s0)


def scale_areas(conds: dict, scale: float) -> dict:
    """Absolute latent-pixel areas times `scale` (percentage areas resolve per stage by themselves).

    Sizes round up and offsets down, so a scaled area always covers what the original covered.
    """
    if scale == 1:
        return conds
    out = {}
    for key, cond_list in conds.items():
        scaled = []
        for c in cond_list:
            area = c.get("area")
            if area is not None and area[0] != "percentage":
                n = len(area) // 2
                sizes, offsets = list(area[:n]), list(area[n:])
                for i in (n - 2, n - 1):
                    sizes[i] = max(1, math.ceil(sizes[i] * scale - 1e-9))
                    offsets[i] = math.floor(offsets[i] * scale + 1e-9)
                c = {**c, "area": tuple(sizes + offsets)}
            scaled.append(c)
        out[key] = scaled
    return out


def _pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if not (pad_h or pad_w):
        return x
    y = x.reshape(-1, 1, *x.shape[-2:]).float()
    y = torch.nn.functional.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
    return y.reshape(*x.shape[:-2], *size).to(x.dtype)


def _padded_noise(noise: torch.Tensor, size: tuple[int, int], seed: int) -> torch.Tensor:
    """The sampler's noise, extended with fresh seeded noise where the size was rounded up."""
    if tuple(noise.shape[-2:]) == size:
        return noise
    g = torch.Generator().manual_seed(int(seed or 0) + 7919)
    out = torch.randn(*noise.shape[:-2], *size, generator=g, dtype=noise.dtype).to(noise.device)
    out[..., : noise.shape[-2], : noise.shape[-1]] = noise
    return out


class StageCallback:
    """Offsets the step index into one progress bar and keeps the last (x, denoised) the sampler reported."""

    def __init__(self, callback, offset: int, total: int):
        self.callback, self.offset, self.total = callback, offset, total
        self.step, self.x, self.denoised = -1, None, None

    def __call__(self, step, x0, x, _total):
        self.step, self.x, self.denoised = step, x, x0
        comfy.model_management.throw_exception_if_processing_interrupted()
        if self.callback is not None:
            self.callback(min(self.offset + step, self.total - 1), x0, x, self.total)


def min_level_size(model_patcher) -> int:
    dm = model_patcher.get_model_object("diffusion_model")
    patch = getattr(dm, "patch_size", 1)
    patch = max(patch) if isinstance(patch, (tuple, list)) else int(patch or 1)
    return max(2, patch)


def _room_for_full_stage(patcher, shape) -> None:
    """Release kept CUDA graphs when the full-size stage (host's estimate, CFG batch) would not fit beside them."""
    device = patcher.load_device
    if not isinstance(device, torch.device) or device.type != "cuda":
        return
    mm = comfy.model_management
    needed = patcher.model.memory_required([2 * shape[0], *shape[1:]]) + mm.minimum_inference_memory()
    graph_store.make_room(device, needed, mm.get_free_memory(device))


def require_same_latent(high, low) -> None:
    """The two experts of one model share the latent and the parametrisation; else PyramidError."""
    kinds = [(type(m.model.latent_format).__name__, models.parametrisation(m, "pyramid sampling", PyramidError))
             for m in (high, low)]
    if kinds[0] != kinds[1]:
        raise PyramidError(f"the low-noise model ({kinds[1][0]} latent, {kinds[1][1]}) does not match the model "
                           f"({kinds[0][0]} latent, {kinds[0][1]}): connect the two experts of one model, such as "
                           "Wan 2.2 A14B's high-noise and low-noise files, or leave low_noise_model empty")


def expert_split(sig: torch.Tensor, switch_sigma: float) -> int:
    """Steps of a stage's sigmas (its last entry is where it ends) that the high-noise expert runs: those whose
    model evaluation is at sigma >= switch_sigma. Sigmas fall, so they are a prefix."""
    return int((sig[:-1] >= switch_sigma).sum())


def pyramid_sample(guider, noise, latent_image, sampler, sigmas, levels, upsample="bicubic", denoise_mask=None,
                   callback=None, disable_pbar=False, seed=None, noise_correction=True, cuda_graphs=True,
                   low_noise=None):
    """Run `guider` once per pyramid stage over one schedule; returns the latent (VAE space), like guider.sample.

    low_noise: (guider of the low-noise expert, switch sigma) for two-expert models (Wan 2.2 A14B): within every
    stage, the steps evaluated at a sigma below the switch run on the low-noise expert. The sigma compared is
    the one the model is evaluated at, the level's (a coarse level sees less noise than the schedule's step, so
    it switches earlier in the schedule); a stage that spans the switch is split there, so no level runs a step
    on the wrong expert. CUDA graphs are off with two experts (the store keeps one model's graphs).

    cuda_graphs: the low-resolution stages replay the model's forward from CUDA graphs (host/cuda_graphs.py),
    where it is launch-bound; the full-resolution stage always runs eagerly. Graphs are kept for the next run
    while the model's weights stay in place and the full-resolution stage fits beside them; a run with
    cuda_graphs off releases them.
    `noise_correction=False` only exists to measure what the lift's noise correction is worth.
    """
    patcher = guider.model_patcher
    if low_noise is not None and cuda_graphs:
        log.info("Pyra pyramid: two experts, the low-resolution stages run without CUDA graphs")
        cuda_graphs = False
    if not cuda_graphs:
        graph_store.release_kept_graphs()
    param = models.parametrisation(patcher, "pyramid sampling", PyramidError)
    stages = plan_stages(len(sigmas) - 1, levels)
    height, width = latent_image.shape[-2:]
    size = padded_size(height, width, stages[0].factor)
    if size != (height, width):
        log.info("Pyra pyramid: latent %sx%s padded to %sx%s to divide by %s", width, height, size[1], size[0],
                 stages[0].factor)
    smallest = min(size) // stages[0].factor
    if smallest < min_level_size(patcher):
        raise PyramidError(f"the 1/{stages[0].factor} level of a {width}x{height} latent is {smallest} latent "
                           "pixels: smaller than one model patch. Use a smaller factor or a larger image.")
    full_noise = _padded_noise(noise, size, seed)
    latent = _pad(latent_image, size)
    mask = None
    if denoise_mask is not None:
        mask = _pad(comfy.utils.reshape_mask(denoise_mask, latent_image.shape).to(latent), size)
    fmt = patcher.model.latent_format
    total = len(sigmas) - 1 + len(stages) - 1
    offset, unit_noise, clean = 0, None, None
    guiders = [guider] if low_noise is None else [guider, low_noise[0]]
    originals = [(g.original_conds, g.model_options) for g in guiders]
    try:
        for i, stage in enumerate(stages):
            last = i == len(stages) - 1
            f = stage.factor
            sig = level_sigmas(sigmas[stage.start: stage.end + 1], f, param)
            if not last:
                sig = torch.cat([sig, sig.new_zeros(1)])
            stage_latent = pool(latent, f) if f > 1 else latent
            stage_mask = pool(mask, f) if mask is not None and f > 1 else mask
            if i == 0:
                stage_noise = level_noise(full_noise, f) * start_noise_gain(patcher, sigmas, param)
            else:
                stage_noise = unit_noise
                lifted = fmt.process_out(clean)
                stage_latent = lifted if stage_mask is None else lifted * stage_mask + stage_latent * (1 - stage_mask)
            if last:
                stage_noise, stage_latent = stage_noise[..., :height, :width], stage_latent[..., :height, :width]
                stage_mask = denoise_mask
            if last and cuda_graphs:
                _room_for_full_stage(patcher, stage_noise.shape)
            for g, (conds, _) in zip(guiders, originals, strict=True):
                g.original_conds = scale_areas(conds, 1 / f)
            graphs = GraphedForward(patcher) if cuda_graphs and not last else None
            guider.model_options = originals[0][1] if graphs is None else graphs.install(originals[0][1])
            for g, part, part_noise in _expert_parts(guiders, sig, low_noise, stage_noise):
                cb = StageCallback(callback, offset, total)
                out = g.sample(part_noise, stage_latent, sampler, part, denoise_mask=stage_mask, callback=cb,
                               disable_pbar=disable_pbar, seed=seed)
                offset += len(part) - 1
                stage_latent = out
            guider.model_options = originals[0][1]
            if graphs is not None:
                log.info("Pyra pyramid 1/%s stage, CUDA graphs: %s", f, graphs.summary())
            if last:
                return out
            if cb.step != len(part) - 2 or cb.x is None:
                raise PyramidError("this sampler does not report its state at every step, which the pyramid "
                                   "needs at each level change: use euler, heun, dpmpp_2m, uni_pc or similar")
            nxt = stages[i + 1].factor
            clean, unit_noise = lift(cb.x, cb.denoised, float(sig[-2]), f // nxt,
                                     level_noise(full_noise, nxt).to(cb.x), param, upsample, noise_correction)
    finally:
        for g, (conds, options) in zip(guiders, originals, strict=True):
            g.original_conds, g.model_options = conds, options


def _expert_parts(guiders, sig: torch.Tensor, low_noise, noise: torch.Tensor):
    """(guider, sigmas, noise) of each part of a stage: the whole stage on one model, or its high-noise steps on
    the first expert and the rest on the second, which continues from the first's state (no noise added: the
    host returns that state as a latent with its leftover noise, as KSamplerAdvanced does)."""
    if low_noise is None:
        return [(guiders[0], sig, noise)]
    split = expert_split(sig, low_noise[1])
    if split == 0:
        return [(guiders[1], sig, noise)]
    if split == len(sig) - 1:
        return [(guiders[0], sig, noise)]
    return [(guiders[0], sig[:split + 1], noise), (guiders[1], sig[split:], torch.zeros_like(noise))]


class PyramidGuider:
    """A GUIDER for SamplerCustomAdvanced: wraps any guider and samples coarse-to-fine."""

    def __init__(self, inner, levels: list[tuple[int, float]], upsample: str, cuda_graphs: bool = True):
        self.inner, self.levels, self.upsample, self.cuda_graphs = inner, levels, upsample, cuda_graphs
        self.model_patcher = inner.model_patcher
        self.model_options = inner.model_options
        self.original_conds = inner.original_conds

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        return pyramid_sample(self.inner, noise, latent_image, sampler, sigmas, self.levels, self.upsample,
                              denoise_mask, callback, disable_pbar, seed, cuda_graphs=self.cuda_graphs)
