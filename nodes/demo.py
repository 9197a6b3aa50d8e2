"""The Pyra/demo nodes: the analytic natural-image model as a MODEL, and conditioning for the demo models, which
have no text encoder."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.analytic import NaturalImagePrior
from ..host.analytic import (
    PARAMETRISATIONS,
    analytic_model_patcher,
)
from ..host.demo_models import DEMO_CONDITIONING, demo_conditioning

DEFAULT = NaturalImagePrior()










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






class PyraDemoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDemoConditioning",
            display_name="Demo Conditioning (Pyra, demo models only)",
            category="Pyra/demo",
            description=(
                "Only for Pyra's tiny demo models and the analytic model, which have no text encoder: emits "
                "seeded random conditioning of the shape the family expects. With a real model use CLIPTextEncode."
            ),
            inputs=[
                io.Combo.Input("family", options=list(DEMO_CONDITIONING), default="analytic",
                               tooltip="Which demo model the conditioning is for (only for demo models: "
                                       "real models need CLIPTextEncode)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Stands in for the prompt text: a different seed is a different 'prompt'."),
                io.Float.Input("scale", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Multiplies the random tensors (0 gives an all-zero, 'empty' prompt)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="Only for Pyra demo models.")],
        )

    @classmethod
    def execute(cls, family: str, seed: int, scale: float) -> io.NodeOutput:
        return io.NodeOutput(demo_conditioning(family, seed, scale))
