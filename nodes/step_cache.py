"""PyraStepCache: reuse deep features across adjacent steps (Step Rehash) on UNets and DiTs."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..core.cache import PRESETS
from . import multigpu_guard
from .host_features import advanced, search_aliases
from .step_cache_hooks import StepCacheError, detect_family, install
from .validation import refuse_empty_window, refuse_non_finite

FAMILIES = ["auto", *PRESETS]


class PyraStepCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraStepCache",
            **search_aliases("teacache", "easycache", "deepcache", "magcache", "step cache"),
            display_name="Step Cache (Pyra)",
            category="Pyra/sparse",
            description=(
                "Skips the expensive part of the model on steps where a cheap early feature barely changed: "
                "SD1.5/SDXL reuse the deep UNet blocks' output (Step Rehash), SD3, Flux and Wan skip the middle "
                "transformer blocks and add their cached residual. Separate caches per cond/uncond and batch "
                "item; the cache resets on any size change. Logs computed vs reused evaluations after sampling."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3, Flux or Wan 2.1 model (LoRA and ControlNet "
                                                "compose)."),
                io.Combo.Input("preset", options=FAMILIES, default="auto",
                               tooltip="The model family's preset (blocks kept and threshold); auto detects it."),
                io.Float.Input("threshold", default=-1.0, min=-1.0, max=5.0, step=0.01,
                               tooltip="Reuse while the accumulated relative change of the early feature stays "
                                       "below this. -1 uses the preset's value, 0 never reuses (exact output), "
                                       "larger values reuse more steps and deviate more."),
                io.Float.Input("start_percent", default=0.15, min=0.0, max=1.0, step=0.01,
                               tooltip="No reuse before this fraction of the schedule (early steps set the "
                                       "composition)."),
                io.Float.Input("end_percent", default=0.95, min=0.0, max=1.0, step=0.01,
                               tooltip="No reuse after this fraction of the schedule (the last steps set fine "
                                       "detail)."),
                io.Boolean.Input("cache_on_cpu", **advanced(), default=False,
                                 tooltip="Keep the cached features in CPU memory: less GPU memory, a copy per "
                                         "step."),
                io.Int.Input("max_reused_in_a_row", **advanced(), default=0, min=0, max=100, optional=True,
                             tooltip="At most this many consecutive reused steps, then a full one (0: no "
                                     "limit). A guard for models whose early feature barely moves while the "
                                     "output does."),
                io.Boolean.Input("extrapolate", **advanced(), default=False, optional=True,
                                 tooltip="On a reused step, extend the cached features along the line through "
                                         "their last two computed values (first order in sigma) instead of "
                                         "repeating the last ones: closer to the uncached result when features "
                                         "drift steadily, at the same number of reused steps."),
                io.Int.Input("unet_shallow_blocks", **advanced(), default=-1, min=-1, max=12, optional=True,
                             tooltip="SD1.5/SDXL: input blocks still computed on a reused step (their output "
                                     "blocks too). -1 uses the preset (2: the input convolution and the first "
                                     "ResBlock), 0 everything above the first downsampling (Step Rehash's split: "
                                     "closer to the uncached output, less saved); ignored by DiTs."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is untouched.")],
        )

    @classmethod
    def execute(cls, model, preset: str, threshold: float, start_percent: float, end_percent: float,
                cache_on_cpu: bool, max_reused_in_a_row: int = 0, extrapolate: bool = False,
                unet_shallow_blocks: int = -1) -> io.NodeOutput:
        refuse_non_finite(threshold=threshold, start_percent=start_percent, end_percent=end_percent)
        refuse_empty_window(start_percent, end_percent, "steps that may reuse", StepCacheError)
        family = detect_family(model)
        if preset != "auto" and PRESETS[preset].kind != PRESETS[family].kind:
            raise StepCacheError(f"preset {preset!r} is for a {PRESETS[preset].kind} but this is a {family} "
                                 f"model: choose auto or {family}")
        chosen = PRESETS[family if preset == "auto" else preset]
        if unet_shallow_blocks >= 0:
            chosen = dataclasses.replace(chosen, shallow=unet_shallow_blocks)
        if extrapolate:
            chosen = dataclasses.replace(chosen, extrapolate=True)
        value = chosen.threshold if threshold < 0 else threshold
        patched = model.clone()
        multigpu_guard.guard(patched, "PyraStepCache")
        install(patched, family, value, start_percent, end_percent, cache_on_cpu, chosen, max_reused_in_a_row)
        return io.NodeOutput(patched)
