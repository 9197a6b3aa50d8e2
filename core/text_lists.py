"""The list syntax of Pyra's text inputs: items separated by commas or semicolons, blanks ignored."""

from __future__ import annotations


def split_items(text: str) -> list[str]:
    """'1.5, 2;3' -> ['1.5', '2', '3'] (whitespace stripped, empty items dropped)."""
    return [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
