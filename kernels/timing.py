"""Timing GPU work with CUDA events: the per-call median over repeats, after warm-up calls."""

from __future__ import annotations

import statistics

import torch


def cuda_median_ms(fn, repeats: int = 7, inner: int = 3, warmup: int = 2) -> float:
    """Median over `repeats` of the mean time of `inner` back-to-back calls of `fn`, in milliseconds."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)
