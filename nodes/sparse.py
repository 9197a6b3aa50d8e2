"""The Pyra/sparse nodes: 2:4 structured sparsity, feature slicing, the step cache and block-sparse attention,
each as per-clone patches of a MODEL."""

from __future__ import annotations

import dataclasses
import logging

from comfy_api.latest import io

from ..core.cache import PRESETS
from ..core.sparse import FILTERS
from ..host import multigpu, sparse_attention, step_cache
from ..host.feature_slicing import slice_features
from ..host.models import SigmaWindow, family_names
from ..host.sparse_attention import SparseSettings
from ..host.sparsify import backend_note, format_report, sparsify_model
from ..host.step_cache import StepCacheError
from ..host.validation import refuse_empty_window, refuse_non_finite
from .schema import advanced, search_aliases


class PyraSparsify(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraSparsify",
            **search_aliases("2:4 sparsity", "pruning", "wanda", "sparse weights"),
            display_name="Sparsify 2:4 (Pyra)",
            category="Pyra/sparse",
            description=(
                "Prunes the diffusion model's linear layers to 2:4 structured sparsity (2 of every 4 input "
                "weights, by magnitude or Wanda score) with an optional low-rank correction, and runs them on "
                "sparse tensor cores (cuSPARSELt, sm80+ GPUs, bf16 weights); elsewhere the masked weights run "
                "densely. Per-clone patch: the input model is untouched, LoRAs and low-VRAM loading keep working. "
                "One-shot pruning without retraining changes the output: check the report's per-layer error. "
                "On the GPU a layer on the kernel keeps only its compressed weight; a layer whose token count "
                "makes the dense matmul faster (timed once per shape, e.g. one-token modulations) keeps its "
                "2:4-masked weight dense."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to sparsify (a patched clone is returned)."),
                io.Combo.Input("layers", options=list(FILTERS), default="mlp",
                               tooltip="Which linear layers: all, attention, mlp (feed-forward), or regex "
                                       "(module names matched by name_regex)."),
                io.String.Input("name_regex", default="",
                                tooltip="Python regex searched in module names when layers is 'regex', e.g. "
                                        "'img_mlp|txt_mlp'."),
                io.Combo.Input("score", options=["magnitude", "wanda"], default="magnitude",
                               tooltip="Which 2 of every 4 weights to keep: largest magnitude, or Wanda (magnitude "
                                       "times the input channel's activation norm, calibrated on the first sampling "
                                       "steps of your own prompt; measured closer to the dense model)."),
                io.Int.Input("calibration_steps", **advanced(), default=2, min=1, max=100,
                             tooltip="Wanda only: how many steps of the first sampling run stay dense while the "
                                     "activation norms are recorded; the rest of that run and later runs are sparse."),
                io.Int.Input("lowrank_rank", default=0, min=0, max=1024,
                             tooltip="Rank of the correction of the pruning residual (truncated SVD); 0 = none. "
                                     "Higher is closer to the dense model and slower."),
                io.Int.Input("speed_check_tokens", **advanced(), default=4096, min=0, max=1_000_000,
                             tooltip="On a GPU, time each layer dense vs sparse at this many tokens (e.g. 4096 + "
                                     "512 for Flux at 1024x1024) and keep it dense where sparse is not faster or "
                                     "has no kernel; 0 skips the check (every selected layer is pruned)."),
            ],
            outputs=[
                io.Model.Output(tooltip="The sparsified model (a clone; the input model is unchanged)."),
                io.String.Output("report", tooltip="Layers sparsified, kept dense or skipped (with the reason), "
                                                   "and each layer's relative output error on random inputs."),
            ],
        )

    @classmethod
    def execute(cls, model, layers: str, name_regex: str, score: str, calibration_steps: int, lowrank_rank: int,
                speed_check_tokens: int) -> io.NodeOutput:
        patched, results = sparsify_model(model, layers, name_regex, lowrank_rank, speed_check_tokens, score,
                                          calibration_steps)
        report = format_report(results, lowrank_rank, backend_note(model), score, calibration_steps)
        return io.NodeOutput(patched, report)


log = logging.getLogger("pyra")


class PyraFeatureSlicing(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraFeatureSlicing",
            **search_aliases("low memory", "chunked feed forward", "streamlined inference"),
            display_name="Feature Slicing (Pyra)",
            category="Pyra/sparse",
            description="Runs the token-wise parts of the model's transformer blocks over slices of the tokens, "
                        "so their activations exist for one slice at a time: lower peak memory at large sizes "
                        "(video, high resolution), the same result. Wan blocks run whole in slices around one "
                        "attention over all tokens (about half the block's peak); other models' blocks slice "
                        "their feed-forward networks.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3, Flux, Z-Image or Wan 2.1 / 2.2 model (a "
                                                "patched clone is returned)."),
                io.Int.Input("slice_tokens", default=4096, min=64, max=1_000_000, step=64,
                             tooltip="Tokens per slice. Smaller saves more memory and costs more launches; "
                                     "inputs up to this size run whole."),
            ],
            outputs=[io.Model.Output(tooltip="The model with sliced transformer blocks.")],
        )

    @classmethod
    def execute(cls, model, slice_tokens) -> io.NodeOutput:
        clone, report = slice_features(model, slice_tokens)
        log.info(report.summary())
        return io.NodeOutput(clone)


PRESET_CHOICES = ["auto", *PRESETS]


class PyraStepCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraStepCache",
            **search_aliases("teacache", "easycache", "deepcache", "magcache", "step cache"),
            display_name="Step Cache (Pyra)",
            category="Pyra/sparse",
            description=(
                "Skips the expensive part of the model on steps where a cheap early feature barely changed: "
                "SD1.5/SDXL reuse the deep UNet blocks' output (Step Rehash); the DiTs (SD3, Flux.1/2, Wan 2.1/2.2, "
                "Chroma, Qwen-Image, HunyuanVideo, LTX-Video, LTX-2) skip the middle transformer blocks and add "
                "their cached residual. Separate caches per cond/uncond and batch "
                "item; the cache resets on any size change. Logs computed vs reused evaluations after sampling."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3, Flux.1/2, Wan 2.1/2.2, Chroma, Qwen-Image, "
                                                "HunyuanVideo, LTX-Video or LTX-2 model (LoRA and ControlNet "
                                                "compose). Wan 2.2 A14B: one per expert."),
                io.Combo.Input("preset", options=PRESET_CHOICES, default="auto",
                               tooltip="The model family's preset (blocks kept and threshold); auto detects it."),
                io.Float.Input("threshold", default=-1.0, min=-1.0, max=5.0, step=0.01,
                               tooltip="Reuse while the accumulated relative change of the early feature stays "
                                       "below this. -1 uses the preset's value, 0 never reuses (exact output), "
                                       "larger values reuse more steps and deviate more."),
                io.Float.Input("start_percent", default=0.15, min=0.0, max=1.0, step=0.01,
                               tooltip="No reuse before this fraction of the schedule (early steps set the "
                                       "composition)."),
                io.Float.Input("end_percent", default=0.95, min=0.0, max=1.0, step=0.01,
                               tooltip="No reuse after this fraction of the schedule (the last steps set fine "
                                       "detail)."),
                io.Boolean.Input("cache_on_cpu", **advanced(), default=False,
                                 tooltip="Keep the cached features in CPU memory: less GPU memory, a copy per "
                                         "step."),
                io.Int.Input("max_reused_in_a_row", **advanced(), default=0, min=0, max=100, optional=True,
                             tooltip="At most this many consecutive reused steps, then a full one (0: no "
                                     "limit). A guard for models whose early feature barely moves while the "
                                     "output does."),
                io.Boolean.Input("extrapolate", **advanced(), default=False, optional=True,
                                 tooltip="On a reused step, extend the cached features along the line through "
                                         "their last two computed values (first order in sigma) instead of "
                                         "repeating the last ones: closer to the uncached result when features "
                                         "drift steadily, at the same number of reused steps."),
                io.Int.Input("unet_shallow_blocks", **advanced(), default=-1, min=-1, max=12, optional=True,
                             tooltip="SD1.5/SDXL: input blocks still computed on a reused step (their output "
                                     "blocks too). -1 uses the preset (2: the input convolution and the first "
                                     "ResBlock), 0 everything above the first downsampling (Step Rehash's split: "
                                     "closer to the uncached output, less saved); ignored by DiTs."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is untouched.")],
        )

    @classmethod
    def execute(cls, model, preset: str, threshold: float, start_percent: float, end_percent: float,
                cache_on_cpu: bool, max_reused_in_a_row: int = 0, extrapolate: bool = False,
                unet_shallow_blocks: int = -1) -> io.NodeOutput:
        refuse_non_finite(threshold=threshold, start_percent=start_percent, end_percent=end_percent)
        refuse_empty_window(start_percent, end_percent, "steps that may reuse", StepCacheError)
        family = step_cache.detect_family(model)
        if preset != "auto" and PRESETS[preset].kind != PRESETS[family].kind:
            raise StepCacheError(f"preset {preset!r} is for a {PRESETS[preset].kind} but this is a {family} "
                                 f"model: choose auto or {family}")
        chosen = PRESETS[family if preset == "auto" else preset]
        if unet_shallow_blocks >= 0:
            chosen = dataclasses.replace(chosen, shallow=unet_shallow_blocks)
        if extrapolate:
            chosen = dataclasses.replace(chosen, extrapolate=True)
        value = chosen.threshold if threshold < 0 else threshold
        patched = model.clone()
        multigpu.guard(patched, "PyraStepCache")
        step_cache.install(patched, family, value, start_percent, end_percent, cache_on_cpu, chosen,
                           max_reused_in_a_row)
        return io.NodeOutput(patched)


class PyraSparseAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraSparseAttention",
            **search_aliases("sparse attention", "block sparse attention", "radial attention"),
            display_name="Block-Sparse Attention (Pyra)",
            category="Pyra/sparse",
            description=(
                f"Self-attention of {family_names(sparse_attention.FAMILIES)} models skips key blocks that a cheap "
                "predictor "
                "(mean-pooled queries and keys per block) finds unimportant; the diagonal and the text tokens "
                "are always kept. Uses FlexAttention on CUDA (compiled once per shape), the dense masked "
                "reference elsewhere. Outside the step window attention stays dense, optionally on the fastest "
                "SDPA backend (cuDNN first). Logs the sparsity reached after each sampling run."
            ),
            inputs=[
                io.Model.Input("model", tooltip=f"The model to patch: {family_names(sparse_attention.FAMILIES)}."),
                io.Float.Input("keep_mass", default=0.9, min=0.01, max=1.0, step=0.01,
                               tooltip="Per query block, keep the top key blocks up to this cumulative share "
                                       "of the pooled attention mass; 1.0 keeps every block (dense result)."),
                io.Float.Input("keep_ratio", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="If above 0, keep exactly this fraction of key blocks per query block "
                                       "instead of using keep_mass (0.2 = 80% block sparsity)."),
                io.Combo.Input("block_size", **advanced(), options=["128", "64"], default="128",
                               tooltip="Tokens per block of the mask; 128 suits FlexAttention on the GPU."),
                io.Float.Input("start_percent", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Attention stays dense before this fraction of the schedule (the early "
                                       "steps set the layout)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Attention is dense again after this fraction of the schedule."),
                io.Int.Input("text_tokens", **advanced(), default=-1, min=-1, max=4096,
                             tooltip="Leading text tokens always kept (SD3, Flux, Chroma, Qwen-Image joint "
                                     "attention); -1 takes the conditioning's token count, 0 keeps none. The "
                                     "self-attention of Wan and LTX has no text tokens."),
                io.Boolean.Input("fastest_dense_backend", **advanced(), default=True,
                                 tooltip="Run dense attention (outside the window, cross-attention) on the "
                                         "fastest SDPA backend on CUDA: cuDNN, then flash. Exact."),
                io.Boolean.Input("video_tiles", **advanced(), default=True, optional=True,
                                 tooltip="Video DiTs (Wan, HunyuanVideo, LTX): each block of the mask is a compact "
                                         "frames x height x width tile of the patch grid instead of a strip of "
                                         "one row. Off: the model's own token order."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is untouched.")],
        )

    @classmethod
    def execute(cls, model, keep_mass: float, keep_ratio: float, block_size: str, start_percent: float,
                end_percent: float, text_tokens: int, fastest_dense_backend: bool,
                video_tiles: bool = True) -> io.NodeOutput:
        refuse_non_finite(keep_mass=keep_mass, keep_ratio=keep_ratio, start_percent=start_percent,
                          end_percent=end_percent)
        refuse_empty_window(start_percent, end_percent, "sparse steps")
        family = sparse_attention.detect_family(model)
        settings = SparseSettings(keep_mass, keep_ratio, int(block_size), SigmaWindow(start_percent, end_percent),
                                  text_tokens, fastest_dense_backend, video_tiles)
        patched = model.clone()
        multigpu.guard(patched, "PyraSparseAttention")
        sparse_attention.install(patched, family, settings)
        return io.NodeOutput(patched)
