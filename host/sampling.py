"""The KSampler preamble of the host, once: latent channels, noise, a CFG guider, the preview callback, and the
output latent, as the stock KSampler node builds them (nodes.py `common_ksampler`, comfy/sample.py)."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from .previews import coarse_callback


def sampler_names() -> list[str]:
    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    return list(comfy.samplers.KSampler.SCHEDULERS)


def sampler_object(name: str):
    return comfy.samplers.sampler_object(name)


def schedule_sigmas(model, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The last `steps` + 1 sigmas of a `steps / denoise`-step schedule, as BasicScheduler gives them (CPU)."""
    total = steps if denoise >= 1.0 else int(steps / max(denoise, 1e-4))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total)
    return sigmas[-(steps + 1):].cpu()


@dataclass
class KSamplerRun:
    """What a KSampler-like node samples with: the latent (channels fixed), its noise, a CFG guider, the preview
    callback, and whether the progress bar is off."""

    latent: torch.Tensor
    noise: torch.Tensor
    guider: comfy.samplers.CFGGuider
    callback: object
    disable_pbar: bool


def ksampler_run(model, latent_image: dict, seed: int, positive, negative, cfg: float, preview_steps: int,
                 coarse_previews: bool = False) -> KSamplerRun:
    """The stock KSampler's setup for `latent_image` (batch_index honoured); `coarse_previews` shrinks previews
    of large latents (host/previews.py)."""
    latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
    noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    callback = latent_preview.prepare_callback(model, preview_steps)
    if coarse_previews:
        callback = coarse_callback(callback)
    return KSamplerRun(latent, noise, guider, callback, progress_bar_disabled())


def progress_bar_disabled() -> bool:
    return not comfy.utils.PROGRESS_BAR_ENABLED


def preview_callback(model, steps: int, coarse: bool = True):
    callback = latent_preview.prepare_callback(model, steps)
    return coarse_callback(callback) if coarse else callback


def output_latent(latent_image: dict, samples: torch.Tensor, drop: tuple[str, ...] = ()) -> dict:
    """`latent_image` with `samples` (on the host's intermediate device) in place of its samples; keys in `drop`
    are left out."""
    out = {k: v for k, v in latent_image.items() if k not in drop}
    out["samples"] = samples.to(comfy.model_management.intermediate_device())
    return out
