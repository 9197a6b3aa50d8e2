"""Streaming executor for the causal video decoders: bands of rows pass down the program, each op keeps the rows
of its input that its next output rows still read (its carry), so no halo is ever recomputed.

`stream.Program.band` computes a band of output rows from the input rows it needs, so neighbouring bands recompute
the rows where their needs overlap: for a video decoder's band ops that is the whole decoder's halo (7 latent rows
for Wan 2.1) at every level, and a decode in small bands runs several times the host's FLOPs. Checkpointing between
blocks (as the one-frame program does) needs each causal op's time cache over the full height.

Here the input (the latent-resolution features) arrives in bands of rows, and for every band each op emits as many
new output rows as its input so far determines (`RowOp.need`): rows [done, o) with o the largest row whose needed
input has arrived (all of them once the input is complete). The input rows it will read again stay in a buffer per
op and chunk; the rest are dropped. A residual block's input (`Save`) is buffered likewise until its adder (an op
with `pops_saved`) has read it (`saved_need`). Within a band the chunks run in order and every op sees the same
input rows in every chunk, so each op's own time state (causal caches, the first-chunk flags), reset per band,
covers exactly the rows it is given, as the band decoder's does. The result is what the band decoder computes: the
host's decode up to float summation order, at the FLOPs of one decode.

Memory: the kept rows of every op (about k - 1 input rows per k x k convolution) for every frame, beside one band's
activations; see `CarryPlan.kept_rows`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .rowops import RowOp, Save
from .stream import Program, row_slices


class Step:
    """What op i does in one band: input rows [lo, hi) to output rows [a, b); afterwards its buffer keeps input rows
    from `keep` on. For an adder, `saved` is the range of the block input it reads and `saved_keep` where that
    buffer starts afterwards."""

    __slots__ = ("a", "b", "hi", "keep", "lo", "saved", "saved_keep")

    def __init__(self, lo, hi, a, b, keep, saved=None, saved_keep=None):
        self.lo, self.hi, self.a, self.b, self.keep = lo, hi, a, b, keep
        self.saved, self.saved_keep = saved, saved_keep


def saved_pairs(ops: Sequence[RowOp]) -> dict[int, int]:
    """adder index -> index of the `Save` whose rows it adds (a LIFO over the program, as the stack is)."""
    pairs, open_saves = {}, []
    for i, op in enumerate(ops):
        if isinstance(op, Save):
            open_saves.append(i)
        elif getattr(op, "pops_saved", False):
            if not open_saves:
                raise ValueError(f"op {i} ({type(op).__name__}) adds a block input that no Save kept")
            pairs[i] = open_saves.pop()
    if open_saves:
        raise ValueError(f"Saves {open_saves} are never added back")
    return pairs


def _saved_need(op: RowOp, a: int, b: int) -> tuple[int, int]:
    return op.saved_need(a, b) if hasattr(op, "saved_need") else (a, b)


class CarryPlan:
    """The row ranges of every op in every input band (integers only: the same for every chunk)."""

    def __init__(self, ops: Sequence[RowOp], h_in: int, slice_rows: int):
        self.ops = list(ops)
        self.heights = Program(self.ops, [], h_in).heights
        self.pairs = saved_pairs(self.ops)
        n = len(self.ops)
        # an op emits at most a band's rows at its height per band, so the lag the ops built up (about one row per
        # convolution and level) drains over extra bands without input instead of in one large last band
        caps = [max(1, slice_rows * h // h_in) for h in self.heights[1:]]
        bands = list(row_slices(h_in, slice_rows))
        done = [0] * (n + 1)        # rows emitted so far by op i - 1 (= received by op i); done[0]: the input's
        keep = [0] * n              # first input row op i still buffers
        saved_keep = {i: 0 for i in self.pairs}
        self.steps: list[list[Step | None]] = []
        self.bands: list[tuple[int, int]] = []   # input rows per band; [h_in, h_in) once the input is complete
        self.kept_rows = [0] * n    # the most input rows op i buffers between bands
        while done[-1] < self.heights[-1]:
            s, e = bands.pop(0) if bands else (h_in, h_in)
            done[0] = e
            self.bands.append((s, e))
            band = []
            for i, op in enumerate(self.ops):
                h_i, h_o, got = self.heights[i], self.heights[i + 1], done[i]
                start = done[i + 1]
                saved_avail = done[self.pairs[i] + 1] if i in self.pairs else None
                o = min(self._reach(op, i, start, h_i, h_o, got, saved_avail), start + caps[i])
                if o == start:
                    band.append(None)
                    continue
                lo, hi = op.need(start, o, h_i)
                if lo < keep[i] or hi > got:
                    raise AssertionError(f"op {i}: rows [{lo}, {hi}) outside the buffer [{keep[i]}, {got})")
                keep[i] = op.need(o, o + 1, h_i)[0] if o < h_o else got
                step = Step(lo, hi, start, o, keep[i])
                if i in self.pairs:
                    step.saved = _saved_need(op, start, o)
                    saved_keep[i] = _saved_need(op, o, o + 1)[0] if o < h_o else saved_avail
                    step.saved_keep = saved_keep[i]
                band.append(step)
                done[i + 1] = o
                self.kept_rows[i] = max(self.kept_rows[i], got - keep[i])
            self.steps.append(band)

    def _reach(self, op, i, start, h_i, h_o, got, saved_avail) -> int:
        """The largest o in [start, h_o] whose output rows [start, o) the input rows so far determine."""
        def ready(o):
            ok = op.need(start, o, h_i)[1] <= got
            return ok and (saved_avail is None or _saved_need(op, start, o)[1] <= saved_avail)

        if got == h_i and (saved_avail is None or saved_avail == self.heights[self.pairs[i] + 1]):
            return h_o
        lo, hi = start, h_o   # ready(lo) holds (no rows); find the last o that is ready
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if ready(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo


class _Buffer:
    """Rows [r0, r0 + rows) of one op's input (or a block input) in one chunk."""

    __slots__ = ("device", "r0", "t")

    def __init__(self):
        self.r0, self.t, self.device = 0, None, None

    def extend(self, x: Tensor, at: int) -> None:
        if self.t is None or self.t.shape[-2] == 0:
            self.r0, self.t = at, x
        else:
            if self.r0 + self.t.shape[-2] != at:
                raise AssertionError(f"rows from {at} do not follow [{self.r0}, {self.r0 + self.t.shape[-2]})")
            self.t = torch.cat([self.t, x], dim=-2)

    def read(self, lo: int, hi: int) -> Tensor:
        return self.t[..., lo - self.r0:hi - self.r0, :]

    def drop_before(self, row: int) -> None:
        """Keep rows from `row` on (as a copy, so the dropped rows' storage goes; no copy when none is dropped)."""
        if row <= self.r0:
            return
        end = self.r0 + self.t.shape[-2]
        self.t = self.t[..., min(row, end) - self.r0:, :].clone()
        self.r0 = min(row, end)

    def park(self) -> None:
        """Moves the kept rows to host memory until the next band (`unpark`)."""
        if self.t is not None and self.t.numel() and self.t.device.type != "cpu":
            self.device, self.t = self.t.device, to_host(self.t)

    def unpark(self) -> None:
        if self.t is not None and self.t.device.type == "cpu" and self.device is not None:
            self.t = from_host(self.t, self.device)


def to_host(t: Tensor) -> Tensor:
    """t in pinned host memory, copied without a sync (the stream orders the copy back). A meta tensor (memory
    counting) becomes an uninitialised CPU tensor: it has no data to copy."""
    if t.device.type == "meta":
        return torch.empty(t.shape, dtype=t.dtype)
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.device.type == "cuda")
    return out.copy_(t, non_blocking=True)


def from_host(t: Tensor, device: torch.device) -> Tensor:
    if device.type == "meta":
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return t.to(device, non_blocking=True)


_band_hook: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar("band_hook",
                                                                                             default=None)


@contextlib.contextmanager
def on_each_band(hook: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, every `run_carried` calls hook(bands done, bands in all) after each band: a progress bar,
    or a check that raises to interrupt (nothing partial is returned then)."""
    token = _band_hook.set(hook)
    try:
        yield
    finally:
        _band_hook.reset(token)


def run_carried(ops: Sequence[RowOp], h_in: int, n_chunks: int, slice_rows: int,
                source: Callable[[int, int, int], Tensor], sink: Callable[[int, Tensor, int, int], None],
                reset: Callable[[], None], park: bool = True,
                chunk_start: Callable[[int], None] | None = None) -> CarryPlan:
    """Run `ops` over `n_chunks` chunks in bands of `slice_rows` input rows, carrying rows between bands.

    source(t, s, e): input rows [s, e) of chunk t. sink(t, y, a, b): output rows [a, b) of chunk t, called in band
    order and, within a band, in chunk order. reset(): clears every op's time state (called before each band).
    park: between bands each chunk's kept rows wait in host memory (pinned; copied back before the chunk runs in the
    next band), so the device holds the carries of one chunk at a time instead of every frame's.
    chunk_start(t): called before chunk t runs in every band (ops whose output lags their input in time, as the
    LTX decoder's, flush their held frames in the last chunk).
    """
    plan = CarryPlan(ops, h_in, slice_rows)
    inputs = [[_Buffer() for _ in range(n_chunks)] for _ in ops]
    saved = {j: [_Buffer() for _ in range(n_chunks)] for j in plan.pairs.values()}
    hook = _band_hook.get()
    for k, ((s, e), band) in enumerate(zip(plan.bands, plan.steps, strict=True)):
        reset()
        for t in range(n_chunks):
            if chunk_start is not None:
                chunk_start(t)
            kept = [inputs[i][t] for i in range(len(ops))] + [b[t] for b in saved.values()]
            if park:
                for buf in kept:
                    buf.unpark()
            x, at = (source(t, s, e) if e > s else None), s
            for i, (op, step) in enumerate(zip(ops, band, strict=True)):
                buf = inputs[i][t]
                if x is not None:
                    buf.extend(x, at)
                if step is None:
                    x = None
                    continue
                if isinstance(op, Save):
                    y = buf.read(step.lo, step.hi)
                    saved[i][t].extend(y, step.a)
                else:
                    stack = []
                    if i in plan.pairs:
                        block_in = saved[plan.pairs[i]][t]
                        stack.append((block_in.read(*step.saved), step.saved[0]))
                    y = op(buf.read(step.lo, step.hi), step.lo, step.a, step.b, plan.heights[i], stack)
                    if i in plan.pairs:
                        block_in.drop_before(step.saved_keep)
                buf.drop_before(step.keep)
                x, at = y, step.a
            if x is not None:
                sink(t, x, at, at + x.shape[-2])
            del x
            if park:
                for buf in kept:
                    buf.park()
        if hook is not None:
            hook(k + 1, len(plan.bands))
    return plan
