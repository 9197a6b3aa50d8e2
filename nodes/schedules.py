"""Searched step schedules (AutoDiffusion) as SIGMAS for SamplerCustom / SamplerCustomAdvanced."""

from __future__ import annotations

import logging

import comfy.model_sampling
import torch
from comfy_api.latest import io

from ..core.samplers.schedule_families import FAMILIES
from ..core.samplers.searched_schedules import load_store, searched_fractions, stored_steps
from .host_features import search_aliases

# config class (or an ancestor) -> family; the first match walking the config's MRO wins
CONFIG_FAMILIES = {
    "SD15": "sd15", "SDXL": "sdxl", "SD3": "sd3", "Flux": "flux", "WAN21_T2V": "wan21",
}
# subclasses of those that sample differently (distilled, other shifts or latents): no automatic family
NOT_THE_FAMILY = ("FluxSchnell", "Flux2", "WAN22")
FAMILY_KINDS = {"eps": "the SD discrete (eps / v) noise schedule", "flow": "a rectified-flow (CONST) schedule"}


class FamilyMismatch(ValueError):
    """The model cannot use the requested family's schedule."""


def model_kind(model_sampling) -> str | None:
    """'eps' (ModelSamplingDiscrete with EPS or V_PREDICTION), 'flow' (CONST, discrete-flow or Flux), or None."""
    if isinstance(model_sampling, comfy.model_sampling.CONST) and isinstance(
        model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow | comfy.model_sampling.ModelSamplingFlux
    ):
        return "flow"
    if isinstance(model_sampling, comfy.model_sampling.EPS) and type(model_sampling).sigma is (
        comfy.model_sampling.ModelSamplingDiscrete.sigma
    ):
        return "eps"
    return None


def detect_family(model) -> str | None:
    """The family of a ModelPatcher from its model config class, or None when it is not one of ours."""
    config = getattr(model.model, "model_config", None)
    if config is None or type(config).__name__.startswith(NOT_THE_FAMILY):
        return None
    return next((CONFIG_FAMILIES[c.__name__] for c in type(config).__mro__ if c.__name__ in CONFIG_FAMILIES), None)


def resolve_family(model, family: str) -> str:
    """The family to use: detected for 'auto', else `family` after checking it fits the model's sampling."""
    model_sampling = model.get_model_object("model_sampling")
    kind = model_kind(model_sampling)
    if kind is None:
        raise FamilyMismatch(
            f"this model samples with {type(model_sampling).__name__}, which has no searched schedules: they exist "
            "for eps/v models with the SD discrete schedule (sd15, sdxl) and rectified-flow models (sd3, flux, "
            "wan21). Use a stock scheduler for this model."
        )
    if family == "auto":
        detected = detect_family(model)
        if detected is None:
            same = [n for n, f in FAMILIES.items() if f.parametrisation == kind]
            raise FamilyMismatch(
                f"cannot tell the family of this model ({type(getattr(model.model, 'model_config', None)).__name__}"
                f"); set family to one of {', '.join(same)} (it samples with {FAMILY_KINDS[kind]})."
            )
        family = detected
    wanted = FAMILIES[family].parametrisation
    if wanted != kind:
        same = [n for n, f in FAMILIES.items() if f.parametrisation == kind]
        raise FamilyMismatch(
            f"the {family} schedules are for models with {FAMILY_KINDS[wanted]}, but this model samples with "
            f"{FAMILY_KINDS[kind]}: set family to auto or to one of {', '.join(same)}."
        )
    return family


def fractions_to_sigmas(model_sampling, fractions: torch.Tensor) -> torch.Tensor:
    """(N + 1,) float32 sigmas: the model's own percent_to_sigma(1 - u) for each fraction u, then 0.

    The ends are the model's sigma_max (u = 1) and sigma_min (u = 0, the lowest point of the discrete eps grid):
    percent_to_sigma returns sentinels there (a huge value at percent 0, and 0 at percent 1).
    """
    top, bottom = float(model_sampling.sigma_max), float(model_sampling.sigma_min)
    values = [top if u >= 1.0 else bottom if u <= 0.0 else float(model_sampling.percent_to_sigma(1.0 - float(u)))
              for u in fractions]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def searched_sigmas(model, family: str, sampler: str, steps: int, denoise: float) -> torch.Tensor:
    """SIGMAS for `steps` steps, as BasicScheduler cuts them for denoise < 1 (the tail of int(steps / denoise))."""
    if denoise <= 0.0:
        return torch.FloatTensor([])
    family = resolve_family(model, family)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    fractions, interpolated = searched_fractions(family, sampler, total)
    if interpolated:
        logging.info("PyraSearchedSigmas: no stored %s/%s schedule for %d steps (stored: %s); interpolated.",
                     family, sampler, total, stored_steps(family, sampler))
    return fractions_to_sigmas(model.get_model_object("model_sampling"), fractions)[-(steps + 1):]


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
