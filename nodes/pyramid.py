"""Pyramid sampling nodes: a GUIDER wrapper for SamplerCustomAdvanced and an all-in-one KSampler."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..core.samplers.pyramid import parse_ladder
from .host_features import advanced, search_aliases
from .previews import coarse_callback
from .pyramid_sampling import UPSAMPLERS, PyramidGuider, pyramid_sample
from .validation import refuse_non_finite

LADDER_TOOLTIP = (
    "Coarse-to-fine levels as factor:fraction of the steps, e.g. '2:0.4' runs the first 40% of steps at 1/2 "
    "resolution, '4:0.35, 2:0.25' runs 35% at 1/4 then 25% at 1/2; the rest runs at full resolution."
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
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="The sampler run at every level."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                               tooltip="The schedule, computed for the final resolution."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (its size is the final size)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run, as in KSampler."),
                _ladder_input(),
                _upsample_input(),
                _graphs_input(),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent at the full size.")],
        )

    @classmethod
    def validate_inputs(cls, ladder: str) -> bool | str:
        return _validate_ladder(ladder)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                ladder, upsample, cuda_graphs=True) -> io.NodeOutput:
        refuse_non_finite(cfg=cfg, denoise=denoise)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        ms = model.get_model_object("model_sampling")
        total = steps if denoise >= 1.0 else int(steps / max(denoise, 1e-4))
        sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, total)[-(steps + 1):].cpu()
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        callback = coarse_callback(latent_preview.prepare_callback(model, steps))
        samples = pyramid_sample(guider, noise, latent, comfy.samplers.sampler_object(sampler_name), sigmas,
                                 parse_ladder(ladder), upsample, latent_image.get("noise_mask"), callback,
                                 not comfy.utils.PROGRESS_BAR_ENABLED, seed, cuda_graphs=cuda_graphs)
        out = latent_image.copy()
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return io.NodeOutput(out)
