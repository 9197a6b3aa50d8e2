"""LoRA tools: adaptive-rank extraction from two models, exact resize, weighted merge (sum, TIES, DARE)."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..core.adapters.extract import extract_lora, memory_needed
from ..core.adapters.lora_file import LoraFile
from ..core.adapters.rank import MODES, RankRule
from ..core.adapters.resize import MERGE_MODES, merge_loras, resize_lora
from ..core.adapters.svd import METHODS
from . import lora_host, memory_budget
from .host_features import advanced, search_aliases
from .validation import refuse_non_finite, schema_refusal

MODE_TOOLTIP = (
    "How each layer's rank is chosen. energy: keep this fraction of the layer's squared singular values "
    "(0.9 = 90%). threshold: WeLore rule, keep singular values >= value x the layer's largest (one value for all "
    "layers). size_mb: fit the whole file in this many MB (10^6 bytes), spending bytes where they cut the "
    "relative error most. rank: the same rank everywhere."
)
VALUE_TOOLTIP = "The number for the mode: energy fraction (0-1], threshold (0-1], size in MB, or rank."
MERGE_SLOTS = 4
# Safetensors header bytes per stored tensor, beyond the key (measured: about 60 to 80).
_HEADER_BYTES = 96


def _rule_inputs(default_mode: str, default_value: float) -> list:
    return [
        io.Combo.Input("mode", options=list(MODES), default=default_mode, tooltip=MODE_TOOLTIP),
        io.Float.Input("value", default=default_value, min=0.0001, max=1e6, step=0.01, tooltip=VALUE_TOOLTIP),
    ]


def _common_inputs(prefix: str) -> list:
    return [
        io.Combo.Input("dtype", options=list(lora_host.DTYPES), default="fp16",
                       tooltip="Storage precision of the factors (fp16 as the host's LoraSave)."),
        io.String.Input("filename_prefix", default=prefix,
                        tooltip="Output path under the output folder; loras/... lands where the LoRA loaders look."),
    ]


def _validate_value(node, value: float) -> bool | str:
    """Only `value`, against the schema (the host skips the inputs a validator names, and lets NaN through); what
    it means depends on `mode`, so RankRule(mode, value) is checked first thing in execute."""
    return schema_refusal(node, value=value) or True


def _budget(rule: RankRule, fixed: dict[str, torch.Tensor], keys: list[str]) -> float | None:
    """Bytes left for the factors under a size_mb rule: minus fixed tensors and the header (3 tensors a module)."""
    if rule.per_layer:
        return None
    fixed_bytes = sum(t.numel() * t.element_size() + len(k) + _HEADER_BYTES for k, t in fixed.items())
    header = sum(3 * (len(k) + 20 + _HEADER_BYTES) + 4 for k in keys)
    left = rule.value * 1e6 - fixed_bytes - header
    if left <= 0:
        raise ValueError(f"{rule.value} MB does not even hold the fixed part of the file "
                         f"({(fixed_bytes + header) / 1e6:.3f} MB of biases, norms and header): raise size_mb")
    return left


def _report_text(title: str, saved: str, body: str, notes: list[str] = ()) -> str:
    return "\n".join([title, saved, *notes, body])


class PyraExtractLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraExtractLoRA",
            **search_aliases("lora extract", "welore", "svd"),
            display_name="Extract LoRA, adaptive rank (Pyra)",
            category="Pyra/adapters",
            description=(
                "Extracts a LoRA from the difference of two models with a rank per layer chosen by retained "
                "energy, a WeLore threshold or a file-size budget; randomized SVD with a stated error bound. "
                "Saves a standard LoRA (diffusion_model.* keys, alpha = rank) that the stock LoRA loaders read."
            ),
            inputs=[
                io.Model.Input("model_a", tooltip="The finetuned model (or a ModelSubtract output if model_b "
                                                  "is left unconnected)."),
                *_rule_inputs("energy", 0.9),
                io.Int.Input("max_rank", default=256, min=1, max=8192,
                             tooltip="Largest rank any layer may get; singular triplets beyond it are never "
                                     "computed. Layers that hit it are marked * in the report."),
                io.Combo.Input("method", **advanced(), options=list(METHODS), default="randomized",
                               tooltip="randomized: Halko-Martinsson-Tropp SVD with 2 power iterations, much "
                                       "faster on large layers; exact: full SVD (the reference)."),
                io.Combo.Input("device", **advanced(), options=["auto", "cpu"], default="auto",
                               tooltip="Where the SVDs run: auto = the host's compute device (GPU if present)."),
                io.Boolean.Input("bias_diff", **advanced(), default=True,
                                 tooltip="Also store bias and norm differences in full (.diff_b / .diff), as "
                                         "LoraSave's bias_diff does."),
                *_common_inputs("loras/pyra_extracted_lora"),
                io.Model.Input("model_b", optional=True, tooltip="The base model the finetune started from."),
            ],
            outputs=[io.String.Output("report", tooltip="Per layer: rank, retained energy, relative error.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, value: float) -> bool | str:
        return _validate_value(cls, value)

    @classmethod
    def execute(cls, model_a, mode, value, max_rank, method, device, bias_diff, dtype, filename_prefix,
                model_b=None) -> io.NodeOutput:
        rule, store = RankRule(mode, value), lora_host.store_dtype(dtype)
        lora_host.refuse_outside_output(filename_prefix)
        dev = lora_host.compute_device(device)
        layers, vectors = lora_host.model_differences(model_a, model_b, dev)
        fixed = {}
        if bias_diff:
            for key, fn in vectors.items():
                d = fn()
                if torch.any(d):
                    fixed[key] = d.to(store).cpu()
        budget = _budget(rule, fixed, [k for k, _, _ in layers])
        held = memory_needed(layers, rule, max_rank)
        lower = "lower value (rank mode) or max_rank, or extract on the other device"
        if rule.per_layer and dev.type != "cpu":  # each layer's triplets move to the CPU once its rank is chosen
            memory_budget.refuse_over({"kept singular triplets": held["kept singular triplets"]}, torch.device("cpu"),
                                      "PyraExtractLoRA", lower)
            held.pop("kept singular triplets")
        memory_budget.refuse_over(held, dev, "PyraExtractLoRA", lower)
        ex = extract_lora(layers, rule, max_rank, method, dev, store, budget, lora_host.progress(len(layers)))
        tensors = {**ex.tensors, **fixed}
        settings = {"tool": "extract", "mode": mode, "value": value, "max_rank": max_rank, "method": method}
        saved = lora_host.save(tensors, filename_prefix, settings)
        text = _report_text(f"PyraExtractLoRA: {mode} {value}, {method} SVD, max_rank {max_rank}", saved,
                            ex.report("relative error of the factors before rounding to " + dtype),
                            [f"{len(fixed)} bias/norm differences stored in full"] if fixed else [])
        return io.NodeOutput(text, ui=ui.PreviewText(text))


def _lora_combo(name: str, optional_none: bool) -> io.Combo.Input:
    names = lora_host.lora_names()
    return io.Combo.Input(name, options=(["None", *names] if optional_none else names),
                          tooltip="A LoRA file from the loras folders (output/loras included)."
                                  + (" None leaves the slot empty." if optional_none else ""))


def _model_check_input() -> io.Model.Input:
    return io.Model.Input("model", optional=True,
                          tooltip="Optional: check the LoRA's keys and shapes against this model and store "
                                  "matched modules under its diffusion_model.* keys.")


def _read(name: str, model) -> tuple[LoraFile, list[str]]:
    sd, lora = lora_host.read_lora(name)
    if model is None:
        return lora, []
    lora, note = lora_host.match_model(name, sd, lora, model)
    return lora, [note]


class PyraResizeLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraResizeLoRA",
            **search_aliases("lora resize", "lora rank"),
            display_name="Resize LoRA (Pyra)",
            category="Pyra/adapters",
            description=(
                "Changes the rank of a LoRA exactly: QR of the factors and an SVD of the small core give the best "
                "approximation at the new rank without forming the full weight delta. Alpha is folded in."
            ),
            inputs=[
                _lora_combo("lora_name", False),
                *_rule_inputs("rank", 16.0),
                *_common_inputs("loras/pyra_resized_lora"),
                _model_check_input(),
            ],
            outputs=[io.String.Output("report", tooltip="Per layer: new rank, retained energy, relative error.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, value: float) -> bool | str:
        return _validate_value(cls, value)

    @classmethod
    def execute(cls, lora_name, mode, value, dtype, filename_prefix, model=None) -> io.NodeOutput:
        rule = RankRule(mode, value)
        lora_host.refuse_outside_output(filename_prefix)
        lora, notes = _read(lora_name, model)
        budget = _budget(rule, {**lora.additive, **lora.other}, list(lora.modules))
        ex = resize_lora(lora, rule, lora_host.store_dtype(dtype), budget, lora_host.progress(len(lora.modules)))
        saved = lora_host.save(ex.tensors, filename_prefix, {"tool": "resize", "source": lora_name, "mode": mode,
                                                             "value": value})
        text = _report_text(f"PyraResizeLoRA: {lora_name}, {mode} {value}", saved,
                            ex.report("relative error vs the input LoRA's delta"), notes)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class PyraMergeLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        slots = []
        for i in range(1, MERGE_SLOTS + 1):
            slots += [_lora_combo(f"lora_{i}", i > 1),
                      io.Float.Input(f"weight_{i}", default=1.0, min=-10.0, max=10.0, step=0.05,
                                     tooltip=f"Multiplier of LoRA {i}'s delta (its alpha is applied as well).")]
        return io.Schema(
            node_id="PyraMergeLoRA",
            **search_aliases("lora merge", "ties", "dare"),
            display_name="Merge LoRAs (Pyra)",
            category="Pyra/adapters",
            description=(
                "Merges up to four LoRAs with weights into one: the exact weighted sum recompressed by the rank "
                "rule, or TIES / DARE on each layer's delta. Module keys must match (connect a model to map "
                "different key styles onto its keys)."
            ),
            inputs=[
                *slots,
                io.Combo.Input("merge", options=list(MERGE_MODES), default="sum",
                               tooltip="sum: exact weighted sum. ties: trim to the largest entries, elect signs, "
                                       "average agreeing entries. dare: randomly keep entries, rescale."),
                io.Float.Input("density", **advanced(), default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="ties/dare: fraction of each delta's entries kept (sum ignores it)."),
                io.Int.Input("seed", **advanced(), default=0, min=0, max=2**31 - 1,
                             tooltip="dare: the drop pattern's seed."),
                *_rule_inputs("energy", 0.999),
                *_common_inputs("loras/pyra_merged_lora"),
                _model_check_input(),
            ],
            outputs=[io.String.Output("report", tooltip="Per layer: merged rank, retained energy, relative error.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, value: float) -> bool | str:
        return _validate_value(cls, value)

    @classmethod
    def execute(cls, merge, density, seed, mode, value, dtype, filename_prefix, model=None, **slots) -> io.NodeOutput:
        refuse_non_finite(density=density, **{k: v for k, v in slots.items() if k.startswith("weight_")})
        rule = RankRule(mode, value)
        lora_host.refuse_outside_output(filename_prefix)
        chosen = [(slots[f"lora_{i}"], slots[f"weight_{i}"]) for i in range(1, MERGE_SLOTS + 1)
                  if slots[f"lora_{i}"] != "None"]
        loras, notes = [], []
        for name, _ in chosen:
            lora, note = _read(name, model)
            loras.append(lora)
            notes += note
        keys = list(dict.fromkeys(k for lora in loras for k in lora.modules))
        budget = _budget(rule, {k: t for lora in loras for k, t in lora.additive.items()}, keys)
        ex = merge_loras(loras, [w for _, w in chosen], rule, merge, density, lora_host.store_dtype(dtype),
                         budget_bytes=budget, on_layer=lora_host.progress(len(keys)), seed=seed)
        settings = {"tool": "merge", "sources": chosen, "merge": merge, "density": density, "mode": mode,
                    "value": value}
        saved = lora_host.save(ex.tensors, filename_prefix, settings)
        title = f"PyraMergeLoRA: {merge} of " + ", ".join(f"{n} x {w}" for n, w in chosen)
        text = _report_text(title, saved, ex.report("relative error vs the merged delta before recompression"),
                            notes)
        return io.NodeOutput(text, ui=ui.PreviewText(text))
