"""Structure-guided high resolution (DiffuseHigh): upscale, re-noise, denoise with the reference's low band."""

from __future__ import annotations

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..core.samplers.highres import parse_per_stage, parse_scales
from .highres_sampling import GUIDANCE_MODES, UPSCALE_METHODS, HighResError, HighResSettings, highres_sample
from .host_features import advanced, search_aliases
from .previews import coarse_callback
from .validation import refuse_non_finite


class PyraDiffuseHigh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDiffuseHigh",
            **search_aliases("hires fix", "high resolution", "upscale", "diffusehigh"),
            display_name="Structure-Guided High-Res (Pyra)",
            category="Pyra/sampling",
            description=(
                "Training-free high resolution (DiffuseHigh): from a base latent, each stage upscales, sharpens, "
                "re-noises and denoises while the first steps keep the base's low wavelet band, so the "
                "composition stays and the model adds detail. Works for eps, v and flow models and video."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model that made the base latent."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning, as for the base image."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent", tooltip="The base result (a clean latent, e.g. from KSampler)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; stage i uses seed + i."),
                io.String.Input("scales", default="2",
                                tooltip="Target sizes as multiples of the base, one per stage: '2', or '1.5, 2' "
                                        "for two stages. Sizes round to what the model accepts (logged)."),
                io.Int.Input("steps", default=15, min=1, max=1000, tooltip="Denoising steps per stage."),
                io.Float.Input("denoise", default=0.3, min=0.01, max=1.0, step=0.01,
                               tooltip="Re-noise level as KSampler's denoise: the stage runs the last `steps` "
                                       "of a steps/denoise schedule (DiffuseHigh: 15 of 50 = 0.3)."),
                io.String.Input("cfg", default="7.0",
                                tooltip="CFG per stage: one number, or one per stage ('10, 7'); the last repeats."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="The sampler of every stage."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The schedule the stage's sigmas are cut from."),
                io.Int.Input("guidance_steps", default=5, min=0, max=1000,
                             tooltip="Steps at the start of each stage whose prediction takes the reference's "
                                     "low band (DiffuseHigh: 5-7). 0 turns guidance off (plain hires fix)."),
                io.Combo.Input("guidance_mode", options=list(GUIDANCE_MODES), default="latent",
                               tooltip="latent: swap the band on the latent (no VAE work, the default). pixel: "
                                       "decode, swap in pixels, encode, at each guided step (needs the VAE; "
                                       "slower)."),
                io.Combo.Input("wavelet", **advanced(), options=["db4", "haar"], default="db4",
                               tooltip="The wavelet whose low band is kept. db4 (DiffuseHigh's) is smooth. haar on "
                                       "a 2x stage keeps the base's 2x2 block means exactly during guided steps "
                                       "(pair it with more guided steps, e.g. 10 of 15)."),
                io.Float.Input("guidance_strength", **advanced(), default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="1 replaces the low band; below 1 blends toward it."),
                io.Float.Input("sharpen", **advanced(), default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Unsharp-mask strength on the upscaled reference; counters the blur and "
                                       "grey that plain upscaling leaves (DiffuseHigh: 1.0)."),
                io.Float.Input("renoise", **advanced(), default=1.0, min=0.5, max=1.5, step=0.01,
                               tooltip="Noise multiplier at the re-noise; slightly above 1 (1.02) adds detail."),
                io.Combo.Input("upscale_method", options=list(UPSCALE_METHODS), default="latent",
                               tooltip="latent: bicubic on the latent. pixels: decode, bicubic, encode (needs "
                                       "the VAE). upscale model: decode, the model, encode (needs both)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Needed for pixel guidance or pixel/upscale-model upscaling."),
                io.UpscaleModel.Input("upscale_model", optional=True,
                                      tooltip="An upscale model (UpscaleModelLoader) for 'upscale model'."),
            ],
            outputs=[io.Latent.Output(tooltip="The high-resolution latent (decode it with the model's VAE).")],
        )

    @classmethod
    def validate_inputs(cls, scales: str = "2") -> bool | str:
        """Only `scales` (nodes/validation.py: the host checks every input a validator does not name); cfg,
        which has one value per stage, is parsed first thing in execute."""
        try:
            parse_scales(scales)
        except ValueError as err:
            return str(err)
        return True

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, scales, steps, denoise, cfg, sampler_name,
                scheduler, guidance_steps, guidance_mode, wavelet, guidance_strength, sharpen, renoise,
                upscale_method, vae=None, upscale_model=None) -> io.NodeOutput:
        refuse_non_finite(denoise=denoise, guidance_strength=guidance_strength, sharpen=sharpen, renoise=renoise)
        stage_scales = parse_scales(scales)
        settings = HighResSettings(
            scales=stage_scales, cfgs=parse_per_stage(cfg, len(stage_scales), "cfg"), steps=steps,
            denoise=denoise, sampler_name=sampler_name, scheduler=scheduler, guidance_steps=guidance_steps,
            guidance_mode=guidance_mode, wavelet=wavelet, guidance_strength=guidance_strength, sharpen=sharpen,
            renoise=renoise, upscale_method=upscale_method)
        callback = coarse_callback(latent_preview.prepare_callback(model, len(stage_scales) * steps))
        try:
            samples = highres_sample(model, positive, negative, latent, seed, settings, vae, upscale_model,
                                     callback, not comfy.utils.PROGRESS_BAR_ENABLED)
        except HighResError as err:
            raise ValueError(f"PyraDiffuseHigh: {err}") from None
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        if "noise_mask" in latent:
            out["noise_mask"] = latent["noise_mask"]
        return io.NodeOutput(out)
