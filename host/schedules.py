"""Searched step schedules as SIGMAS of a host MODEL: which stored family the model is, and the stored fractions
turned into the model's sigmas."""

from __future__ import annotations

import logging

import comfy.model_sampling
import torch

from ..core.samplers.schedule_families import FAMILIES
from ..core.samplers.searched_schedules import searched_fractions, stored_steps
from .models import family_of, parametrisation

FAMILY_KINDS = {"eps": "the SD discrete (eps / v) noise schedule", "flow": "a rectified-flow (CONST) schedule"}

class FamilyMismatch(ValueError):
    """The model cannot use the requested family's schedule."""

def model_kind(model) -> str | None:
    """'eps' for the SD discrete schedule (eps or v), 'flow' for a discrete-flow or Flux schedule, else None: the
    parametrisation (host/models.py) of the schedules the stored fractions were searched on."""
    model_sampling = model.get_model_object("model_sampling")
    try:
        param = parametrisation(model, "searched schedules")
    except ValueError:
        return None
    if param == "flow" and isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow
                                      | comfy.model_sampling.ModelSamplingFlux):
        return "flow"
    if param == "ve" and type(model_sampling).sigma is comfy.model_sampling.ModelSamplingDiscrete.sigma:
        return "eps"
    return None


def detect_family(model) -> str | None:
    """The family whose stored schedules fit the model, from its config (host/models.py, exact)."""
    return family_of(model, exact=True)


def resolve_family(model, family: str) -> str:
    """The family to use: detected for 'auto', else `family` after checking it fits the model's sampling."""
    model_sampling = model.get_model_object("model_sampling")
    kind = model_kind(model)
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
