"""The list syntax of Pyra's text inputs: items separated by commas or semicolons, blanks ignored."""

from __future__ import annotations

import math


def split_items(text: str) -> list[str]:
    """'1.5, 2;3' -> ['1.5', '2', '3'] (whitespace stripped, empty items dropped)."""
    return [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]


def parse_numbers(text: str, name: str, kind: type = float, example: str = "1, 1.5") -> list:
    """The numbers of a list input, each finite: 'nan' or 'inf' would pass float() and reach the model as a black
    image. `name` and `example` go into the message of a refusal."""
    try:
        values = [kind(part) for part in split_items(text)]
    except ValueError:
        kinds = "whole numbers" if kind is int else "numbers"
        raise ValueError(f"{name} {text!r}: write {kinds} separated by commas, e.g. '{example}'") from None
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} {text!r}: {bad[0]} is not a finite number")
    return values
