"""Differentiable RoPE for training on hosts whose RoPE runs through comfy-kitchen ops without an autograd formula.

comfy/ldm/flux/math.py (Flux, Wan and other DiTs) binds `apply_rope` / `apply_rope1` to comfy_kitchen's custom ops
on 0.8.x, and calls them outside its own trainer on 0.33 (whose TrainLoraNode flips the process-wide
`comfy.model_management.in_training`). Backward through them raises "no autograd formula was registered".

`differentiable_rope()` is a context for the host block calls of a training forward (core/dfm passes it to every
block, so a checkpoint's recompute in the backward pass enters it too): a TorchFunctionMode (thread-local, nothing of
the host is replaced) that answers those ops with comfy_kitchen's own eager torch implementation and passes every
other call through unchanged. Eager with or without grad: a reentrant checkpoint's no-grad forward and its recompute
then compute the same values, and float64 (gradient checks) works, which the kitchen's registry refuses. Outside the
context (the sampler, the same model elsewhere in the graph) the host's fast path runs as before.
"""

from __future__ import annotations

import contextlib

from torch.overrides import TorchFunctionMode

from .features import kitchen_rope_references


class _EagerRope(TorchFunctionMode):
    def __init__(self, table: dict):
        super().__init__()
        self.table = table

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            ref = self.table.get(func)
        except TypeError:  # an unhashable callable: not one of ours
            ref = None
        if ref is not None:
            return ref(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def differentiable_rope():
    """Within: the host's comfy-kitchen RoPE ops run comfy_kitchen's eager torch code (autograd goes through)."""
    table = kitchen_rope_references()
    if not table:
        yield
        return
    with _EagerRope(table):
        yield
