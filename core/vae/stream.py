"""Executor for row-op programs: exact sliced decoding with whole-tensor GroupNorm statistics.

A program is a list of row operators (`rowops.py`) plus checkpoints: operator indices whose input tensor is
materialised. Between two checkpoints lies a segment, which runs band by band (operator grouping: one band's
activations live at a time, halos are recomputed). A GroupNorm inside a segment needs statistics over the whole
tensor first, so the executor runs a statistics pass over the segment's prefix up to that GroupNorm (fp32 per band,
merged in fp64), then the normalising pass. A GroupNorm at a checkpoint (reached through `Save`s only) takes its
statistics from the previous segment's output pass for free.

A checkpoint is held as one block of rows per output band (`Rows`). During a segment's output pass the input blocks
that no later band reads are released as soon as the band is written, so input and output never live whole at the
same time: the memory a segment holds is max(input, output) plus about one band, not input + output. (A segment
that grows its tensor, such as the last upsampling level of a KL decoder, would otherwise hold both.)

Result: the same numbers as running the operators on the whole tensor, up to float summation order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .rowops import GroupNormAct, GroupStats, RowOp, Save


class Rows:
    """A materialised tensor (B, C, H, W) held as blocks of consecutive rows; leading blocks can be released."""

    def __init__(self, t: Tensor | None = None):
        self.blocks: list[tuple[int, Tensor]] = [] if t is None else [(0, t)]

    @classmethod
    def split(cls, t: Tensor, rows: int) -> Rows:
        """t as separate blocks of `rows` rows (copies: views would keep the whole storage alive on release)."""
        out = cls()
        for a in range(0, t.shape[-2], rows):
            out.append(a, t[..., a:a + rows, :].clone())
        return out

    def append(self, a: int, y: Tensor) -> None:
        """Adds rows [a, a + rows of y) after the last block."""
        self.blocks.append((a, y))

    def read(self, a: int, b: int) -> Tensor:
        """Rows [a, b): a view when they lie in one block, a copy when they cross blocks."""
        if not self.blocks or a < self.blocks[0][0]:
            raise RuntimeError(f"rows [{a}, {b}) were already released")
        parts = [t[..., max(a, r0) - r0: min(b, r0 + t.shape[-2]) - r0, :]
                 for r0, t in self.blocks if r0 < b and r0 + t.shape[-2] > a]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)

    def release_before(self, row: int) -> None:
        """Drops the blocks that end at or before `row` (no later read touches them)."""
        self.blocks = [(r0, t) for r0, t in self.blocks if r0 + t.shape[-2] > row]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self.blocks)


def row_slices(h: int, n: int) -> list[tuple[int, int]]:
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
    for a, b in row_slices(prog.heights[j], rows):
        acc.add(prog.band(i0, j, src, a, b))
    return acc.result(norm.eps)


def _first_norm(prog: Program, i0: int, i1: int) -> int | None:
    """Index of a GroupNorm in ops[i0:i1] reached through `Save`s only (it normalises the segment's input)."""
    j = i0
    while j < i1 and isinstance(prog.ops[j], Save):
        j += 1
    return j if j < i1 and isinstance(prog.ops[j], GroupNormAct) else None


def _segment(prog: Program, i0: int, i1: int, src: Rows, carry, rows_at, out_dtype, out_device):
    """Run ops[i0:i1]; returns the output and the statistics of it that the next segment's first norm needs.

    The output is a `Rows` of one block per band, except after the last operator: then it is one tensor in
    `out_dtype` on `out_device`. Input blocks are released once no later band reads them.
    """
    first = _first_norm(prog, i0, i1)
    for j in range(i0, i1):
        op = prog.ops[j]
        if j == first and carry is not None:
            op.stats = carry
        elif isinstance(op, GroupNormAct):
            op.stats = _measure(prog, i0, j, src, rows_at(prog.heights[j]))
    final = i1 == len(prog.ops)
    nxt = None if final else _first_norm(prog, i1, prog.bounds[prog.bounds.index(i1) + 1])
    acc = None if nxt is None else GroupStats(prog.ops[nxt].norm.num_groups)
    h_out = prog.heights[i1]
    bands = row_slices(h_out, rows_at(h_out))
    dest: Rows | Tensor | None = None if final else Rows()
    for k, (a, b) in enumerate(bands):
        y = prog.band(i0, i1, src, a, b)
        if acc is not None:
            acc.add(y)
        if final:
            if dest is None:
                dest = torch.empty((*y.shape[:2], h_out, y.shape[-1]), dtype=out_dtype, device=out_device)
            dest[..., a:b, :] = y
        else:
            dest.append(a, y)
        del y
        src.release_before(prog.source_rows(i0, i1, *bands[k + 1])[0][0] if k + 1 < len(bands) else prog.heights[i0])
    carry = acc.result(prog.ops[nxt].norm.eps) if acc is not None else None
    return dest, carry


def run_program(prog: Program, x: Tensor | Rows, slice_rows: int, out_dtype: torch.dtype = torch.float32,
                out_device: torch.device | None = None) -> Tensor:
    """Run `prog` on x (B, C, H, W) in bands of `slice_rows` input rows (scaled with each tensor's height).

    Returns the final tensor in `out_dtype` on `out_device` (default: x's device), assembled band by band.
    Pass x as `Rows(x)` (and drop your reference) to let its rows go as soon as no band reads them.
    """
    if slice_rows < 1:
        raise ValueError(f"slice_rows must be >= 1, got {slice_rows}")
    src = x if isinstance(x, Rows) else Rows(x)
    h0, out_device = prog.heights[0], out_device or src.blocks[0][1].device

    def rows_at(h: int) -> int:
        return max(1, slice_rows * h // h0)

    carry = None
    del x   # the caller's reference may remain; ours goes with the first segment's input blocks
    for i0, i1 in zip(prog.bounds[:-1], prog.bounds[1:], strict=True):
        src, carry = _segment(prog, i0, i1, src, carry, rows_at, out_dtype, out_device)
    return src
