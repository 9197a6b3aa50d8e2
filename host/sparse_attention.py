"""PyraSparseAttention's hooks: the host's attention override (`optimized_attention_override` in
transformer_options, comfy/ldm/modules/attention.py `wrap_attn`) for the self-attention of SD3, Flux, Chroma,
Qwen-Image, HunyuanVideo (joint attention, text first), Wan and LTX-Video / LTX-2 (video tokens only, text by
cross-attention), an APPLY_MODEL wrapper that opens the sparse window in sigmas and records the text-token count, and an
OUTER_SAMPLE wrapper that turns the step window into sigmas and logs the sparsity reached per sampling run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import comfy.patcher_extension
import torch

from ..core.attention import predict_block_plan
from ..core.attention.token_tiles import sequence_order
from ..kernels.block_sparse_attention import block_sparse_attention
from ..kernels.sdpa import fastest_sdpa
from .models import SigmaWindow, patch_size, require_family, text_leads

log = logging.getLogger("pyra")
WRAPPER_KEY = "pyra_sparse_attention"
STEP_KEY = "pyra_sparse_attention_step"
FAMILIES = ("sd3", "flux", "wan21", "chroma", "qwen_image", "hunyuan_video", "ltxv", "ltx2", "lumina2")
# families whose image-token count comes from the patch grid (see _apply_model_wrapper)
GRID_FAMILIES = ("wan21", "hunyuan_video", "ltxv", "ltx2", "lumina2")


class SparseAttentionError(ValueError):
    pass


def detect_family(patcher) -> str:
    return require_family(patcher, FAMILIES, "block-sparse attention", SparseAttentionError)


@dataclass
class SparseSettings:
    keep_mass: float
    keep_ratio: float
    block_size: int
    window: SigmaWindow
    text_tokens: int  # -1: the conditioning's (HunyuanVideo: the joint attention's) text; 0 for Wan, LTX
    fastest_dense: bool
    tiles: bool = True  # blocks of (frames x height x width) tiles where the patch grid is known (video DiTs)


@dataclass
class SparseStats:
    """Counts of one sampling run. kept_blocks adds up on the attention's device (a tensor once a sparse call
    ran): reading it syncs, so it is read once, at the end of the run."""

    sparse_calls: int = 0
    dense_calls: int = 0
    kept_blocks: int | torch.Tensor = 0
    total_blocks: int = 0
    history: list[float] = field(default_factory=list)

    def sparsity(self) -> float:
        return 1.0 - int(self.kept_blocks) / self.total_blocks if self.total_blocks else 0.0

    def summary(self) -> str:
        return (f"{self.sparse_calls} sparse and {self.dense_calls} dense attention calls, "
                f"{100 * self.sparsity():.1f}% of key blocks skipped in the sparse ones")


def _to_heads(q, k, v, heads: int, skip_reshape: bool):
    """(B, N, H*D) (SD3's v comes as (B, N, H, D)) -> (B, H, N, D), as the host's attention_pytorch does."""
    if skip_reshape:
        return q, k, v
    dim_head = q.shape[-1] // heads
    return tuple(t.reshape(t.shape[0], -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))


def make_override(settings: SparseSettings, stats: SparseStats):
    """The attention override: block-sparse self-attention inside the window, the host's attention elsewhere."""
    keeps_all = settings.keep_ratio in (0.0, 1.0) and (settings.keep_mass >= 1.0 or settings.keep_ratio == 1.0)

    def override(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        step = kwargs.get("transformer_options", {}).get(STEP_KEY)
        q_len, k_len = q.shape[-2 if skip_reshape else 1], k.shape[-2 if skip_reshape else 1]
        self_attention = q_len == k_len and (step is None or _holds_the_image(step, q_len))
        if step is None or mask is not None or not self_attention:
            stats.dense_calls += 1
            if settings.fastest_dense and mask is None and q.device.type == "cuda":
                return _fastest_dense(q, k, v, heads, skip_reshape, skip_output_reshape)
            return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                        skip_output_reshape=skip_output_reshape, **kwargs)
        qh, kh, vh = _to_heads(q, k, v, heads, skip_reshape)
        text = step["text_tokens"] if step["text_tokens"] >= 0 else q_len - step["tokens"]
        text_at_end = not step["text_leads"]
        order = _tile_order(step, q_len, settings, q.device) if settings.tiles and not keeps_all else None
        if order is not None:   # image tiles first, the text (HunyuanVideo's leading text) after them
            perm, _, text = order
            text_at_end = True
            qh, kh, vh = (t.index_select(2, perm) for t in (qh, kh, vh))
        plan = predict_block_plan(qh, kh, settings.block_size, settings.keep_mass, settings.keep_ratio, text,
                                  text_at_end=text_at_end)
        stats.sparse_calls += 1
        stats.kept_blocks = stats.kept_blocks + plan.counts.sum()  # stays on the device: no sync per call
        stats.total_blocks += plan.mask.numel()
        out = block_sparse_attention(qh, kh, vh, plan, settings.block_size)
        if order is not None:
            out = out.index_select(2, order[1])
        return out if skip_output_reshape else out.transpose(1, 2).flatten(2)

    return override


def _tile_order(step: dict, q_len: int, settings: SparseSettings, device
                ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(perm over the sequence, its inverse, text tokens now at the end) that puts the image tokens in block-sized
    tiles of their (frames x height x width) grid (core/attention/token_tiles.py), or None where the grid is
    unknown (SD3, Flux, Chroma, Qwen-Image). The image tokens are the last `tokens` of the sequence; what leads
    them is text."""
    grid = step.get("grid")
    if not grid or step["tokens"] is None or step["tokens"] < 0:
        return None
    lead = q_len - step["tokens"]
    perm, inv = sequence_order(grid, settings.block_size, lead, device)
    return perm, inv, lead


def _holds_the_image(step: dict, q_len: int) -> bool:
    """Whether a self-attention of q_len tokens is the model's image/video attention: any length for SD3, Flux,
    Chroma and Qwen-Image (tokens None); exactly the image tokens where text comes by cross-attention (Wan,
    LTX); the image tokens and the text before them for HunyuanVideo (its text refiner's attention is shorter)."""
    tokens = step["tokens"]
    if tokens is None:
        return True
    return q_len >= tokens if step["text_leads"] else q_len == tokens


def _fastest_dense(q, k, v, heads, skip_reshape, skip_output_reshape):
    out = fastest_sdpa(*_to_heads(q, k, v, heads, skip_reshape))
    return out if skip_output_reshape else out.transpose(1, 2).flatten(2)


def _apply_model_wrapper(settings: SparseSettings, leads: bool, grid: tuple[int, ...] | None):
    """Opens the window per step. With a `grid` (the patch grid) the image-token count is known: Wan and LTX
    recognise self-attention by that length (an image exactly as long as the text stays dense: it cannot be told
    from cross-attention); HunyuanVideo's text, which the model lengthens (glyph and image tokens), is whatever
    its joint attention holds beyond the image. SD3, Flux, Chroma and Qwen-Image have no cross-attention: the
    text is the conditioning's token count."""

    def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
        options = dict(transformer_options or {})
        sigma = float(t.max())
        if settings.window(sigma):
            text = settings.text_tokens
            if text < 0 and not (leads and grid):
                text = c_crossattn.shape[1] if (leads and c_crossattn is not None) else 0
            tokens, token_grid = None, None
            if grid:
                token_grid = tuple(-(-s // p) for s, p in zip(x.shape[2:], grid, strict=True))
                tokens = math.prod(token_grid)
                if not leads and c_crossattn is not None and tokens == c_crossattn.shape[1]:
                    tokens = -1
            options[STEP_KEY] = {"text_tokens": text, "text_leads": leads, "tokens": tokens, "grid": token_grid}
        return executor(x, t, c_concat, c_crossattn, control, options, **kw)

    return wrapper


def _outer_sample_wrapper(stats: SparseStats, window: SigmaWindow, family: str):
    def wrapper(executor, *args, **kwargs):
        window.prepare(executor.class_obj.model_patcher.get_model_object("model_sampling"))
        stats.sparse_calls = stats.dense_calls = stats.kept_blocks = stats.total_blocks = 0
        try:
            return executor(*args, **kwargs)
        finally:
            stats.history.append(stats.sparsity())
            log.info("Pyra sparse attention (%s): %s", family, stats.summary())

    return wrapper


def install(patcher, family: str, settings: SparseSettings) -> SparseStats:
    """Patch `patcher` (a clone, patched in place) and return the stats of its last sampling run."""
    stats = SparseStats()
    grid = patch_size(patcher) if family in GRID_FAMILIES else None
    options = patcher.model_options.setdefault("transformer_options", {})
    if "optimized_attention_override" in options:
        log.warning("Pyra sparse attention replaces an attention override already on this model")
    options["optimized_attention_override"] = make_override(settings, stats)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY,
                                 _apply_model_wrapper(settings, text_leads(family), grid))
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 _outer_sample_wrapper(stats, settings.window, family))
    return stats
