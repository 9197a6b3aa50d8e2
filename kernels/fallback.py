"""The one way a kernel says that its fast backend does not run: a reason, in words a user can act on.

Each backend has `unavailable_reason(...) -> str | None`. Where it gives a reason, the op runs its reference
(same result, no speed-up) and calls `fall_back(op, reason)`: one warning per op and reason in this process,
and the reason returned for the op's report.
"""

from __future__ import annotations

import logging

log = logging.getLogger("pyra.kernels")
_said: set[tuple[str, str]] = set()


def fall_back(op: str, reason: str) -> str:
    """Record that `op` runs its reference because of `reason` (logged once per op and reason)."""
    if (op, reason) not in _said:
        _said.add((op, reason))
        log.warning("Pyra %s: %s; using the reference (same result, no speed-up)", op, reason)
    return reason
