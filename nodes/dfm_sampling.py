"""The DFM stage-wise sampler as a host SAMPLER function: core/dfm/sampler.py driven through the host's guider,
so conditioning, CFG on every level, model loading, previews and interruption work as for any sampler."""

from __future__ import annotations

import comfy.model_management
import torch

from ..core.dfm.levels import level_factor, merge, pack, split, unpack
from ..core.dfm.sampler import sample_dfm
from ..core.samplers.pyramid import level_noise
from .dfm_model import DFMError, runner_of


def _start_levels(x, latent, noise, sigma0: float, levels: int, seed: int) -> list[torch.Tensor]:
    """Every level at sigma0: the finest takes the sampler's noise (one level: exactly the host's start)."""
    if levels == 1:
        return [x]
    lat = split(latent.float(), levels)
    out = []
    for i, part in enumerate(lat):
        f = level_factor(i, levels)
        if i == levels - 1:
            n = noise.float()
        else:
            g = torch.Generator().manual_seed(int(seed) + 101 * (i + 1))
            n = level_noise(torch.randn(noise.shape, generator=g), f).to(noise.device)
        out.append((sigma0 * n + (1 - sigma0) * part).to(x.dtype))
    return out


@torch.no_grad()
def sample_dfm_host(model, x, sigmas, extra_args=None, callback=None, disable=None, plan=None, solver="euler"):
    """Decomposable flow matching sampler (Haji-Ali et al. 2025) for a DFM MODEL: k-diffusion contract."""
    extra_args = dict(extra_args or {})
    if extra_args.get("denoise_mask") is not None:
        raise DFMError("DFM sampling does not take a noise mask (inpainting): remove SetLatentNoiseMask")
    runner = runner_of(model.inner_model.model_patcher)
    if plan.levels != runner.levels:
        raise DFMError(f"this DFM model has {runner.levels} levels but the stage plan has {plan.levels}: give one "
                       "step count per level")
    parts = _start_levels(x, model.latent_image, model.noise, float(sigmas[0]), runner.levels,
                          extra_args.get("seed") or 0)
    sizes = [tuple(p.shape[2:]) for p in parts]
    options = extra_args["model_options"].setdefault("transformer_options", {})
    s_in = x.new_ones([x.shape[0]])

    def denoise(levels, sig, mask):
        comfy.model_management.throw_exception_if_processing_interrupted()
        options["pyra_dfm"] = {"sizes": sizes, "sigmas": sig, "mask": mask}
        newest = sig[int(mask.sum()) - 1]
        return unpack(model(pack(levels), newest.to(x) * s_in, **extra_args), sizes)

    def report(n, levels, denoised, preview):
        if callback is not None:
            callback({"x": merge(levels), "i": n, "sigma": sigmas[min(n, len(sigmas) - 1)],
                      "sigma_hat": sigmas[min(n, len(sigmas) - 1)], "denoised": preview})

    return merge(sample_dfm(denoise, parts, plan, sigmas, solver, report)).to(x.dtype)
