"""PyraSparseAttention: block-sparse self-attention with a training-free block mask on SD3, Flux and Wan."""

from __future__ import annotations

from comfy_api.latest import io

from . import multigpu_guard
from .host_features import advanced, search_aliases
from .sparse_attention_hooks import FAMILIES, SparseSettings, detect_family, install
from .validation import refuse_empty_window, refuse_non_finite


class PyraSparseAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraSparseAttention",
            **search_aliases("sparse attention", "block sparse attention", "radial attention"),
            display_name="Block-Sparse Attention (Pyra)",
            category="Pyra/sparse",
            description=(
                f"Self-attention of {', '.join(FAMILIES)} models skips key blocks that a cheap predictor "
                "(mean-pooled queries and keys per block) finds unimportant; the diagonal and the text tokens "
                "are always kept. Uses FlexAttention on CUDA (compiled once per shape), the dense masked "
                "reference elsewhere. Outside the step window attention stays dense, optionally on the fastest "
                "SDPA backend (cuDNN first). Logs the sparsity reached after each sampling run."
            ),
            inputs=[
                io.Model.Input("model", tooltip=f"A {', '.join(FAMILIES)} model."),
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
                             tooltip="Leading text tokens always kept (SD3, Flux joint attention); -1 takes "
                                     "the conditioning's token count, 0 keeps none. Wan's self-attention "
                                     "has no text tokens."),
                io.Boolean.Input("fastest_dense_backend", **advanced(), default=True,
                                 tooltip="Run dense attention (outside the window, cross-attention) on the "
                                         "fastest SDPA backend on CUDA: cuDNN, then flash. Exact."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is untouched.")],
        )

    @classmethod
    def execute(cls, model, keep_mass: float, keep_ratio: float, block_size: str, start_percent: float,
                end_percent: float, text_tokens: int, fastest_dense_backend: bool) -> io.NodeOutput:
        refuse_non_finite(keep_mass=keep_mass, keep_ratio=keep_ratio, start_percent=start_percent,
                          end_percent=end_percent)
        refuse_empty_window(start_percent, end_percent, "sparse steps")
        family = detect_family(model)
        sampling = model.get_model_object("model_sampling")
        settings = SparseSettings(keep_mass, keep_ratio, int(block_size), sampling.percent_to_sigma(start_percent),
                                  sampling.percent_to_sigma(end_percent), text_tokens, fastest_dense_backend)
        patched = model.clone()
        multigpu_guard.guard(patched, "PyraSparseAttention")
        install(patched, family, settings)
        return io.NodeOutput(patched)
