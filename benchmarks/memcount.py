"""Peak live tensor bytes of a torch computation, counted on any device (the meta device included).

A TorchDispatchMode sees every aten op's outputs; each new storage is counted from its creation until the last
tensor that views it is garbage, and the live total's peak is recorded with a snapshot of what was live then.
Tensors that existed before the mode (weights, inputs) are passed in as `resident` and counted throughout.
`tag(tensor, label)` names a storage for the breakdown (e.g. "output", "cache"); untagged storages are grouped
by the aten op that made them.

What it does not see: allocator rounding and fragmentation, and library workspaces (cuDNN convolution workspaces,
cuBLAS), which `torch.cuda.max_memory_allocated` includes. On the meta device no kernel picks an algorithm, so
scaled_dot_product_attention may take a different (materialising) path than on the GPU.
"""

from __future__ import annotations

import itertools
import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class LiveBytes(TorchDispatchMode):
    """Counts live storage bytes; `peak`, `at_peak` (label -> bytes at the peak) after the block."""

    def __init__(self, resident: list[torch.Tensor] = (), device: torch.device | None = None):
        super().__init__()
        self.device = device   # count only tensors on this device (None: every device)
        self._serial = itertools.count()
        self.live: dict[int, tuple[int, int, str, tuple]] = {}   # storage key -> (serial, bytes, op, shape)
        self._refs: dict[int, int] = defaultdict(int)
        self.tags: dict[int, str] = {}
        by_key = {t.untyped_storage()._cdata: t for t in resident}
        self._resident_keys = set(by_key)
        self.resident = sum(_nbytes(t) for t in by_key.values())
        self.total = self.peak = self.resident
        self.at_peak: dict[str, int] = {"resident": self.resident}
        self._peak_serials: list[tuple[int, int, str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, func.overloadpacket.__name__)
        return out

    def _track(self, t: torch.Tensor, op: str) -> None:
        if self.device is not None and t.device != self.device:
            return
        key = t.untyped_storage()._cdata
        if key in self._resident_keys:
            return
        if key not in self.live:
            n = _nbytes(t)
            self.live[key] = (next(self._serial), n, op, tuple(t.shape))
            self.total += n
            if self.total > self.peak:
                self.peak = self.total
                self._peak_serials = list(self.live.values())
        self._refs[key] += 1
        weakref.finalize(t, self._drop, key)

    def _drop(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            n = self.live.pop(key)[1]
            self.total -= n

    def tag(self, t: torch.Tensor, label: str) -> None:
        """Names the storage of `t` (created under this mode) in the peak breakdown."""
        entry = self.live.get(t.untyped_storage()._cdata)
        if entry is not None:
            self.tags[entry[0]] = label

    def breakdown(self) -> dict[str, int]:
        """Bytes live at the peak by label: resident, tagged labels, else 'made by <aten op>'."""
        out = defaultdict(int, {"resident": self.resident})
        for serial, n, op, _ in self._peak_serials:
            out[self.tags.get(serial, f"made by {op}")] += n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def largest_untagged(self, k: int = 8) -> list[tuple[str, tuple, int]]:
        """The k largest untagged storages live at the peak: (aten op, shape, bytes)."""
        rest = [(op, shape, n) for serial, n, op, shape in self._peak_serials if serial not in self.tags]
        return sorted(rest, key=lambda r: -r[2])[:k]
