"""The DFM nodes (Decomposable Flow Matching, in Pyra/sampling): convert a flow model, save and load its
per-level layers, sample it stage-wise, and train it."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..core.dfm.sampler import SOLVERS, parse_plan
from ..core.dfm.train import TrainConfig
from ..host import dfm as dfm_model
from ..host.dfm_training import CORE_MODES, train_dfm
from ..host.progress import progress
from ..host.sampling import ksampler_run, output_latent, schedule_sigmas, scheduler_names
from ..host.validation import refuse_non_finite
from .schema import advanced, search_aliases


class PyraDFMConvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDFMConvert", display_name="DFM Convert (Pyra)", category="Pyra/sampling",
            **search_aliases("decomposable flow matching", "dfm"), is_experimental=True,
            description=("Turns a flow model (SD3 family, Flux.1 or Wan 2.1 text-to-video) into a Decomposable Flow "
                         "Matching model: a Laplacian pyramid of the latent (spatial only for video: every level "
                         "keeps all frames) with a patch embedding, time embedding and output head per level, "
                         "initialised from the model's own layers. Finetune it (PyraDFMTrain / tools/train_dfm.py) "
                         "before expecting good pictures; with 1 level it is exactly the base model."),
            inputs=[io.Model.Input("model", tooltip="A flow model of the SD3 family (MMDiT), Flux.1 (dev/schnell) or "
                                                    "Wan 2.1 text-to-video (not i2v, VACE or other variants)."),
                    io.Int.Input("levels", default=2, min=1, max=4,
                                 tooltip="Pyramid levels; at most log2(patch size) + 1 (2 for SD3, Flux and Wan).")],
            outputs=[io.Model.Output(tooltip="The DFM model; sample it with PyraDFMSampler.")],
        )

    @classmethod
    def execute(cls, model, levels: int) -> io.NodeOutput:
        return io.NodeOutput(dfm_model.convert(model, levels))


class PyraDFMSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDFMSave", display_name="DFM Save (Pyra)", category="Pyra/sampling", is_output_node=True,
            is_experimental=True,
            description="Saves a DFM model's per-level layers (not the base weights) to output/dfm/ as safetensors.",
            inputs=[io.Model.Input("model", tooltip="A DFM model (PyraDFMConvert or PyraDFMLoader)."),
                    io.String.Input("filename", default="pyra-dfm", tooltip="File name in output/dfm/."),
                    io.Boolean.Input("overwrite", default=False, optional=True,
                                     tooltip="Replace a file of this name; off: an existing file is refused.")],
            outputs=[],
        )

    @classmethod
    def execute(cls, model, filename: str, overwrite: bool = False) -> io.NodeOutput:
        path = dfm_model.output_file(filename)
        if not overwrite:
            dfm_model.refuse_existing(path, "choose another filename, or turn overwrite on to replace it")
        dfm_model.save(model, path)
        return io.NodeOutput()


class PyraDFMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDFMLoader", display_name="DFM Loader (Pyra)", category="Pyra/sampling",
            is_experimental=True,
            description=("Loads a DFM checkpoint (models/dfm or output/dfm) onto its base model: per-level layers "
                         "plus the core LoRA, if the file has one."),
            inputs=[io.Model.Input("model", tooltip="The base flow model the checkpoint was made from."),
                    io.Combo.Input("dfm_name", options=dfm_model.checkpoint_names(),
                                   tooltip="The DFM checkpoint.")],
            outputs=[io.Model.Output(tooltip="The DFM model; sample it with PyraDFMSampler.")],
        )

    @classmethod
    def execute(cls, model, dfm_name: str) -> io.NodeOutput:
        return io.NodeOutput(dfm_model.load(model, dfm_model.checkpoint_path(dfm_name)))


class PyraDFMSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDFMSampler", display_name="DFM Stage-wise Sampler (Pyra)", category="Pyra/sampling",
            **search_aliases("decomposable flow matching", "dfm", "stage-wise sampler"), is_experimental=True,
            description=("Samples a DFM model stage by stage: the coarse level alone down to its threshold, then "
                         "each finer level starts from noise while the coarser ones continue; all reach clean "
                         "together. CFG on every level; previews show the partial reconstruction."),
            inputs=[
                io.Model.Input("model", tooltip="A DFM model (PyraDFMConvert or PyraDFMLoader)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; with one level the noise (and result) equal the stock KSampler's."),
                io.String.Input("stage_steps", default="20, 8",
                                tooltip="Steps of each stage, coarse first (one number: the same for every stage)."),
                io.String.Input("thresholds", default="0.3",
                                tooltip="Noise level (1 = noise, 0 = clean) at which each stage but the last hands "
                                        "over to the next."),
                io.Combo.Input("solver", options=list(SOLVERS), tooltip="euler, or heun (second order, 2 calls/step)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, applied to every level."),
                io.Combo.Input("scheduler", options=scheduler_names(), default="simple",
                               tooltip="Shape of the noise schedule every stage follows (ignored when SIGMAS "
                                       "are connected)."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="The (empty) latent; its size is the output size."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="Optional schedule shape from a stock scheduler node, instead of scheduler."),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent.")],
        )

    @classmethod
    def execute(cls, model, seed, stage_steps, thresholds, solver, cfg, scheduler, positive, negative,
                latent_image, sigmas=None) -> io.NodeOutput:
        refuse_non_finite(cfg=cfg)
        runner = dfm_model.runner_of(model)
        plan = parse_plan(stage_steps, thresholds, runner.levels)
        run = ksampler_run(model, latent_image, seed, positive, negative, cfg, plan.total)
        if sigmas is None:
            sigmas = schedule_sigmas(model, scheduler, plan.total)
        samples = run.guider.sample(run.noise, run.latent, dfm_model.stage_sampler(plan, solver), sigmas.cpu(),
                                    callback=run.callback, disable_pbar=run.disable_pbar, seed=seed)
        out = output_latent(latent_image, samples)
        return io.NodeOutput(out)


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
        result = train_dfm(model, latents["samples"], positive, config, steps, batch_size, path, resume,
                           progress(steps))
        text = _report(result, f"dfm/{name}")
        return io.NodeOutput(result.model, {"loss": result.losses}, text, ui=ui.PreviewText(text))


def _report(result, shown: str) -> str:
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
