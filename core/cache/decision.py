"""When to reuse a step: the accumulated relative change of a cheap early feature against a threshold.

One model evaluation sees a batch whose rows belong to conds (cond, uncond, area conds: one uuid each) and to
batch items. Every row has its own cache entry, keyed by (cond uuid, index within that cond's chunk): the
previous value of the decision feature, the change accumulated since the last full computation, and the cached
tensors (a residual for DiTs, the deep feature for UNets). The whole batch is computed by one forward, so an
evaluation reuses only when every row may: each row has an entry of the current shape and its accumulated
change stays under the threshold. A shape change (a new pyramid level, another resolution or frame count)
drops the entries of that shape, so the next evaluation is computed in full.

The change of a row is TeaCache's and First Block Cache's relative L1 distance,
mean|f_t - f_{t-1}| / mean|f_{t-1}|, summed over the evaluations since the row was last computed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

CacheKey = tuple[Hashable, int]


def row_keys(batch: int, conds: list | None, uuids: list | None) -> list[CacheKey]:
    """One key per batch row: (cond uuid, index in its chunk); rows split evenly between the listed conds.

    `conds` is the host's cond_or_uncond list, `uuids` its parallel list of cond uuids; without them the
    batch is one anonymous chunk.
    """
    ids = list(uuids) if uuids else list(conds) if conds else [None]
    if batch % len(ids):
        ids = [None]
    chunk = batch // len(ids)
    return [(ids[r // chunk], r % chunk) for r in range(batch)]


def relative_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per row (dim 0): mean|new - old| / mean|old|, in fp32. new, old: (B, ...) -> (B,)."""
    new, old = new.float().flatten(1), old.float().flatten(1)
    return (new - old).abs().mean(1) / old.abs().mean(1).clamp_min(1e-12)


@dataclass
class _Entry:
    feature: torch.Tensor  # (1, ...) the decision feature at the previous evaluation
    accumulated: float = 0.0
    in_a_row: int = 0  # evaluations reused since the last full computation
    cached: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, ...) per stream
    # extrapolation: per stream the time of the cached value, and the value and time of the one before it
    cached_at: dict[str, float] = field(default_factory=dict)
    previous: dict[str, tuple[torch.Tensor, float]] = field(default_factory=dict)


@dataclass
class CacheStats:
    computed: int = 0
    reused: int = 0
    resets: int = 0
    changes: list[float] = field(default_factory=list)  # per evaluation: the largest row change (nan if none)
    active: list[bool] = field(default_factory=list)  # per evaluation: inside the start/end window

    def summary(self) -> str:
        total = self.computed + self.reused
        if not total:
            return "no model evaluations"
        speedup = total / max(self.computed, 1)
        return (f"{self.computed} of {total} model evaluations computed, {self.reused} reused "
                f"(at most {speedup:.2f}x fewer full forwards); {self.resets} cache resets on a shape change")


class StepCache:
    """Per-row caches and the reuse decision.

    threshold: reuse while the accumulated relative change stays below it; 0 never reuses.
    max_in_a_row: at most this many consecutive reused evaluations per row, then a full one (0: no limit): a
    guard for models whose early feature moves less than their output.
    store_device: where cached tensors live between evaluations (e.g. "cpu" to spare accelerator memory);
    None keeps them where they were computed.
    extrapolate: a reused evaluation gets the cached value moved along the line through the last two computed
    values of its row (first-order, in the time `at` the caller passes, e.g. sigma; TaylorSeer's idea at
    order 1), instead of the last value itself. Rows with one computed value so far get that value.
    """

    def __init__(self, threshold: float, store_device: torch.device | str | None = None, max_in_a_row: int = 0,
                 extrapolate: bool = False):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if max_in_a_row < 0:
            raise ValueError(f"max_in_a_row must be >= 0 (0: no limit), got {max_in_a_row}")
        self.threshold = float(threshold)
        self.max_in_a_row = int(max_in_a_row)
        self.store_device = None if store_device is None else torch.device(store_device)
        self.extrapolate = bool(extrapolate)
        self.entries: dict[CacheKey, _Entry] = {}
        self.stats = CacheStats()

    def reset(self) -> None:
        self.entries.clear()
        self.stats = CacheStats()

    def _store(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t.to(self.store_device, copy=True) if self.store_device is not None else t.clone()

    def decide(self, keys: list[CacheKey], feature: torch.Tensor, active: bool = True) -> bool:
        """Whether this evaluation reuses the cache. feature: (B, ...), one row per key. Updates the entries.

        `active` False (outside the start/end window) forces a full computation.
        """
        rows = feature.detach()
        shape = tuple(rows.shape[1:])
        stale = [k for k, e in self.entries.items() if tuple(e.feature.shape[1:]) != shape]
        if stale:
            self.stats.resets += 1
            for k in stale:
                del self.entries[k]
        entries = [self.entries.get(k) for k in keys]
        known = all(e is not None and e.cached for e in entries)
        reuse = False
        accumulated = [0.0] * len(keys)
        self.stats.active.append(bool(active))
        if not known:
            self.stats.changes.append(float("nan"))
        else:
            prev = torch.cat([e.feature.to(rows.device, rows.dtype) for e in entries])
            change = relative_change(rows, prev).tolist()
            accumulated = [e.accumulated + c for e, c in zip(entries, change, strict=True)]
            self.stats.changes.append(max(change))
            reuse = active and self.threshold > 0 and max(accumulated) < self.threshold
            if self.max_in_a_row and max(e.in_a_row for e in entries) >= self.max_in_a_row:
                reuse = False
        for i, k in enumerate(keys):
            e = entries[i]
            if e is None:
                e = self.entries[k] = _Entry(feature=rows[i:i + 1])
            e.feature = self._store(rows[i:i + 1])
            e.accumulated = accumulated[i] if reuse else 0.0
            e.in_a_row = e.in_a_row + 1 if reuse else 0
        if reuse:
            self.stats.reused += 1
        else:
            self.stats.computed += 1
        return reuse

    def put(self, keys: list[CacheKey], stream: str, value: torch.Tensor | None, at: float | None = None) -> None:
        """Cache `value` (B, ...) row by row under `stream` after a full computation at time `at`."""
        for i, k in enumerate(keys):
            entry = self.entries[k]
            old, old_at = entry.cached.pop(stream, None), entry.cached_at.pop(stream, None)
            entry.previous.pop(stream, None)
            if value is None:
                continue
            if self.extrapolate and old is not None and None not in (old_at, at) and old_at != at:
                entry.previous[stream] = (old, old_at)
            entry.cached[stream] = self._store(value[i:i + 1])
            entry.cached_at[stream] = at

    def get(self, keys: list[CacheKey], stream: str, like: torch.Tensor, at: float | None = None
            ) -> torch.Tensor | None:
        """The cached rows of `stream` for `keys`, stacked on `like`'s device and dtype (None if not cached);
        with extrapolation, each row taken to time `at` along its last two computed values."""
        rows = []
        for k in keys:
            entry = self.entries[k]
            value = entry.cached.get(stream)
            if value is None:
                return None
            value = value.to(like.device, like.dtype)
            if self.extrapolate and at is not None and stream in entry.previous:
                old, old_at = entry.previous[stream]
                slope = (at - entry.cached_at[stream]) / (entry.cached_at[stream] - old_at)
                value = value + (value - old.to(like.device, like.dtype)) * slope
            rows.append(value)
        return torch.cat(rows)


def simulate_reuse(changes: list[float], active: list[bool], threshold: float, max_in_a_row: int = 0) -> int:
    """How many evaluations a cache at `threshold` would reuse along a recorded (uncached) trajectory of
    per-evaluation changes; the basis for choosing a threshold by its number of reused steps."""
    reused, acc, run = 0, 0.0, 0
    for change, on in zip(changes, active, strict=True):
        if change != change:  # nan: nothing cached yet
            acc, run = 0.0, 0
            continue
        acc += change
        if on and threshold > 0 and acc < threshold and not (max_in_a_row and run >= max_in_a_row):
            reused, run = reused + 1, run + 1
        else:
            acc, run = 0.0, 0
    return reused


def reuse_candidates(changes: list[float], active: list[bool], max_in_a_row: int = 0) -> list[tuple[float, int]]:
    """Every number of reused evaluations a threshold can reach on a recorded (uncached) trajectory, with the
    smallest threshold that reaches it: (threshold, reused) pairs in increasing order of both.

    A threshold only matters through the accumulated changes it is compared with, and those are sums of
    consecutive recorded changes, so the thresholds just above these sums are all the distinct operating points.
    """
    sums = set()
    for i in range(len(changes)):
        acc = 0.0
        for change in changes[i:]:
            if change != change:  # nan: the cache restarts there
                break
            acc += change
            sums.add(math.nextafter(acc, math.inf))
    out: list[tuple[float, int]] = []
    for threshold in sorted(sums):
        reused = simulate_reuse(changes, active, threshold, max_in_a_row)
        if reused > (out[-1][1] if out else 0):
            out.append((threshold, reused))
    return out
