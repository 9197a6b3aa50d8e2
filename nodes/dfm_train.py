"""PyraDFMTrain: finetunes a DFM model's per-level layers (and a LoRA on its core) and saves a resumable run."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..core.dfm.train import TrainConfig
from . import dfm_model
from .dfm_training import CORE_MODES, train_dfm
from .host_features import advanced, search_aliases


class PyraDFMTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDFMTrain", display_name="DFM Train (Pyra)", category="Pyra/sampling", is_output_node=True,
            **search_aliases("decomposable flow matching", "dfm", "finetune"), is_experimental=True,
            description=("Finetunes a DFM model (PyraDFMConvert) on training latents with the DFM objective: per "
                         "level flow matching, the current stage's noise level logit-normal, earlier levels nearly "
                         "clean, later ones pure noise. The per-level layers train fully, the core through a LoRA "
                         "(or stays frozen). Saves output/dfm/<name>.safetensors (PyraDFMLoader reads it) and "
                         "<name>.optimizer.pt, from which resume continues."),
            inputs=[
                io.Model.Input("model", tooltip="A DFM model from PyraDFMConvert (it is copied, never changed)."),
                io.Latent.Input("latents", tooltip="Training latents (a batch); VAE-encode your images to get them."),
                io.Conditioning.Input("positive", tooltip="One conditioning for all latents, or one per latent."),
                io.Int.Input("steps", default=200, min=1, max=1000000, tooltip="Optimizer steps in this run."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-5,
                               tooltip="AdamW learning rate."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="Latents per step."),
                io.Combo.Input("core", options=list(CORE_MODES), default="lora",
                               tooltip="lora: a LoRA on the core's attention/MLP layers trains with the new layers. "
                                       "frozen: only the new per-level layers train."),
                io.Int.Input("lora_rank", default=8, min=1, max=256, tooltip="Rank of the core LoRA (core = lora)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the timesteps, noise, batches and the LoRA init."),
                io.Boolean.Input("gradient_checkpointing", default=False,
                                 tooltip="Recompute the core's blocks in the backward pass: less memory, slower."),
                io.Boolean.Input("bf16", default=False, tooltip="Train under bfloat16 autocast (GPU)."),
                io.String.Input("save_name", default="pyra-dfm-trained",
                                tooltip="File name in output/dfm/ (.safetensors, plus .optimizer.pt for resume)."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue the run saved under save_name (its layers, LoRA, optimizer and "
                                         "step count) instead of starting from the input model's layers. Its "
                                         "core, lora_rank and learning_rate must be the saved run's."),
                io.Boolean.Input("overwrite", **advanced(), default=False, optional=True,
                                 tooltip="resume off: start a new run over a saved one of this name; off: an "
                                         "existing save_name is refused."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The trained DFM model (a new copy); sample it with "
                                                              "PyraDFMSampler."),
                io.Custom("LOSS_MAP").Output(display_name="loss", tooltip="Loss per step ({'loss': [...]}); the "
                                                                          "host's Plot Loss Graph reads it."),
                io.String.Output(display_name="report", tooltip="File, steps, trainable values and the loss at the "
                                                                "start and end of the run."),
            ],
        )

    @classmethod
    def execute(cls, model, latents, positive, steps, learning_rate, batch_size, core, lora_rank, seed,
                gradient_checkpointing, bf16, save_name, resume, overwrite: bool = False) -> io.NodeOutput:
        path = dfm_model.output_file(save_name)
        name = path.name
        if not resume and not overwrite:
            dfm_model.refuse_existing(path, "turn resume on to continue that run, choose another save_name, or turn "
                                            "overwrite on to start over under this name")
        config = TrainConfig(levels=dfm_model.runner_of(model).levels, lr=learning_rate, core=core, rank=lora_rank,
                             checkpointing=gradient_checkpointing, bf16=bf16, seed=seed)
        bar = comfy.utils.ProgressBar(steps)

        def on_step(done: int, total: int, loss) -> None:
            bar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        result = train_dfm(model, latents["samples"], positive, config, steps, batch_size, path, resume, on_step)
        text = report(result, f"dfm/{name}")
        return io.NodeOutput(result.model, {"loss": result.losses}, text, ui=ui.PreviewText(text))


def report(result, shown: str) -> str:
    k = max(1, len(result.losses) // 10)
    first, last = result.losses[:k], result.losses[-k:]
    return "\n".join([
        f"PyraDFMTrain: steps {result.start_step} -> {result.step} in {result.seconds:.1f} s",
        f"saved {shown} (+ optimizer state for resume)",
        f"{result.trainable} trainable values",
        f"loss (mean of {k} steps) {sum(first) / k:.5f} -> {sum(last) / k:.5f}",
        f"fixed-noise loss {result.probe_before:.5f} -> {result.probe_after:.5f}",
        "per-level loss, last step (coarse first): " + ", ".join(f"{x:.5f}" for x in result.level_losses[-1]),
    ])
