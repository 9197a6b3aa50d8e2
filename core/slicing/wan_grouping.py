"""Operator Grouping (Streamlined Inference) for a Wan 2.x transformer block: exact, with a lower activation peak.

The host's block (comfy/ldm/wan/model.py WanAttentionBlock) materialises every token-wise temporary at full size:
the modulated norm input, q and k through RMSNorm and RoPE (apply_rope1 upcasts to float32: the freqs are float32),
v, the attention output and its reshape, the o-projection, the cross-attention, norm2 + modulation, the FFN hidden
and its GELU (ffn_dim wide) and the residual adds. `grouped_block(block, ...)` returns a twin of the block (sharing
its submodules and parameters, so weight patches and LoRAs still reach them) whose forward runs three groups:

1. per token slice: norm1 + modulation, q/k/v projections, q/k RMSNorm (over the whole width of a token) and RoPE
   with the freqs rows of the slice's token positions, written into preallocated q, k, v buffers;
2. self-attention over all tokens with the host's attention function, in groups of heads (heads are independent,
   so this is exact); each group's output is written over its own columns of q, which no later group reads;
3. per token slice: o-projection, gated residual, cross-attention (norm3 + the block's own cross-attention module on
   the slice's queries, the whole context), norm2 + modulation + FFN + gated residual; the result is written over
   q's rows of that slice (read by this slice only), so the block returns q's buffer and never writes into x.

Paper estimate of the peak, in units A = tokens x dim x 2 bytes (one bf16 activation; 0.72 GiB at 75,600 x 5120),
s = slice_tokens / tokens, f = ffn_dim / dim (2.7 for Wan-14B), weights excluded:
- plain host block: x, the modulated input, q (done), k after RMSNorm, k in float32 (2A), the RoPE product in
  float32 (2A) and its bf16 result: 9A at k's RoPE; (2 + 2f)A = 7.4A in the FFN.
- grouped: x + q + k + v (4A) plus one slice's stage-1 temporaries (modulated input, k normed, 2 + 2 float32,
  the bf16 result: 7sA); stage 3 holds x + q plus (3 + 2f)sA.
At 75,600 tokens: 4.76A (ratio 0.53) with 8192-token slices, 4.38A (0.49) with 4096, 4.19A (0.47) with 2048.
The floor is 4A (0.44): the attention needs q, k and v whole and x is kept for the residual.

Per-call patches that see a whole-token tensor inside the block (newer hosts run transformer_options["patches"]
"attn1_patch" on the attention output with q and k, and "attn2_patch" after the cross-attention residual) have no
sliced equivalent: q's buffer is overwritten by the attention output and the post-cross-attention state exists only
one slice at a time. With such a patch present the block runs the host's own forward (logged once), so the patch
is honoured exactly as the host block would honour it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from .twins import twin


def modulation_rows(e: torch.Tensor, tokens: int, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of the host's repeat_e(e, x) for an x of `tokens` tokens, without building the whole of it."""
    if e.size(1) == 1:
        return e
    repeats = tokens // e.size(1)
    if repeats <= 1:
        return e[:, start:stop]
    if repeats * e.size(1) != tokens:
        repeats += 1
    index = torch.arange(start, stop, device=e.device) // repeats
    return e.index_select(1, index)


def head_groups(heads: int, head_dim: int, tokens: int, slice_tokens: int) -> list[slice]:
    """Column ranges of whole heads, each group's output no wider (in elements) than one token slice's row block."""
    per_group = max(1, min(heads, (slice_tokens * heads) // max(tokens, 1)))
    return [slice(h * head_dim, min(h + per_group, heads) * head_dim) for h in range(0, heads, per_group)]


log = logging.getLogger("pyra")
UNSLICEABLE_PATCHES = ("attn1_patch", "attn2_patch")
_logged: set[str] = set()


def unsliceable_patches(transformer_options: dict) -> list[str]:
    """The names of per-call patches in `transformer_options` that the grouped forward cannot run in slices."""
    patches = transformer_options.get("patches", {}) or {}
    return [name for name in UNSLICEABLE_PATCHES if patches.get(name)]


class _Grouped:
    """Mixin: the grouped forward of a WanAttentionBlock (same signature as the host's)."""

    slice_tokens: int = 4096
    attention: Callable = None  # the host's optimized_attention
    rope: Callable = None  # the host's apply_rope1

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        blocking = unsliceable_patches(transformer_options)
        if blocking:
            key = ", ".join(blocking)
            if key not in _logged:
                _logged.add(key)
                log.warning("Pyra feature slicing: %s patches present: the Wan blocks run the host's own forward "
                            "(not sliced, full activation memory) while they are", key)
        if blocking or x.shape[1] <= self.slice_tokens:
            return super().forward(x, e, freqs, context, context_img_len=context_img_len,
                                   transformer_options=transformer_options)
        mod = self.modulation.to(dtype=x.dtype, device=x.device)
        e = (mod + e).chunk(6, dim=1) if e.ndim < 4 else (mod.unsqueeze(0) + e).unbind(2)
        # x stays as given (the first block gets a transposed view of the patch embedding): a contiguous copy
        # would add a full activation while the caller still holds the original.
        q, k, v = self._project(x, e, freqs)
        for cols in head_groups(self.self_attn.num_heads, self.self_attn.head_dim, x.shape[1], self.slice_tokens):
            q[..., cols] = self.attention(q[..., cols], k[..., cols], v[..., cols],
                                          heads=(cols.stop - cols.start) // self.self_attn.head_dim,
                                          transformer_options=transformer_options)
        del k, v
        return self._finish(x, e, q, context, context_img_len, transformer_options)

    def _slices(self, tokens: int):
        return ((start, min(start + self.slice_tokens, tokens)) for start in range(0, tokens, self.slice_tokens))

    def _project(self, x, e, freqs):
        attn, (b, tokens, _) = self.self_attn, x.shape
        n, d = attn.num_heads, attn.head_dim
        q = k = v = None
        for start, stop in self._slices(tokens):
            part = x[:, start:stop]
            h = torch.addcmul(modulation_rows(e[0], tokens, start, stop), self.norm1(part),
                              1 + modulation_rows(e[1], tokens, start, stop))
            rows = freqs[:, start:stop]
            qs = self.rope(attn.norm_q(attn.q(h)).view(b, stop - start, n, d), rows).flatten(2)
            if q is None:
                q, k, v = (x.new_empty((b, tokens, n * d), dtype=qs.dtype) for _ in range(3))
            q[:, start:stop] = qs
            del qs
            k[:, start:stop] = self.rope(attn.norm_k(attn.k(h)).view(b, stop - start, n, d), rows).flatten(2)
            v[:, start:stop] = attn.v(h)
        return q, k, v

    def _finish(self, x, e, q, context, context_img_len, transformer_options):
        tokens, out = x.shape[1], None
        for start, stop in self._slices(tokens):
            rows = [modulation_rows(e[i], tokens, start, stop) for i in range(2, 6)]
            h = torch.addcmul(x[:, start:stop], self.self_attn.o(q[:, start:stop]), rows[0])
            h = h + self.cross_attn(self.norm3(h), context, context_img_len=context_img_len,
                                    transformer_options=transformer_options)
            y = self.ffn(torch.addcmul(rows[1], self.norm2(h), 1 + rows[2]))
            h = torch.addcmul(h, y, rows[3])
            if out is None:
                same = h.dtype == q.dtype and h.shape[-1] == q.shape[-1]
                out = q if same else h.new_empty((*x.shape[:2], h.shape[-1]))
            out[:, start:stop] = h
        return out


def grouped_block(block: nn.Module, slice_tokens: int, attention: Callable, rope: Callable) -> nn.Module:
    """A twin of a Wan attention block sharing its submodules and parameters that runs the grouped forward."""
    if slice_tokens < 1:
        raise ValueError(f"slice size must be at least 1 token, got {slice_tokens}")
    out = twin(block, _Grouped, "Grouped")
    out.slice_tokens = int(slice_tokens)
    out.attention, out.rope = attention, rope
    return out
