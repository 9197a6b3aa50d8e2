"""io.Schema fields that newer frontends read, given only where this host's comfy_api has them."""

from __future__ import annotations

import functools
import inspect

from comfy_api.latest import io


def search_aliases(*aliases: str) -> dict:
    """{"search_aliases": [...]} for io.Schema where this host's Schema has the field (0.33.0; not 0.8.1 or
    0.3.76-dev), else {}: the words users type in the node search (e.g. "teacache" finds the step cache)."""
    fields = getattr(io.Schema, "__dataclass_fields__", {})
    return {"search_aliases": list(aliases)} if "search_aliases" in fields else {}


@functools.cache
def advanced() -> dict:
    """{"advanced": True} for an io input where this host's inputs take the flag (0.33.0: the frontend folds such
    inputs into an "advanced inputs" section), else {}: for inputs that most users leave at their default."""
    return {"advanced": True} if "advanced" in inspect.signature(io.Float.Input.__init__).parameters else {}
