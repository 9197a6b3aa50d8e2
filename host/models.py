"""The one vocabulary of the host's models that Pyra's features share: the family, the parametrisation, the
patch grid and the step window.

Families are named as the searched schedules and step-cache presets name them (`sd15`, `sdxl`, `sd3`, `flux`,
`wan21`, and the DiTs of 2026: `chroma`, `qwen_image`, `hunyuan_video`, `ltxv`, `ltx2`). `family_of` tells them by
the diffusion model's class, which is what a feature that hooks the model's blocks needs (a Flux.2 model, built on
the host's Flux class, is `flux` there; Wan 2.2 is `wan21`). `exact=True` tells them by
the model config instead and refuses the variants that sample differently (distilled, other shifts or latents),
which is what a stored schedule needs.
"""

from __future__ import annotations

import importlib

import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.model_base
import torch

DISPLAY = {"sd15": "SD1.5", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux", "wan21": "Wan 2.1", "chroma": "Chroma",
           "qwen_image": "Qwen-Image", "hunyuan_video": "HunyuanVideo", "ltxv": "LTX-Video", "ltx2": "LTX-2",
           "lumina2": "Z-Image (Lumina 2)"}
# the diffusion model class of each DiT family ("module:Class"; absent from hosts older than the family), and
# whether text tokens lead its joint attention sequence. A subclass comes before its base (LTX-2's LTXAVModel is
# an LTXVModel).
DIT_CLASS_NAMES = {
    "sd3": ("comfy.ldm.modules.diffusionmodules.mmdit:MMDiT", True),
    "flux": ("comfy.ldm.flux.model:Flux", True),
    "wan21": ("comfy.ldm.wan.model:WanModel", False),
    "chroma": ("comfy.ldm.chroma.model:Chroma", True),
    "qwen_image": ("comfy.ldm.qwen_image.model:QwenImageTransformer2DModel", True),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model:HunyuanVideo", True),
    "ltx2": ("comfy.ldm.lightricks.av_model:LTXAVModel", False),
    "ltxv": ("comfy.ldm.lightricks.model:LTXVModel", False),
    "lumina2": ("comfy.ldm.lumina.model:NextDiT", True),   # Z-Image and Lumina Image 2.0: caption tokens first
}


def _host_class(spec: str) -> type | None:
    module, name = spec.split(":")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


DIT_CLASSES = {family: (cls, leads) for family, (spec, leads) in DIT_CLASS_NAMES.items()
               if (cls := _host_class(spec)) is not None}
# config class (or an ancestor) -> family; the first match walking the config's MRO wins
CONFIG_FAMILIES = {"SD15": "sd15", "SDXL": "sdxl", "SD3": "sd3", "Flux": "flux", "WAN21_T2V": "wan21"}
# subclasses of those that sample differently (distilled, other shifts or latents): no exact family
VARIANTS = ("FluxSchnell", "Flux2", "WAN22")


def family_of(patcher, exact: bool = False) -> str | None:
    """The family of a ModelPatcher, or None when it is none of ours (see the module docstring for `exact`)."""
    if exact:
        config = getattr(patcher.model, "model_config", None)
        if config is None or type(config).__name__.startswith(VARIANTS):
            return None
        return next((CONFIG_FAMILIES[c.__name__] for c in type(config).__mro__ if c.__name__ in CONFIG_FAMILIES),
                    None)
    dm = patcher.get_model_object("diffusion_model")
    if isinstance(dm, openaimodel.UNetModel):
        return "sdxl" if isinstance(patcher.model, comfy.model_base.SDXL) else "sd15"
    return next((name for name, (cls, _) in DIT_CLASSES.items() if isinstance(dm, cls)), None)


def require_family(patcher, supported, feature: str, error: type[Exception] = ValueError) -> str:
    """The family of `patcher` when `feature` supports it, else `error` naming what it supports."""
    family = family_of(patcher)
    if family in supported:
        return family
    dm = type(patcher.get_model_object("diffusion_model")).__name__
    raise error(f"{feature} supports {family_names(supported)} models, not {dm}: connect one of those, or leave "
                "this node out")


def family_names(families) -> str:
    """'SD3, Flux and Wan 2.1' for ('sd3', 'flux', 'wan21')."""
    names = [DISPLAY[f] for f in families]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def text_leads(family: str) -> bool:
    """Whether text tokens come first in the family's joint attention sequence (SD3, Flux; Wan has none)."""
    return DIT_CLASSES[family][1]


def patch_size(patcher) -> tuple[int, ...]:
    """The diffusion model's patch grid over the latent's trailing axes (Wan: (t, h, w); 2-D DiTs: (p, p)). LTX
    keeps it in its patchifier."""
    dm = patcher.get_model_object("diffusion_model")
    size = getattr(dm, "patch_size", None)
    if size is None:
        size = getattr(getattr(dm, "patchifier", None), "patch_size", 1)
    return tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))


def parametrisation(patcher, feature: str, error: type[Exception] = ValueError) -> str:
    """'ve' when the host noises as x0 + sigma n (eps, v, EDM), 'flow' for (1 - t) x0 + t n; else `error`."""
    ms = patcher.get_model_object("model_sampling")
    half = torch.tensor(0.5)
    signal = float(ms.noise_scaling(half, torch.zeros(1), torch.ones(1)))
    noise = float(ms.noise_scaling(half, torch.ones(1), torch.zeros(1)))
    if abs(signal - 1) < 1e-6 and abs(noise - 0.5) < 1e-6:
        return "ve"
    if abs(signal - 0.5) < 1e-6 and abs(noise - 0.5) < 1e-6:
        return "flow"
    raise error(f"{feature} supports eps, v and flow models, not {type(ms).__name__}")


class SigmaWindow:
    """The steps of a start/end percent window: end_sigma < sigma <= start_sigma (EasyCache's convention).

    The percents become sigmas when sampling starts (`prepare`, from the model_sampling the sampler runs with),
    so a ModelSampling node placed after the Pyra node, which changes the shift, is honoured."""

    def __init__(self, start_percent: float, end_percent: float):
        self.start_percent, self.end_percent = start_percent, end_percent
        self.start_sigma, self.end_sigma = float("inf"), -1.0

    @classmethod
    def between(cls, start_sigma: float, end_sigma: float) -> SigmaWindow:
        """A window given in sigmas, which `prepare` leaves as it is (for direct calls of a hooked model)."""
        window = cls(float("nan"), float("nan"))
        window.start_sigma, window.end_sigma = start_sigma, end_sigma
        return window

    def prepare(self, model_sampling) -> None:
        if self.start_percent != self.start_percent:   # NaN: given in sigmas
            return
        self.start_sigma = float(model_sampling.percent_to_sigma(self.start_percent))
        self.end_sigma = float(model_sampling.percent_to_sigma(self.end_percent))

    def __call__(self, sigma: float | None) -> bool:
        """sigma: the evaluation's; None where the host passed none (inside the window)."""
        return sigma is None or self.end_sigma < sigma <= self.start_sigma
