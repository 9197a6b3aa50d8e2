"""The Pyra/sampling nodes: pyramid sampling (a GUIDER and a KSampler), DiffuseHigh two-stage high resolution,
and searched step schedules."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.samplers.highres import parse_per_stage, parse_scales
from ..core.samplers.pyramid import parse_ladder
from ..core.samplers.schedule_families import FAMILIES
from ..core.samplers.searched_schedules import load_store
from ..host.highres import GUIDANCE_MODES, UPSCALE_METHODS, HighResError, HighResSettings, highres_sample
from ..host.pyramid import UPSAMPLERS, PyramidGuider, pyramid_sample, require_same_latent
from ..host.sampling import (
    ksampler_run,
    output_latent,
    preview_callback,
    progress_bar_disabled,
    sampler_names,
    sampler_object,
    schedule_sigmas,
    scheduler_names,
)
from ..host.schedules import (
    searched_sigmas,
)
from ..host.validation import refuse_non_finite
from .schema import advanced, search_aliases

LADDER_TOOLTIP = (
    "Coarse-to-fine levels as factor:fraction of the steps, e.g. '2:0.4' runs the first 40% of steps at 1/2 "
    "resolution, '4:0.35, 2:0.25' runs 35% at 1/4 then 25% at 1/2; the rest runs at full resolution. Exact "
    "when the model at the smaller size behaves as the full-size model of the pooled image; a model normalised "
    "per resolution shifts the coarse bands (analytic test: 23% for '2:0.4', 55% for '4:0.35, 2:0.25'). On a "
    "small Flux-class model trained by the project the worst band moved 53-80% ('2:0.4') and 72-334% "
    "('4:0.35, 2:0.25'): the image changes, so compare with direct sampling on your model. Deeper ladders are "
    "faster and drift more."
)


def _ladder_input(default: str = "2:0.4") -> io.String.Input:
    return io.String.Input("ladder", default=default, tooltip=LADDER_TOOLTIP)


def _upsample_input() -> io.Combo.Input:
    return io.Combo.Input("upsample", **advanced(), options=list(UPSAMPLERS), default="bicubic",
                          tooltip="How the clean estimate's detail is upsampled at a level change. The coarse "
                                  "part and the noise statistics are exact whatever you choose.")


def _graphs_input() -> io.Boolean.Input:
    return io.Boolean.Input("cuda_graphs", **advanced(), default=True, optional=True,
                            tooltip="Replay the model from CUDA graphs in the low-resolution stages, where a "
                                    "forward is bound by kernel launches (same result, faster). Runs eagerly "
                                    "where a graph cannot (CPU, low VRAM, attention patches). The graphs (and "
                                    "their activation memory) are kept for the next run of the same model while "
                                    "its weights stay in place and the full-size stage has room (at most 1/8 of "
                                    "the GPU's memory); a run with this off releases them.")


def _validate_ladder(ladder: str) -> bool | str:
    try:
        parse_ladder(ladder)
    except ValueError as err:
        return str(err)
    return True


class PyraPyramidGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidGuider",
            **search_aliases("pyramid sampling", "coarse to fine", "fast sampling"),
            display_name="Pyramid Guider (Pyra)",
            category="Pyra/sampling",
            description=(
                "Runs the early, high-noise steps at reduced resolution, then lifts the state to full resolution "
                "with exact noise statistics. Wraps any GUIDER; plug into SamplerCustomAdvanced with any SAMPLER "
                "and SIGMAS (computed for the final size)."
            ),
            inputs=[
                io.Guider.Input("guider", tooltip="The guider to run at every level (CFGGuider, BasicGuider, ...)."),
                _ladder_input(),
                _upsample_input(),
                _graphs_input(),
            ],
            outputs=[io.Guider.Output(tooltip="A coarse-to-fine guider for SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, ladder: str) -> bool | str:
        return _validate_ladder(ladder)

    @classmethod
    def execute(cls, guider, ladder: str, upsample: str, cuda_graphs: bool = True) -> io.NodeOutput:
        return io.NodeOutput(PyramidGuider(guider, parse_ladder(ladder), upsample, cuda_graphs))


class PyraPyramidSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidSampler",
            **search_aliases("pyramid sampling", "coarse to fine", "fast sampling", "ksampler"),
            display_name="Pyramid KSampler (Pyra)",
            category="Pyra/sampling",
            description="KSampler with coarse-to-fine pyramid sampling: early steps at reduced resolution.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (eps, v or flow)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same noise as the stock KSampler."),
                io.Int.Input("steps", default=30, min=2, max=10000, tooltip="Steps of the full schedule."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, applied at every level."),
                io.Combo.Input("sampler_name", options=sampler_names(),
                               tooltip="The sampler run at every level."),
                io.Combo.Input("scheduler", options=scheduler_names(),
                               tooltip="The schedule, computed for the final resolution."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (its size is the final size)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run, as in KSampler."),
                _ladder_input(),
                _upsample_input(),
                _graphs_input(),
                io.Model.Input("low_noise_model", optional=True,
                               tooltip="Two-expert models (Wan 2.2 A14B): connect the low-noise expert here and "
                                       "the high-noise one to model. Every level runs its steps below the "
                                       "switch sigma on this one."),
                io.Float.Input("expert_switch_sigma", **advanced(), optional=True, default=0.875, min=0.0,
                               max=1.0, step=0.001,
                               tooltip="With a low_noise_model: steps the model evaluates at a sigma below this "
                                       "run on the low-noise expert (Wan 2.2 A14B's boundary: 0.875 text to "
                                       "video, 0.9 image to video). A coarse level sees less noise than the "
                                       "schedule's step, so it switches earlier."),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent at the full size.")],
        )

    @classmethod
    def validate_inputs(cls, ladder: str) -> bool | str:
        return _validate_ladder(ladder)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                ladder, upsample, cuda_graphs=True, low_noise_model=None,
                expert_switch_sigma=0.875) -> io.NodeOutput:
        refuse_non_finite(cfg=cfg, denoise=denoise, expert_switch_sigma=expert_switch_sigma)
        run = ksampler_run(model, latent_image, seed, positive, negative, cfg, steps, coarse_previews=True)
        low_noise = None
        if low_noise_model is not None:
            require_same_latent(model, low_noise_model)
            low = ksampler_run(low_noise_model, latent_image, seed, positive, negative, cfg, steps)
            low_noise = (low.guider, expert_switch_sigma)
        samples = pyramid_sample(run.guider, run.noise, run.latent, sampler_object(sampler_name),
                                 schedule_sigmas(model, scheduler, steps, denoise), parse_ladder(ladder), upsample,
                                 latent_image.get("noise_mask"), run.callback, run.disable_pbar, seed,
                                 cuda_graphs=cuda_graphs, low_noise=low_noise)
        out = output_latent(latent_image, samples)
        return io.NodeOutput(out)


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
                io.Combo.Input("sampler_name", options=sampler_names(), default="euler",
                               tooltip="The sampler of every stage."),
                io.Combo.Input("scheduler", options=scheduler_names(), default="normal",
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
        """Only `scales` (host/validation.py: the host checks every input a validator does not name); cfg,
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
        callback = preview_callback(model, len(stage_scales) * steps)
        try:
            samples = highres_sample(model, positive, negative, latent, seed, settings, vae, upscale_model,
                                     callback, progress_bar_disabled())
        except HighResError as err:
            raise ValueError(f"PyraDiffuseHigh: {err}") from None
        return io.NodeOutput(output_latent(latent, samples))


def _stored_samplers() -> list[str]:
    return sorted({s for by_sampler in load_store()["schedules"].values() for s in by_sampler})


def _stored_step_counts() -> str:
    counts = {int(n) for by_sampler in load_store()["schedules"].values() for e in by_sampler.values() for n in e}
    return ", ".join(map(str, sorted(counts)))


class PyraSearchedSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraSearchedSigmas",
            **search_aliases("align your steps", "schedule", "sigmas"),
            display_name="Searched Sigmas (Pyra)",
            category="Pyra/sampling",
            description=(
                "A step schedule found by evolutionary search (AutoDiffusion) for a model family, sampler and step "
                "count, stored as model-time fractions and turned into sigmas by the model's own model_sampling "
                "(a shift set with ModelSamplingSD3 / ModelSamplingFlux moves them as it moves the stock "
                "schedulers; the search used the family's default shift). Use it with SamplerCustom or "
                "SamplerCustomAdvanced and the SAME sampler."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to sample; its model_sampling turns the schedule into "
                                                "sigmas and its type is checked against the family."),
                io.Combo.Input("family", options=["auto", *FAMILIES], default="auto",
                               tooltip="auto: read from the model (SD1.5, SDXL, SD3, Flux, Wan 2.1). Or pick one; "
                                       "it must match the model's sampling type (eps/v or flow)."),
                io.Combo.Input("sampler", options=_stored_samplers(), default="dpmpp_2m",
                               tooltip="The sampler the schedule was searched for: use the same one in "
                                       "KSamplerSelect."),
                io.Int.Input("steps", default=10, min=1, max=1000,
                             tooltip=f"Steps. Stored: {_stored_step_counts()}; other counts are interpolated "
                                     "from the nearest stored schedule (logged)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run, as in BasicScheduler: the last `steps` "
                                       "steps of a schedule of steps / denoise steps."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 descending sigmas ending at 0, for SamplerCustom or "
                                              "SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, family: str, sampler: str, steps: int, denoise: float) -> io.NodeOutput:
        return io.NodeOutput(searched_sigmas(model, family, sampler, steps, denoise))
