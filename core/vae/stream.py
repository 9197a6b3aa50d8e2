"""Executor for row-op programs: exact sliced decoding with whole-tensor GroupNorm statistics.

A program is a list of row operators (`rowops.py`) plus checkpoints: operator indices whose input tensor is
materialised. Between two checkpoints lies a segment, which runs band by band (operator grouping: one band's
activations live at a time, halos are recomputed). A GroupNorm inside a segment needs statistics over the whole
tensor first, so the executor runs a statistics pass over the segment's prefix up to that GroupNorm (fp32 per band,
merged in fp64), then the normalising pass. A GroupNorm right at a checkpoint takes its statistics from the
previous segment's output pass for free. When a segment keeps the tensor's shape (a residual block), its output
overwrites its input in place; the few input rows that later bands still need are stashed first.

Result: the same numbers as running the operators on the whole tensor, up to float summation order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .rowops import GroupNormAct, GroupStats, RowOp


class Rows:
    """A materialised tensor (B, C, H, W) that can be overwritten band by band while still being read."""

    def __init__(self, t: Tensor):
        self.t = t
        self.stash: Tensor | None = None   # original rows [stash0, stash0 + rows) already overwritten
        self.stash0 = 0

    def read(self, a: int, b: int) -> Tensor:
        if self.stash is None or a >= self.stash0 + self.stash.shape[-2]:
            return self.t[..., a:b, :]
        end = self.stash0 + self.stash.shape[-2]
        head = self.stash[..., a - self.stash0: min(b, end) - self.stash0, :]
        return head if b <= end else torch.cat([head, self.t[..., end:b, :]], dim=-2)

    def write(self, a: int, b: int, y: Tensor, keep_from: int) -> None:
        """Overwrite rows [a, b) with y, keeping the original rows >= keep_from readable."""
        stash = self.read(keep_from, b).clone() if keep_from < b else None
        self.t[..., a:b, :] = y
        self.stash, self.stash0 = stash, keep_from


def _slices(h: int, n: int) -> list[tuple[int, int]]:
    return [(a, min(a + n, h)) for a in range(0, h, n)]


class Program:
    """Operators, heights and checkpoints for one input height."""

    def __init__(self, ops: Sequence[RowOp], checkpoints: Sequence[int], h_in: int):
        self.ops = list(ops)
        self.heights = [h_in]
        for op in self.ops:
            self.heights.append(op.out_height(self.heights[-1]))
        inner = sorted({c for c in checkpoints if 0 < c < len(self.ops)})
        self.bounds = [0, *inner, len(self.ops)]

    def source_rows(self, i0: int, i1: int, a: int, b: int) -> list[tuple[int, int]]:
        """Row ranges of the inputs of ops[i0:i1] and of the output (last entry) for output rows [a, b)."""
        ranges = [(a, b)]
        for i in range(i1 - 1, i0 - 1, -1):
            ranges.append(self.ops[i].need(*ranges[-1], self.heights[i]))
        return ranges[::-1]

    def band(self, i0: int, i1: int, src: Rows, a: int, b: int) -> Tensor:
        """Output rows [a, b) of ops[i0:i1] applied to the materialised input `src`."""
        ranges = self.source_rows(i0, i1, a, b)
        x, stack = src.read(*ranges[0]), []
        for i in range(i0, i1):
            x = self.ops[i](x, ranges[i - i0][0], *ranges[i - i0 + 1], self.heights[i], stack)
        return x


def _measure(prog: Program, i0: int, j: int, src: Rows, rows: int) -> tuple[Tensor, Tensor]:
    """Whole-tensor statistics of the input of GroupNorm ops[j], band by band from checkpoint i0."""
    norm = prog.ops[j].norm
    acc = GroupStats(norm.num_groups)
    for a, b in _slices(prog.heights[j], rows):
        acc.add(prog.band(i0, j, src, a, b))
    return acc.result(norm.eps)


def _segment(prog: Program, i0: int, i1: int, src: Rows, carry, rows_at, out_dtype, out_device):
    """Run ops[i0:i1]; returns the materialised output and the statistics of it that ops[i1] needs (if a norm)."""
    for j in range(i0, i1):
        op = prog.ops[j]
        if isinstance(op, GroupNormAct) and j == i0 and carry is not None:
            op.stats = carry
        elif isinstance(op, GroupNormAct):
            op.stats = _measure(prog, i0, j, src, rows_at(prog.heights[j]))
    nxt = prog.ops[i1] if i1 < len(prog.ops) else None
    acc = GroupStats(nxt.norm.num_groups) if isinstance(nxt, GroupNormAct) else None
    h_out = prog.heights[i1]
    bands = _slices(h_out, rows_at(h_out))
    dest = None
    for k, (a, b) in enumerate(bands):
        y = prog.band(i0, i1, src, a, b)
        if acc is not None:
            acc.add(y)
        if dest is None:
            final = i1 == len(prog.ops)
            same = not final and y.shape[:2] == src.t.shape[:2] and h_out == src.t.shape[-2] and y.dtype == src.t.dtype
            if same and y.shape[-1] == src.t.shape[-1]:
                dest = src
            else:
                shape = (*y.shape[:2], h_out, y.shape[-1])
                dest = Rows(torch.empty(shape, dtype=out_dtype if final else y.dtype,
                                        device=out_device if final else y.device))
        if dest is src:
            keep = prog.source_rows(i0, i1, *bands[k + 1])[0][0] if k + 1 < len(bands) else h_out
            dest.write(a, b, y, keep)
        else:
            dest.t[..., a:b, :] = y
        del y
    carry = acc.result(nxt.norm.eps) if acc is not None else None
    return dest, carry


def run_program(prog: Program, x: Tensor, slice_rows: int, out_dtype: torch.dtype = torch.float32,
                out_device: torch.device | None = None) -> Tensor:
    """Run `prog` on x (B, C, H, W) in bands of `slice_rows` input rows (scaled with each tensor's height).

    Returns the final tensor in `out_dtype` on `out_device` (default: x's device), assembled band by band.
    """
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    h0 = prog.heights[0]

    def rows_at(h: int) -> int:
        return max(1, slice_rows * h // h0)

    src, carry = Rows(x), None
    for i0, i1 in zip(prog.bounds[:-1], prog.bounds[1:], strict=True):
        src, carry = _segment(prog, i0, i1, src, carry, rows_at, out_dtype, out_device or x.device)
    return src.t
