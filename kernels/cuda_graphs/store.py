"""Where the CUDA graphs of host/cuda_graphs.py live between pyramid stages and between runs.

A captured graph replays fixed memory addresses: it reads the diffusion model's weights wherever they were at
capture and holds no reference to them. So a graph stays valid exactly while every tensor the forward reads
from the model sits where it sat, with the same shape, strides and dtype, and the forward runs the same
Python (the same modules, the same comfy.ops weight/bias functions). `weights_fingerprint` records just that;
a value written in place at the same address (an in-place LoRA patch, say) is read by the replay as eager
would read it. Graphs of one model are kept in ONE store (the last model that used graphs) while its
fingerprint holds; a different model or a changed fingerprint releases them, and so does a full-resolution
stage that would not fit beside their memory.

A signature that ran once in this process (warmed up: cuBLAS, cuDNN and kernel-selection state exist for its
shapes) captures at its first call next time, even when its graph had to be re-captured.
"""

from __future__ import annotations

import logging
import weakref

import torch

log = logging.getLogger("pyra")
KEEP_FRACTION = 8  # graphs kept across runs may hold at most 1/8 of the device's memory


def weights_fingerprint(module: torch.nn.Module) -> tuple:
    """What a replay assumes about `module`: its modules, its tensors' places and layouts, its weight functions.

    Per submodule (in a fixed walk): its identity, and for every parameter, buffer and plain tensor attribute
    its data pointer, shape, strides, dtype and device, and the identity of its comfy.ops weight_function /
    bias_function entries. One pass over the modules' own dicts: 8 ms for the SDXL UNet on a busy 2-core CPU.
    """
    out, stack = [], [module]
    tensor = torch.Tensor
    while stack:
        m = stack.pop()
        d = m.__dict__
        out.append(id(m))
        for group in (d["_parameters"], d["_buffers"]):
            for key, t in group.items():
                if t is not None:
                    out.append((key, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device))
        out.extend([(k, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) for k, t in d.items()
                    if isinstance(t, tensor)])
        for key in ("weight_function", "bias_function"):
            out.extend(map(id, d.get(key, ())))
        stack.extend(d["_modules"].values())
    return tuple(out)


class GraphStore:
    """The graphs of one diffusion model (by input signature; None: capture failed) and their memory pools."""

    def __init__(self, module: torch.nn.Module, fingerprint: tuple):
        self.module, self.fingerprint = weakref.ref(module), fingerprint
        self.graphs: dict = {}
        self.pools: set[tuple] = set()  # the allocator's ids of the graphs' private pools

    def holds(self, module: torch.nn.Module, fingerprint: tuple) -> bool:
        return self.module() is module and self.fingerprint == fingerprint


_store: GraphStore | None = None
_warmed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> signatures run in this process


def store_for(module: torch.nn.Module) -> GraphStore:
    """The kept store of `module` when its fingerprint still holds, else a new one (the old one released)."""
    global _store
    fingerprint = weights_fingerprint(module)
    if _store is not None and _store.holds(module, fingerprint):
        return _store
    if _store is not None and _store.graphs:
        log.info("Pyra CUDA graphs: released %d graphs (%s)", len(_store.graphs),
                 "the model's weights moved or changed layout" if _store.module() is module else "another model")
    release_kept_graphs()
    _store = GraphStore(module, fingerprint)
    return _store


def release_kept_graphs() -> None:
    """Drop every kept graph (their memory pools return to the allocator's cache)."""
    global _store
    if _store is not None:
        _store.graphs.clear()
    _store = None


def kept_pool_bytes() -> int | None:
    """Device memory the kept graphs' pools hold now, from the allocator's segments (None: unknown).

    A difference of torch.cuda.memory_reserved around a capture is no measure: the allocator may return
    other cached segments to the driver meanwhile (a benchmark run saw -2.8 GiB that way).
    """
    if _store is None or not _store.pools:
        return 0
    try:
        segments = torch.cuda.memory_snapshot()
    except (RuntimeError, AttributeError):
        return None
    return pool_bytes(segments, _store.pools)


def pool_bytes(segments: list[dict], pools: set[tuple]) -> int:
    """Bytes of the allocator segments (torch.cuda.memory_snapshot entries) that belong to `pools`."""
    return sum(s["total_size"] for s in segments if tuple(s.get("segment_pool_id", ())) in pools)


def was_warmed(module: torch.nn.Module, signature: tuple) -> bool:
    return signature in _warmed.get(module, ())


def mark_warmed(module: torch.nn.Module, signature: tuple) -> None:
    _warmed.setdefault(module, set()).add(signature)


def must_release(free_bytes: float, needed_bytes: float, kept_bytes: float | None, total_bytes: float) -> bool:
    """Whether kept graphs must go: the next stage would not fit beside them, they hold too much memory, or
    their size is unknown (kept_bytes None).

    free_bytes: free device memory as the host counts it (the pools' own free blocks included, which only
    the graphs can use; hence kept_bytes comes off it).
    """
    if kept_bytes is None:
        return True
    if kept_bytes <= 0:
        return False
    return free_bytes - kept_bytes < needed_bytes or kept_bytes * KEEP_FRACTION > total_bytes


def make_room(device: torch.device, needed_bytes: float, free_bytes: float) -> bool:
    """Release the kept graphs when `must_release`; returns whether it did."""
    if _store is None or device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    kept = kept_pool_bytes()
    if not must_release(free_bytes, needed_bytes, kept, total):
        return False
    log.info("Pyra CUDA graphs: released %d graphs (%s) to make room for the full-resolution stage",
             len(_store.graphs), "size unknown" if kept is None else f"{kept / 2**30:.2f} GiB")
    release_kept_graphs()
    return True
