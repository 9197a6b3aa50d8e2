"""Host glue for the LoRA tools: weight differences of MODELs, LoRA files in the loras folders, key checks."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import comfy.lora
import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import torch

from ..core.adapters.extract import Layer
from ..core.adapters.lora_file import LoraFile, LoraFileError, guess_family, load_state_dict, parse_lora, save_lora

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def store_dtype(name: str) -> torch.dtype:
    """The file dtype of a `dtype` input (a host that does not check V3 combo values passes any string)."""
    if name not in DTYPES:
        raise LoraFileError(f"dtype {name!r} is not one of {', '.join(DTYPES)}: choose one of those")
    return DTYPES[name]
PREFIX = "diffusion_model."


def compute_device(choice: str) -> torch.device:
    return comfy.model_management.get_torch_device() if choice == "auto" else torch.device("cpu")


@torch.no_grad()
def _patched(entries: list, key: str, device: torch.device) -> torch.Tensor:
    """The weight the patch list [(weight, convert), *patches] of ModelPatcher.get_key_patches describes, fp32."""
    weight, convert = entries[0]
    weight = convert(weight.to(device=device, dtype=torch.float32, copy=True), inplace=True)
    return comfy.lora.calculate_weight(entries[1:], weight, key, intermediate_dtype=torch.float32)


def model_differences(model_a, model_b, device: torch.device) -> tuple[list[Layer], dict[str, callable]]:
    """(matrix layers, tensors stored in full) of model_a - model_b, computed lazily one key at a time.

    Matrix `.weight`s become layers to factorise; 1-D weights, biases and parameters not named `.weight` or
    `.bias` (modulation tables, learned tokens) become `.diff` / `.diff_b` tensors, the keys the host's
    `comfy.lora.load_lora` reads for them.

    Without model_b, model_a must be a difference already (the host's ModelSubtract output, as for LoraSave).
    The subtraction is the one ModelSubtract makes: model_b's weights and patches as a nested patch with
    strength -1 on a clone of model_a, so neither input model is touched.
    """
    diff = model_a.clone()
    if model_b is not None:
        diff.add_patches(model_b.get_key_patches(PREFIX), -1.0, 1.0)
    patches = diff.get_key_patches(PREFIX)
    if model_b is None and not any(len(v) > 1 for v in patches.values()):
        raise ValueError("model_a carries no differences: connect the base model as model_b, "
                         "or feed a ModelSubtract output as model_a")
    layers, vectors = [], {}
    for key, entries in patches.items():
        if model_b is None and len(entries) == 1:
            continue
        shape = tuple(entries[0][0].shape)
        fn = functools.partial(_patched, entries, key, device)
        if key.endswith(".weight") and len(shape) >= 2:
            layers.append((key[: -len(".weight")], shape, fn))
        elif key.endswith(".weight"):
            vectors[key[: -len(".weight")] + ".diff"] = fn
        elif key.endswith(".bias"):
            vectors[key[: -len(".bias")] + ".diff_b"] = fn
        else:  # a bare parameter (Wan's modulation, LTX's scale_shift_table, Z-Image's pad tokens): a full .diff,
            vectors[key + ".diff"] = fn  # which the host's key map reads under the parameter's own name
    return layers, vectors


def lora_names() -> list[str]:
    return folder_paths.get_filename_list("loras")


def read_lora(name: str) -> tuple[dict[str, torch.Tensor], LoraFile]:
    """State dict and parsed modules of a file in the loras folders; bad files raise LoraFileError."""
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        raise LoraFileError(f"LoRA {name!r} is not in the loras folders: refresh the node list")
    sd = load_state_dict(path)
    lora = parse_lora(sd)
    if not lora.modules:
        raise LoraFileError(f"{name}: no low-rank (lora_up/lora_down, lora_A/lora_B) factors found in "
                            f"{len(sd)} tensors; it looks made for {guess_family(sd)}")
    return sd, lora


def match_model(name: str, sd: dict, lora: LoraFile, model) -> tuple[LoraFile, str]:
    """Check `lora`'s modules against `model`'s LoRA key map; rename matched ones to diffusion_model.<path>.

    Raises when no module matches (saying which family the file looks made for) or a shape differs (naming the
    key). Unmatched modules (a text encoder's, say) are kept under their names; the note counts them.
    """
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    state = model.model.state_dict()
    out, matched = LoraFile(additive=lora.additive, other=lora.other), 0
    for base, module in lora.modules.items():
        target = key_map.get(base)
        if target is None:
            out.modules[base] = module
            continue
        matched += 1
        weight_key = target if isinstance(target, str) else target[0]
        want = tuple(state[weight_key].shape)
        if isinstance(target, tuple):  # a slice of a fused weight (Flux linear1_qkv): (dim, start, length)
            dim, _, length = target[1]
            want = (*want[:dim], length, *want[dim + 1 :])
        if torch.Size(module.weight_shape).numel() != torch.Size(want).numel() or module.up.shape[0] != want[0]:
            raise LoraFileError(f"{name}: {base} has shape {module.weight_shape} but the model's {weight_key} "
                                f"is {want}: the LoRA was made for another model (its keys look like "
                                f"{guess_family(sd)}); connect the model it was made for")
        out.modules[weight_key[: -len(".weight")] if isinstance(target, str) else base] = module
    if matched == 0:
        raise LoraFileError(f"{name}: 0 of {len(lora.modules)} LoRA modules match this "
                            f"{type(model.model).__name__} model; the file looks made for {guess_family(sd)}: "
                            "connect a model of that family, or leave the model input unconnected")
    note = f"{name}: {matched} of {len(lora.modules)} modules match the model"
    return out, note + (f", {len(lora.modules) - matched} kept under their own names" if matched < len(lora.modules)
                        else "")


def refuse_outside_output(filename_prefix: str) -> None:
    """Refuse, in Pyra's words and before any work, a prefix that leaves the output folder (the host's own
    message shows the server's paths)."""
    root = os.path.abspath(folder_paths.get_output_directory())
    target = os.path.abspath(os.path.join(root, os.path.dirname(os.path.normpath(filename_prefix))))
    if os.path.commonpath([root, target]) != root:
        raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder: give a name "
                         "inside it, e.g. 'loras/my_lora'")


def output_path(filename_prefix: str) -> tuple[Path, str]:
    """Next free <output>/<prefix>_NNNNN_.safetensors, as the host's LoraSave names it; (path, display name)."""
    refuse_outside_output(filename_prefix)
    folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory())
    name = f"{filename}_{counter:05}_.safetensors"
    return Path(folder) / name, str(Path(subfolder) / name)


def save(tensors: dict[str, torch.Tensor], filename_prefix: str, settings: dict) -> str:
    """Save atomically under the output folder; returns a line naming the file and its size. An adapter without
    tensors is refused: the loaders would apply nothing, without a word."""
    if not tensors:
        raise LoraFileError(f"nothing to save under {filename_prefix}: every layer came out empty (rank 0 or no "
                            "matching module); raise the rank rule's value or check the inputs")
    path, shown = output_path(filename_prefix)
    size = save_lora(tensors, path, metadata={"pyra": json.dumps(settings, sort_keys=True)})
    return f"saved {shown} ({size / 1e6:.2f} MB, {len(tensors)} tensors)"


def apply_tensors(model, tensors: dict[str, torch.Tensor], strength: float = 1.0):
    """A clone of `model` with LoRA-format `tensors` applied by the host's own loader (as LoraLoaderModelOnly)."""
    adapted, _ = comfy.sd.load_lora_for_models(model, None, tensors, strength, 0)
    return adapted
