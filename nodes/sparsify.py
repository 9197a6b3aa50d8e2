"""PyraSparsify: 2:4 structured sparsity on a diffusion model's linear layers, as per-clone object patches."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.sparse import FILTERS
from .host_features import advanced, search_aliases
from .sparsify_apply import backend_note, format_report, sparsify_model


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
