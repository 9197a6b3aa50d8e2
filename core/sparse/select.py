"""Which linear layers a sparsity pass touches, by module name (host-free).

Names follow the host's model classes: UNet `...attn1.to_q`, `...ff.net.0.proj`; Flux `double_blocks.0.img_attn.qkv`,
`img_mlp.0`, `single_blocks.0.linear1` (fused qkv + MLP up, counted as MLP: most of its width is MLP);
Wan `blocks.0.self_attn.q`, `blocks.0.ffn.0`.
"""

from __future__ import annotations

import re

FILTERS = ("all", "attention", "mlp", "regex")
_ATTENTION_PARTS = {"to_q", "to_k", "to_v", "to_out", "qkv"}
_MLP_PARTS = {"ff", "ffn", "fc1", "fc2", "linear1", "linear2"}


def layer_kind(name: str) -> str:
    """'attention', 'mlp' or 'other' for a module name such as 'double_blocks.3.img_mlp.0'."""
    parts = name.split(".")
    if any("attn" in p or "attention" in p or p in _ATTENTION_PARTS for p in parts):
        return "attention"
    if any("mlp" in p or p in _MLP_PARTS for p in parts):
        return "mlp"
    return "other"


def compile_filter(kind: str, pattern: str = ""):
    """A predicate name -> bool. kind: one of FILTERS; pattern: a Python regex searched in the name (regex)."""
    if kind not in FILTERS:
        raise ValueError(f"unknown layer filter {kind!r}: use one of {FILTERS}")
    if kind == "all":
        return lambda name: True
    if kind == "regex":
        if not pattern:
            raise ValueError("layer filter 'regex' needs a pattern, e.g. 'img_mlp|txt_mlp'")
        try:
            rx = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"invalid layer regex {pattern!r}: {err}") from None
        return lambda name: rx.search(name) is not None
    return lambda name: layer_kind(name) == kind
