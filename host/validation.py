"""The checks the host's own validation skips for the inputs a node's `validate_inputs` names.

The host (execution.py `validate_inputs`) checks each input's schema bounds and list of values, except those
named by the node's `validate_inputs`: it hands them to the node and repeats the node's message once per named
input. So a `validate_inputs` names only the inputs it reads (never `**kwargs`, which would switch the host's
checks off for all of them), and re-applies the schema to any number it names (`schema_refusal`). NaN passes the
host's bounds (every comparison with NaN is false): numbers that could carry one are checked here too.
"""

from __future__ import annotations

import math


def _spec(node, name: str) -> tuple:
    types = node.INPUT_TYPES()
    for group in ("required", "optional"):
        if name in types.get(group, {}):
            spec = types[group][name]
            return spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    raise KeyError(f"{node.__name__} has no input {name!r}")


def schema_refusal(node, **values) -> str | None:
    """The first problem of `values` against `node`'s schema (finite, min, max, list of values), else None."""
    for name, value in values.items():
        kind, info = _spec(node, name)
        options = kind if isinstance(kind, (list, tuple)) else info.get("options") if kind == "COMBO" else None
        if options is not None and value not in options:
            return f"{name} {value!r} is not one of {', '.join(map(repr, options))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            return f"{name} is {value}: give a finite number"
        if "min" in info and value < info["min"]:
            return f"{name} {value} is below its minimum {info['min']}"
        if "max" in info and value > info["max"]:
            return f"{name} {value} is above its maximum {info['max']}"
    return None


def refuse_empty_window(start_percent: float, end_percent: float, what: str, error: type = ValueError) -> None:
    """Raise `error` before any work when a start/end window of the schedule holds no step (`what`: what it
    selects)."""
    if start_percent >= end_percent:
        raise error(f"start_percent ({start_percent}) must be below end_percent ({end_percent}): the window "
                         f"of {what} would be empty")


def refuse_non_finite(**values: float) -> None:
    """Raise before any work when a number input is NaN or infinite (the host's bounds let NaN through)."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} is {value}: give a finite number")
