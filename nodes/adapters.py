"""The Pyra/adapters nodes: sparse and Householder adapter training, LoRA extraction with adaptive rank, exact
resize, weighted merge (sum, TIES, DARE), and SaRA checkpoint conversion."""

from __future__ import annotations

import json

import torch
from comfy_api.latest import io, ui

from ..core.adapters import sparse
from ..core.adapters.extract import extract_lora, memory_needed
from ..core.adapters.lora_file import LoraFile, save_lora
from ..core.adapters.rank import MODES, RankRule
from ..core.adapters.resize import MERGE_MODES, merge_loras, resize_lora
from ..core.adapters.svd import METHODS
from ..host import features as host_features
from ..host import lora, memory
from ..host import lora as lora_host
from ..host.progress import progress
from ..host.sara import convert, sara_files, sara_path
from ..host.training import TrainSettings, train
from ..host.validation import refuse_non_finite, schema_refusal
from .schema import advanced, search_aliases

ADAPTER_TYPES = ("sparse", "householder")


class PyraTrainSparseAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraTrainSparseAdapter",
            **search_aliases("train lora", "sara", "householder", "hra adapter"), is_experimental=True,
            display_name="Train Sparse / Householder Adapter (Pyra)",
            category="Pyra/adapters",
            description=(
                "Trains an adapter on a few latents with the host's training loop and saves it under output/loras, "
                "where the stock LoRA loaders read it. sparse (SaRA): only weights with |w| below the threshold "
                "train, with a nuclear-norm term and progressive reselection; the file stores explicit indices. "
                "householder (HRA): each matrix weight is multiplied by a product of reflections."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to adapt (it is cloned, never changed)."),
                io.Latent.Input("latents", tooltip="Training latents (a batch); VAE-encode your images to get them."),
                io.Conditioning.Input("positive", tooltip="One conditioning for all latents, or one per latent."),
                io.Combo.Input("adapter_type", options=list(ADAPTER_TYPES), default="sparse",
                               tooltip="sparse: SaRA sparse delta. householder: HRA, W times r Householder "
                                       "reflections (orthogonal, keeps the weight's singular values)."),
                io.Int.Input("steps", default=20, min=1, max=100000, tooltip="Optimizer steps."),
                io.Float.Input("learning_rate", default=5e-4, min=1e-7, max=1.0, step=1e-5,
                               tooltip="AdamW learning rate (SaRA's default at threshold 2e-3 is about 5e-4)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Latents per step."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of timesteps, noise, batches and the Householder init."),
                io.Float.Input("threshold", default=2e-3, min=1e-6, max=1.0, step=1e-4,
                               tooltip="sparse: entries with |w| below this train (SaRA default 2e-3)."),
                io.Float.Input("lambda_rank", **advanced(), default=5e-4, min=0.0, max=1.0, step=1e-4,
                               tooltip="sparse: weight of the nuclear-norm (low-rank) term on one random large "
                                       "matrix per step; 0 turns it off."),
                io.Float.Input("reselect_at", **advanced(), default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="sparse: fraction of the steps after which entries that grew past the "
                                       "threshold are frozen (SaRA: 2500 of 5005 steps)."),
                io.Int.Input("reflections", default=8, min=2, max=256, step=2,
                             tooltip="householder: reflections per weight (even: they start as identical pairs, "
                                     "so training starts at the unchanged model)."),
                io.String.Input("filename_prefix", default="loras/pyra_sparse_adapter",
                                tooltip="Output path under the output folder; loras/... lands where the LoRA "
                                        "loaders look."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the trained adapter applied, "
                                                              "loaded from the saved tensors by the host's loader."),
                io.String.Output(display_name="lora_name", tooltip="The saved file, as LoraLoader lists it."),
                io.Custom("LOSS_MAP").Output(display_name="loss", tooltip="Loss per step ({'loss': [...]}); "
                                                                          "the host's Plot Loss Graph reads it."),
                io.String.Output(display_name="report", tooltip="File, sizes and the fixed-batch loss before and "
                                                                "after training."),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, reflections: int = 8) -> bool | str:
        """Only `reflections` (the host checks every other input against the schema): the host's TrainSampler,
        the schema bounds the host leaves to a validator, and an even count."""
        refusal = host_features.train_sampler_refusal("PyraTrainSparseAdapter")
        refusal = refusal or schema_refusal(cls, reflections=reflections)
        if refusal:
            return refusal
        if reflections % 2:
            return f"reflections must be even (identical pairs start as the identity), got {reflections}"
        return True

    @classmethod
    def execute(cls, model, latents, positive, adapter_type, steps, learning_rate, batch_size, seed, threshold,
                lambda_rank, reselect_at, reflections, filename_prefix) -> io.NodeOutput:
        refuse_non_finite(learning_rate=learning_rate, threshold=threshold, lambda_rank=lambda_rank,
                          reselect_at=reselect_at)
        if adapter_type not in ADAPTER_TYPES:  # hosts before 0.8 do not check V3 combo values
            raise ValueError(f"adapter_type {adapter_type!r} is not one of {', '.join(ADAPTER_TYPES)}")
        lora_host.refuse_outside_output(filename_prefix)
        settings = TrainSettings(adapter_type, steps, learning_rate, batch_size, seed, threshold, lambda_rank,
                                 reselect_at, reflections)
        result = train(model, latents["samples"], positive, settings)
        path, shown = lora_host.output_path(filename_prefix)
        size = save_lora(result.tensors, path, metadata={"pyra": json.dumps({"tool": "train", **vars(settings)})})
        adapted = lora_host.apply_tensors(model, result.tensors)
        lines = [
            f"PyraTrainSparseAdapter: {adapter_type}, {steps} steps, lr {learning_rate}",
            f"saved {shown} ({size / 1e6:.2f} MB, {len(result.tensors)} tensors)",
            f"{result.trainable} trainable values in {result.modules} tensors",
            f"fixed-batch loss {result.probe_before:.6f} -> {result.probe_after:.6f}",
        ]
        if adapter_type == "sparse":
            lines.append(f"{100 * result.frozen_fraction:.2f}% of the selected entries frozen by reselection")
        text = "\n".join(lines)
        name = shown[len("loras/"):] if shown.startswith("loras/") else shown
        return io.NodeOutput(adapted, name, {"loss": result.losses}, text, ui=ui.PreviewText(text))


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
                                         "LoraSave's bias_diff does, and those of bare parameters (Wan's "
                                         "modulation, LTX's scale_shift_table, pad tokens)."),
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
            memory.refuse_over({"kept singular triplets": held["kept singular triplets"]}, torch.device("cpu"),
                                      "PyraExtractLoRA", lower)
            held.pop("kept singular triplets")
        memory.refuse_over(held, dev, "PyraExtractLoRA", lower)
        ex = extract_lora(layers, rule, max_rank, method, dev, store, budget, progress(len(layers)))
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
        ex = resize_lora(lora, rule, lora_host.store_dtype(dtype), budget, progress(len(lora.modules)))
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
                         budget_bytes=budget, on_layer=progress(len(keys)), seed=seed)
        settings = {"tool": "merge", "sources": chosen, "merge": merge, "density": density, "mode": mode,
                    "value": value}
        saved = lora_host.save(ex.tensors, filename_prefix, settings)
        title = f"PyraMergeLoRA: {merge} of " + ", ".join(f"{n} x {w}" for n, w in chosen)
        text = _report_text(title, saved, ex.report("relative error vs the merged delta before recompression"),
                            notes)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class PyraConvertSaRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = sara_files()
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
                io.Combo.Input("dtype", options=list(lora.DTYPES), default="fp32",
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
        lora.refuse_outside_output(filename_prefix)
        tensors, threshold, count = convert(model, sara_path(sara_file), lora.store_dtype(dtype))
        out, shown = lora.output_path(filename_prefix)
        size = save_lora(tensors, out, metadata={"pyra": json.dumps({"tool": "sara", "source": sara_file,
                                                                      "threshold": threshold})})
        values = sum(t.numel() for k, t in tensors.items() if k.endswith(sparse.VAL))
        text = (f"PyraConvertSaRA: {sara_file}, threshold {threshold}\nsaved {shown} ({size / 1e6:.2f} MB)\n"
                f"{count} tensors adapted, {values} values")
        return io.NodeOutput(text, ui=ui.PreviewText(text))
