"""The analytic natural-image model as a real ComfyUI MODEL: a pixel-space model config and BaseModel whose
denoiser is the exact one of core/analytic/."""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import torch

from ..core.analytic import NaturalImagePrior

PARAMETRISATIONS = {"flow": comfy.model_base.ModelType.FLOW, "eps": comfy.model_base.ModelType.EPS}

class AnalyticModelConfig(comfy.supported_models_base.BASE):
    """Pixel-space, 3-channel model config; eps uses the SD1.5 schedule, flow the SD3-style discrete flow."""

    latent_format = comfy.latent_formats.ChromaRadiance
    supported_inference_dtypes = (torch.float32,)
    memory_usage_factor = 0.01

    def __init__(self):
        super().__init__({"disable_unet_model_creation": True})

class _PriorModule(torch.nn.Module):
    """Stands where a network would: no weights, float32 (BaseModel.get_dtype reads `.dtype`)."""

    dtype = torch.float32

    def forward(self, *args, **kwargs):
        raise RuntimeError("the analytic model is evaluated by AnalyticBaseModel._apply_model")

class AnalyticBaseModel(comfy.model_base.BaseModel):
    """BaseModel whose denoiser is the exact posterior mean of a NaturalImagePrior.

    `_apply_model` receives the noisy x (B, 3, H, W) and sigma (B,) and returns the clean estimate,
    so every host sampler, guider, wrapper and sigma schedule works unchanged.
    """

    def __init__(self, prior: NaturalImagePrior, parametrisation: str):
        super().__init__(AnalyticModelConfig(), model_type=PARAMETRISATIONS[parametrisation])
        self.diffusion_model = _PriorModule()
        self.prior = prior
        self.parametrisation = parametrisation

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kw):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"The Pyra analytic model works on 3-channel pixel-space latents, got shape {tuple(x.shape)}. "
                "Start from EmptyChromaRadianceLatentImage (or VAEEncode with the pixel_space VAE)."
            )
        sigma = t.reshape(-1).float().expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1).float()
        return self.prior.denoise(x.float(), sigma, self.parametrisation)

def analytic_model_patcher(prior: NaturalImagePrior, parametrisation: str) -> comfy.model_patcher.ModelPatcher:
    model = AnalyticBaseModel(prior, parametrisation)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def analytic_guider(prior: NaturalImagePrior, parametrisation: str, shift: float = 3.0):
    """(patcher, a CFGGuider at cfg 1 with empty conditioning) over the analytic model; flow runs with SD3's
    timestep shift `shift`. What the quality benchmarks and tests sample with."""
    import comfy.samplers

    patcher = analytic_model_patcher(prior, parametrisation)
    if parametrisation == "flow":
        patcher.get_model_object("model_sampling").set_parameters(shift=shift)
    guider = comfy.samplers.CFGGuider(patcher)
    cond = [[torch.zeros(1, 1, 8), {}]]
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    return patcher, guider
