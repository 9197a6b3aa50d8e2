"""DFM nodes: convert a flow model into a DFM model, save and load DFM checkpoints, sample stage by stage."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io

from ..core.dfm.sampler import SOLVERS, parse_plan
from . import dfm_model
from .dfm_sampling import sample_dfm_host
from .host_features import search_aliases
from .validation import refuse_non_finite

FOLDER = dfm_model.FOLDER
dfm_model.register_folder()


def _dfm_names() -> list[str]:
    dfm_model.register_folder()
    return folder_paths.get_filename_list(FOLDER)


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
                    io.Combo.Input("dfm_name", options=_dfm_names(),
                                   tooltip="The DFM checkpoint.")],
            outputs=[io.Model.Output(tooltip="The DFM model; sample it with PyraDFMSampler.")],
        )

    @classmethod
    def execute(cls, model, dfm_name: str) -> io.NodeOutput:
        dfm_model.register_folder()
        path = folder_paths.get_full_path(FOLDER, dfm_name)
        if path is None:
            raise dfm_model.DFMError(f"no DFM checkpoint {dfm_name!r} in models/dfm or output/dfm")
        return io.NodeOutput(dfm_model.load(model, path))


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
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
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
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        if sigmas is None:
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, plan.total)
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sampler = comfy.samplers.KSAMPLER(sample_dfm_host, extra_options={"plan": plan, "solver": solver})
        callback = latent_preview.prepare_callback(model, plan.total)
        samples = guider.sample(noise, latent, sampler, sigmas.cpu(), callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return io.NodeOutput(out)
