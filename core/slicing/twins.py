"""Twins of torch modules: a module of a subclass (the given mixin first) that shares the original's submodules,
parameters and buffers, so weight patches and LoRAs keyed by name still reach it, while the original stays as
it was."""

from __future__ import annotations

import copy

from torch import nn

_CLASSES: dict[tuple[type, type], type] = {}


def twin(module: nn.Module, mixin: type, prefix: str) -> nn.Module:
    """A shallow copy of `module` whose class is (mixin, type(module)); a twin of a twin wraps the original."""
    base = type(module)
    if issubclass(base, mixin):
        base = base.__mro__[2]
    cls = _CLASSES.setdefault((mixin, base), type(f"{prefix}{base.__name__}", (mixin, base), {}))
    out = copy.copy(module)
    for attr in ("_modules", "_parameters", "_buffers"):
        setattr(out, attr, type(getattr(module, attr))(getattr(module, attr)))
    out.__class__ = cls
    return out
