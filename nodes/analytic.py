"""The analytic natural-image model as a real ComfyUI MODEL (pixel space, exact denoiser)."""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from ..core.analytic import NaturalImagePrior

DEFAULT = NaturalImagePrior()
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


class PyraAnalyticModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraAnalyticModel",
            display_name="Analytic Natural-Image Model (Pyra)",
            category="Pyra/demo",
            description=(
                "A diffusion MODEL whose denoiser is exact: a stationary Gaussian with the power spectrum of "
                "natural images, P(k) ~ 1/(k0+|k|)^alpha, the same scene at every resolution. It samples "
                "textures with natural-image statistics in "
                "pixel space and is the reference for judging samplers. Start from "
                "EmptyChromaRadianceLatentImage and decode with the pixel_space VAE."
            ),
            inputs=[
                io.Combo.Input("parametrisation", options=list(PARAMETRISATIONS), default="flow",
                               tooltip="flow: rectified flow (SD3/Flux/Wan-style sampling, sigma in [0,1]). "
                                       "eps: noise prediction with the SD1.5 schedule (sigma up to 14.6)."),
                io.Float.Input("spectral_slope", default=DEFAULT.alpha, min=0.5, max=4.0, step=0.05,
                               tooltip="alpha in P(k) ~ 1/(k0+|k|)^alpha. Natural images: about 2. "
                                       "Higher gives smoother, cloudier textures."),
                io.Float.Input("knee", default=DEFAULT.k0, min=0.01, max=1024.0, step=0.01,
                               tooltip="k0 in cycles per image: structures larger than 1/k0 of the image stop "
                                       "gaining power. The image is the same scene at every resolution."),
                io.Float.Input("contrast", default=DEFAULT.std, min=0.01, max=2.0, step=0.01,
                               tooltip="Per-pixel standard deviation of brightness in model space ([-1, 1]) "
                                       f"at {DEFAULT.ref_size}x{DEFAULT.ref_size}; larger images gain detail."),
            ],
            outputs=[io.Model.Output(tooltip="A pixel-space MODEL for the stock sampler nodes.")],
        )

    @classmethod
    def execute(cls, parametrisation: str, spectral_slope: float, knee: float, contrast: float) -> io.NodeOutput:
        prior = NaturalImagePrior(alpha=spectral_slope, k0=knee, std=contrast)
        return io.NodeOutput(analytic_model_patcher(prior, parametrisation))
