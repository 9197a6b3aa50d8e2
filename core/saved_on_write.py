"""Backward through code that adds into tensors in place after autograd saved them.

Host models written for inference update activations in place (the Flux blocks do `img += attn_out` after a
LayerNorm saved `img`; Chroma and others do the same). Autograd then refuses the backward pass: "one of the
variables needed for gradient computation has been modified by an inplace operation". Rewriting `+=` as `+` is not
possible from outside: Python routes `x += y` to the same `add_` call as a bare `x.add_(y)` statement, whose result
is thrown away.

`copy_saved_on_write()` keeps the host code as it is and copies instead: every tensor autograd saves is kept in a
holder (saved-tensor hooks), and just before an in-place op writes into a storage that a live holder points at,
that holder gets a copy of the old values. The backward pass then reads what the forward saw. Memory is what the
out-of-place code would have used (one copy per overwritten saved tensor); nothing is copied without grad
(sampling), and code that does not write into saved tensors runs unchanged.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.overrides import TorchFunctionMode


class _Holder:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _storage_key(tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError):  # no plain storage (a subclass, a meta tensor)
        return None


def _is_inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    return name == "__setitem__" or (name.endswith("_") and not name.endswith("__"))


class _SavedRegistry(TorchFunctionMode):
    """Holders of saved tensors by storage; an in-place write copies them first. (`out=` needs no care: autograd
    refuses it on tensors that need a gradient.)"""

    def __init__(self):
        super().__init__()
        self.by_storage: dict[int, list[weakref.ref]] = {}
        self.copies = 0

    def pack(self, tensor: torch.Tensor):
        key = _storage_key(tensor)
        if key is None:
            return tensor
        holder = _Holder(tensor)
        self.by_storage.setdefault(key, []).append(weakref.ref(holder, lambda ref, key=key: self._drop(key, ref)))
        return holder

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Holder) else packed

    def _drop(self, key: int, ref: weakref.ref) -> None:
        refs = self.by_storage.get(key)
        if refs is not None and ref in refs:
            refs.remove(ref)
            if not refs:
                del self.by_storage[key]

    def _copy_before_write(self, target) -> None:
        if not isinstance(target, torch.Tensor):
            return
        key = _storage_key(target)
        for ref in self.by_storage.pop(key, []) if key is not None else []:
            holder = ref()
            if holder is not None:
                holder.tensor = holder.tensor.clone()
                self.copies += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.by_storage and args and _is_inplace(func) and torch.is_grad_enabled():
            self._copy_before_write(args[0])
        return func(*args, **kwargs)


@contextlib.contextmanager
def copy_saved_on_write():
    """Within (this thread): autograd keeps the values it saved even where the code then writes over them.

    Yields the registry; its `copies` counts the saved tensors that were copied."""
    registry = _SavedRegistry()
    with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack), registry:
        yield registry
