"""GroupNorm with statistics given from outside (measured over a whole tensor while the op sees one band of it).

Backends: `batch_norm.py` (one batch_norm kernel, the fast path, everywhere) and `reference.py` (fp32 in chunks
of groups, five elementwise passes). README.md: semantics, constraints, tolerance.
"""

from .batch_norm import group_norm_batch_norm, per_channel
from .reference import GROUPS_PER_CHUNK, group_norm_reference

__all__ = ["GROUPS_PER_CHUNK", "group_norm_batch_norm", "group_norm_reference", "per_channel"]
