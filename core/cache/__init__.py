"""Step caching (Step Rehash): host-free decision logic, per-key caches and the DiT block plan."""

from .decision import CacheKey, StepCache, relative_change, reuse_candidates, row_keys, simulate_reuse
from .dit import DitBlockCache, evaluation_time, plan_blocks
from .presets import PRESETS, CachePreset

__all__ = ["PRESETS", "CacheKey", "CachePreset", "DitBlockCache", "StepCache", "evaluation_time", "plan_blocks",
           "relative_change", "reuse_candidates", "row_keys", "simulate_reuse"]
