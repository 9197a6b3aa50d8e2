"""The pack's stored searched schedules (searched_schedules.json, written by tools/search_schedule.py).

Entries are keyed family -> sampler -> steps and hold model-time fractions u (N values, descending from 1,
followed by sigma 0; see schedule_families). A step count without an entry is interpolated from the nearest
stored one (the larger when two are equally near): u is resampled linearly over the relative step position
i / (N - 1), which keeps the shape of the searched schedule; the result was not searched itself.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch import Tensor

STORE = Path(__file__).with_name("searched_schedules.json")


class ScheduleNotFound(ValueError):
    """No stored schedule for a family / sampler combination."""


@functools.lru_cache(maxsize=4)
def load_store(path: Path = STORE) -> dict:
    return json.loads(Path(path).read_text())


def stored_steps(family: str, sampler: str, store: dict | None = None) -> list[int]:
    """Sorted step counts with a stored schedule; raises ScheduleNotFound naming what is stored."""
    schedules = (store or load_store())["schedules"]
    if family not in schedules:
        raise ScheduleNotFound(f"no searched schedules for family {family!r}; stored: {', '.join(schedules)}")
    if sampler not in schedules[family]:
        raise ScheduleNotFound(
            f"no searched schedules for sampler {sampler!r} on {family}; stored: {', '.join(schedules[family])}"
        )
    return sorted(int(n) for n in schedules[family][sampler])


def interpolate_fractions(fractions: Tensor, steps: int) -> Tensor:
    """(steps,) fractions resampled linearly over the relative position i / (N - 1); stays descending from u_0."""
    if steps == len(fractions):
        return fractions.clone()
    if steps == 1 or len(fractions) == 1:
        return fractions[:1].expand(steps).clone() if steps == 1 else _stretch_single(fractions, steps)
    source = torch.linspace(0, 1, len(fractions), dtype=torch.float64)
    target = torch.linspace(0, 1, steps, dtype=torch.float64)
    right = torch.searchsorted(source, target).clamp(1, len(fractions) - 1)
    weight = (target - source[right - 1]) / (source[right] - source[right - 1])
    return torch.lerp(fractions[right - 1], fractions[right], weight)


def _stretch_single(fractions: Tensor, steps: int) -> Tensor:
    """A one-step schedule holds no shape: spread steps evenly from its single point u_0 down to 0 (exclusive)."""
    return fractions[0] * torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]


def searched_fractions(family: str, sampler: str, steps: int, store: dict | None = None) -> tuple[Tensor, bool]:
    """(steps,) float64 fractions for family / sampler / steps, and whether they were interpolated."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    store = store or load_store()
    available = stored_steps(family, sampler, store)
    nearest = min(available, key=lambda n: (abs(n - steps), -n))
    entry = store["schedules"][family][sampler][str(nearest)]
    fractions = torch.tensor(entry["fractions"], dtype=torch.float64)
    return interpolate_fractions(fractions, steps), nearest != steps
