"""DFM models on the host: the model-function wrapper that runs the per-level network, conversion, files, and
the stage-wise sampler as a host SAMPLER.

A DFM MODEL is a clone of the base ModelPatcher whose `model_function_wrapper` is a `DFMRunner`: the base
weights are shared (never written), the per-level layers live in the runner, a core LoRA (if any) is a
standard host weight patch. The runner only answers calls from PyraDFMSampler, which passes the levels packed
into one tensor and their noise levels in transformer_options["pyra_dfm"]. The sampler (`sample_dfm_host`,
core/dfm/sampler.py driven through the host's guider) gets conditioning, CFG on every level, model loading,
previews and interruption as any sampler does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.lora
import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..core.dfm.arch import adapter_for
from ..core.dfm.checkpoint import fingerprint, load_dfm, save_dfm
from ..core.dfm.levels import level_factor, merge, pack, split, unpack
from ..core.dfm.network import DFMLayers, dfm_forward
from ..core.dfm.sampler import sample_dfm
from ..core.samplers.pyramid import level_noise
from . import multigpu

log = logging.getLogger("pyra")


FOLDER = "pyra_dfm"  # models/dfm and output/dfm, registered from the entrypoint (nodes/__init__.py)


class DFMError(ValueError):
    """A DFM request that cannot run; the message says what to change."""


class DFMRunner:
    """model_function_wrapper: packed levels in, packed per-level denoised estimates out."""

    def __init__(self, layers: DFMLayers, base_fingerprint: str):
        self.layers, self.base_fingerprint = layers, base_fingerprint

    @property
    def levels(self) -> int:
        return self.layers.levels

    def __deepcopy__(self, memo):  # clones share the runner (model_options are deep-copied on clone)
        return self

    def __call__(self, apply_model, args: dict) -> torch.Tensor:
        base = apply_model.__self__
        c = args["c"]
        info = c.get("transformer_options", {}).get("pyra_dfm")
        if info is None:
            raise DFMError("this is a DFM model (from PyraDFMConvert or PyraDFMLoader): sample it with "
                           "PyraDFMSampler, not a stock sampler")
        if c.get("c_concat") is not None or c.get("control") is not None:
            raise DFMError("DFM sampling supports text-to-image conditioning only (no ControlNet or inpaint models)")
        x = args["input"]
        dtype = base.manual_cast_dtype or base.get_dtype()
        parts = unpack(x, info["sizes"])
        b = x.shape[0]
        sig = info["sigmas"].to(x.device, torch.float32)[None].expand(b, -1)
        mask = info["mask"].to(x.device, torch.float32)[None].expand(b, -1)
        t = base.model_sampling.timestep(sig).float()
        context = c.get("c_crossattn")
        context = context.to(x.device, dtype) if context is not None else None
        y = c.get("y")
        y = y.to(x.device, dtype) if y is not None else None
        guidance = c.get("guidance")  # Flux-dev's distilled guidance (the host's extra_conds), else None
        arch = adapter_for(base.diffusion_model)
        self.layers.to(device=x.device, dtype=dtype)
        if arch.embed_dtype is not None:
            self.layers.embed.to(arch.embed_dtype)
        out = dfm_forward(arch, self.layers, [p.to(dtype) for p in parts], t, mask, context, y,
                          c.get("transformer_options", {}), guidance=guidance)
        return pack([p - o.float() * sig[:, i].reshape(b, *[1] * (p.ndim - 1))
                     for i, (p, o) in enumerate(zip(parts, out, strict=True))])


def runner_of(model) -> DFMRunner:
    runner = model.model_options.get("model_function_wrapper")
    if not isinstance(runner, DFMRunner):
        raise DFMError("this MODEL is not a DFM model: convert it with PyraDFMConvert or load one with PyraDFMLoader")
    return runner


def make_dfm_model(model, layers: DFMLayers, lora: dict | None = None):
    """Clone of `model` sampling through `layers` (+ the core LoRA as host weight patches)."""
    m = model.clone()
    multigpu.guard(m, "A DFM model (PyraDFMConvert, PyraDFMLoader, PyraDFMTrain)")
    m.set_model_unet_function_wrapper(DFMRunner(layers, fingerprint(model.model.diffusion_model)))
    if lora:
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        _refuse_unfit_lora(lora, key_map, model.model)
        m.add_patches(comfy.lora.load_lora(lora, key_map), 1.0)
    return m


def _refuse_unfit_lora(lora: dict, key_map: dict, base) -> None:
    """Every core-LoRA pair must match a weight of this model, with its shape (the host would skip it, logged)."""
    for key, up in lora.items():
        if not key.endswith(".lora_up.weight"):
            continue
        module = key.removesuffix(".lora_up.weight")
        down = lora.get(module + ".lora_down.weight")
        target = key_map.get(module)
        if down is None or target is None:
            raise DFMError(f"the checkpoint's core LoRA tensor {key} has no "
                           f"{'lora_down partner' if down is None else 'matching layer in this model'}: load the "
                           "base model it was trained on")
        shape = tuple(comfy.utils.get_attr(base, target).shape)
        if shape[:2] != (up.shape[0], down.shape[1]):
            raise DFMError(f"the checkpoint's core LoRA {module} is {up.shape[0]}x{down.shape[1]}, but this model's "
                           f"{target} is {shape[0]}x{shape[1]}: load the base model it was trained on")


def output_file(save_name: str) -> Path:
    """output/dfm/<save_name>.safetensors for a plain file name: a name with folders, an empty or a hidden name
    is refused (a changed name would be a silent surprise)."""
    stem = save_name.strip().removesuffix(".safetensors")
    if not stem or stem.startswith(".") or any(sep in stem for sep in "/\\"):
        raise DFMError(f"the name {save_name!r} is not a plain file name: give a name without folders that does not "
                       "start with '.' (it is saved as output/dfm/<name>.safetensors)")
    return Path(folder_paths.get_output_directory()) / "dfm" / f"{stem}.safetensors"


def refuse_existing(path: Path, what_to_do: str) -> None:
    if path.exists():
        raise DFMError(f"dfm/{path.name} exists already: {what_to_do}")


def convert(model, levels: int):
    """A base flow model -> DFM model with freshly initialised per-level layers (levels = 1: the base exactly)."""
    if "model_function_wrapper" in model.model_options:
        raise DFMError("this MODEL already has a model-function wrapper (a DFM model or another patch): convert the "
                       "base model")
    arch = adapter_for(model.model.diffusion_model)
    layers = DFMLayers(arch, levels).float().cpu()
    return make_dfm_model(model, layers)


def save(model, path, lora: dict | None = None, extra: dict | None = None):
    runner = runner_of(model)
    meta = {"levels": runner.levels, "family": adapter_for(model.model.diffusion_model).family,
            "base": runner.base_fingerprint, **(extra or {})}
    written = save_dfm(path, runner.layers, meta, lora)
    register_folder()
    # the host caches folder listings and misses a folder created after the listing: let PyraDFMLoader see it
    folder_paths.filename_list_cache.pop(FOLDER, None)
    return written


def register_folder() -> None:
    """models/dfm and <output>/dfm as the host's `pyra_dfm` folder, with the output folder as it is NOW (a
    launcher may set it after the pack is imported)."""
    wanted = [str(Path(folder_paths.models_dir) / "dfm"), str(Path(folder_paths.get_output_directory()) / "dfm")]
    paths, extensions = folder_paths.folder_names_and_paths.get(FOLDER, ([], {".safetensors"}))
    folder_paths.folder_names_and_paths[FOLDER] = (paths + [p for p in wanted if p not in paths], extensions)


def checkpoint_names() -> list[str]:
    register_folder()
    return folder_paths.get_filename_list(FOLDER)


def checkpoint_path(name: str) -> str:
    register_folder()
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise DFMError(f"no DFM checkpoint {name!r} in models/dfm or output/dfm")
    return path


def load(model, path):
    name = Path(path).name
    meta, layer_sd, lora = load_dfm(path)
    arch = adapter_for(model.model.diffusion_model)
    layers = DFMLayers(arch, meta["levels"]).float().cpu()
    refuse_unfit_layers(name, meta, arch, layers.state_dict(), layer_sd)
    layers.load_state_dict(layer_sd)
    if meta.get("base") != fingerprint(model.model.diffusion_model):
        log.warning("Pyra DFM: %s was made from a different base model checkpoint; using it anyway", name)
    return make_dfm_model(model, layers, lora)


def refuse_unfit_layers(name: str, meta: dict, arch, wanted: dict, found: dict) -> None:
    """Which tensor of a DFM file does not fit the base model, and why, before load_state_dict's raw text."""
    family = meta.get("family")
    if family is not None and family != arch.family:
        raise DFMError(f"{name} was made for a {family} model, this is a {arch.family} model: load its base model")
    for key, tensor in wanted.items():
        if key not in found:
            raise DFMError(f"{name} lacks the tensor dfm.{key} that a {meta['levels']}-level {arch.family} DFM model "
                           "has: re-save it with PyraDFMSave")
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise DFMError(f"{name}: tensor dfm.{key} has shape {tuple(found[key].shape)}, this {arch.family} model "
                           f"needs {tuple(tensor.shape)}: it was made for a model of another size; load its base "
                           "model")
    extra = sorted(set(found) - set(wanted))
    if extra:
        raise DFMError(f"{name} has the tensor dfm.{extra[0]} that this {arch.family} DFM model does not: load the "
                       "base model it was made for")


def _start_levels(x, latent, noise, sigma0: float, levels: int, seed: int) -> list[torch.Tensor]:
    """Every level at sigma0: the finest takes the sampler's noise (one level: exactly the host's start)."""
    if levels == 1:
        return [x]
    lat = split(latent.float(), levels)
    out = []
    for i, part in enumerate(lat):
        f = level_factor(i, levels)
        if i == levels - 1:
            n = noise.float()
        else:
            g = torch.Generator().manual_seed(int(seed) + 101 * (i + 1))
            n = level_noise(torch.randn(noise.shape, generator=g), f).to(noise.device)
        out.append((sigma0 * n + (1 - sigma0) * part).to(x.dtype))
    return out


@torch.no_grad()
def sample_dfm_host(model, x, sigmas, extra_args=None, callback=None, disable=None, plan=None, solver="euler"):
    """Decomposable flow matching sampler (Haji-Ali et al. 2025) for a DFM MODEL: k-diffusion contract."""
    extra_args = dict(extra_args or {})
    if extra_args.get("denoise_mask") is not None:
        raise DFMError("DFM sampling does not take a noise mask (inpainting): remove SetLatentNoiseMask")
    runner = runner_of(model.inner_model.model_patcher)
    if plan.levels != runner.levels:
        raise DFMError(f"this DFM model has {runner.levels} levels but the stage plan has {plan.levels}: give one "
                       "step count per level")
    parts = _start_levels(x, model.latent_image, model.noise, float(sigmas[0]), runner.levels,
                          extra_args.get("seed") or 0)
    sizes = [tuple(p.shape[2:]) for p in parts]
    options = extra_args["model_options"].setdefault("transformer_options", {})
    s_in = x.new_ones([x.shape[0]])

    def denoise(levels, sig, mask):
        comfy.model_management.throw_exception_if_processing_interrupted()
        options["pyra_dfm"] = {"sizes": sizes, "sigmas": sig, "mask": mask}
        newest = sig[int(mask.sum()) - 1]
        return unpack(model(pack(levels), newest.to(x) * s_in, **extra_args), sizes)

    def report(n, levels, denoised, preview):
        if callback is not None:
            callback({"x": merge(levels), "i": n, "sigma": sigmas[min(n, len(sigmas) - 1)],
                      "sigma_hat": sigmas[min(n, len(sigmas) - 1)], "denoised": preview})

    return merge(sample_dfm(denoise, parts, plan, sigmas, solver, report)).to(x.dtype)


def stage_sampler(plan, solver: str):
    """A host SAMPLER that runs `plan` stage by stage with `solver` (for guider.sample)."""
    return comfy.samplers.KSAMPLER(sample_dfm_host, extra_options={"plan": plan, "solver": solver})
