"""PyraTrainSparseAdapter: trains a SaRA sparse adapter or an HRA Householder adapter on latents and saves it."""

from __future__ import annotations

import json

import comfy.sd
from comfy_api.latest import io, ui

from ..core.adapters.lora_file import save_lora
from . import host_features, lora_host
from .adapter_training import TrainSettings, train
from .host_features import advanced, search_aliases
from .validation import refuse_non_finite, schema_refusal

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
        adapted, _ = comfy.sd.load_lora_for_models(model, None, result.tensors, 1.0, 0)
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
