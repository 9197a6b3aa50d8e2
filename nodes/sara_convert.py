"""PyraConvertSaRA: a SaRA checkpoint (torch.save of optimizer.save_params()) -> our sparse adapter file."""

from __future__ import annotations

import json
from pathlib import Path

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..core.adapters import sara, sparse
from ..core.adapters.lora_file import LoraFileError, save_lora
from . import lora_host
from .host_features import search_aliases

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def base_parameters(model) -> list[tuple[str, torch.Tensor]]:
    """(ldm name, unpatched fp32 weight) of the model's UNet in diffusers' parameters() order."""
    mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)  # diffusers -> ldm
    if not mapping:
        raise LoraFileError(f"SaRA checkpoints index a diffusers UNet's parameters; this {type(model.model).__name__} "
                            "model has no UNet layout: connect an SD1.x / SD2.x / SDXL model")
    raw = model.get_key_patches(lora_host.PREFIX)
    by_ldm = {}
    for name in sara.diffusers_order([d for d, ldm in mapping.items() if lora_host.PREFIX + ldm in raw]):
        by_ldm.setdefault(lora_host.PREFIX + mapping[name], name)  # SDXL: add_embedding and class_embedding alias
    if len(by_ldm) != len(raw):
        raise LoraFileError(f"only {len(by_ldm)} of the model's {len(raw)} UNet tensors have diffusers names, so "
                            "SaRA's parameter indices cannot be resolved for this model")
    out = []
    for key in by_ldm:  # inserted in diffusers order
        weight, convert = raw[key][0]
        out.append((key, convert(weight.float(), inplace=False)))
    return out


def convert(model, path: str, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], float, int]:
    """Tensors of our format, SaRA's threshold and the number of adapted parameters."""
    threshold, values = sara.read_checkpoint(path)
    deltas = sara.to_sparse(values, threshold, base_parameters(model), source=Path(path).name)
    if not deltas:
        raise LoraFileError(f"{Path(path).name}: its values select no entry of this model's weights (|w| < "
                            f"{threshold}), so the adapter would be empty: load the base model it was trained on")
    tensors = {}
    for key, delta in deltas.items():
        tensors.update(sparse.to_tensors(sparse.module_key(key), delta, dtype))
    return tensors, threshold, len(deltas)


class PyraConvertSaRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = [n for n in folder_paths.get_filename_list("loras") if n.lower().endswith(PICKLE_SUFFIXES)]
        return io.Schema(
            node_id="PyraConvertSaRA",
            **search_aliases("sara", "sparse adapter"), is_experimental=True,
            display_name="Convert SaRA Checkpoint (Pyra)",
            category="Pyra/adapters",
            description=(
                "Converts a checkpoint of SaRA's code (values at |w| < threshold of the base UNet, by parameter "
                "index) into a sparse adapter file with explicit indices that the stock LoRA loaders read. Loads it "
                "without running pickled code and recomputes the masks in fp32 from the base model."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The base model the SaRA adapter was trained on, loaded in fp32 "
                                                "(masks depend on exact fp32 weights)."),
                io.Combo.Input("sara_file", options=files,
                               tooltip="SaRA checkpoint (.pt/.pth/.bin/.ckpt) in the loras folders."),
                io.Combo.Input("dtype", options=list(lora_host.DTYPES), default="fp32",
                               tooltip="Storage precision of the deltas."),
                io.String.Input("filename_prefix", default="loras/pyra_sara",
                                tooltip="Output path under the output folder; loras/... lands where the LoRA "
                                        "loaders look."),
            ],
            outputs=[io.String.Output("report", tooltip="Saved file, threshold, adapted tensors and values.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, sara_file, dtype, filename_prefix) -> io.NodeOutput:
        lora_host.refuse_outside_output(filename_prefix)
        path = folder_paths.get_full_path("loras", sara_file)
        if path is None:
            raise LoraFileError(f"{sara_file!r} is not in the loras folders: refresh the node list")
        tensors, threshold, count = convert(model, path, lora_host.store_dtype(dtype))
        out, shown = lora_host.output_path(filename_prefix)
        size = save_lora(tensors, out, metadata={"pyra": json.dumps({"tool": "sara", "source": sara_file,
                                                                      "threshold": threshold})})
        values = sum(t.numel() for k, t in tensors.items() if k.endswith(sparse.VAL))
        text = (f"PyraConvertSaRA: {sara_file}, threshold {threshold}\nsaved {shown} ({size / 1e6:.2f} MB)\n"
                f"{count} tensors adapted, {values} values")
        return io.NodeOutput(text, ui=ui.PreviewText(text))
