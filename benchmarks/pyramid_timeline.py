"""Where a pyramid run's wall time goes, stage by stage (GPU; `progressive_speed.py --timeline` uses it).

Every boundary synchronises the device and reads the clock, so a segment is the wall time from one boundary
to the next, GPU work included: the host's set-up in `guider.sample` (conds and hooks, `load_models_gpu`,
`process_conds`), every model call by kind (eager, warm-up, capture, replay), the sampler's own work between
model calls, the tear-down after the sampler, our transition between stages (lift: upsample, re-noise), and
every `soft_empty_cache` the host makes. The boundaries are host wrappers (OUTER_SAMPLE, PREPARE_SAMPLING,
SAMPLER_SAMPLE, DIFFUSION_MODEL) on a copy of the guider's options, plus, for this diagnostic run only, timed
stand-ins for `comfy.samplers.process_conds` and `comfy.model_management.soft_empty_cache` (put back after).
The synchronisation costs a little per boundary, so the total is slightly above an unsynchronised run's.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict

AFTER = {  # the segment that follows each boundary
    "run_in": "our set-up (pool, noise)", "sample_out": "transition (lift: upsample, re-noise)",
    "sample_in": "sample(): conds copy, hooks", "outer_in": "outer_sample: before load",
    "prep_in": "load_models_gpu", "prep_out": "to device, pre_run",
    "conds_in": "process_conds", "conds_out": "options clone, wrappers",
    "sampler_in": "sampler between model calls", "call_out": "sampler between model calls",
    "sampler_out": "process_latent_out, cleanup", "outer_out": "sample(): restore options",
}


class Timeline:
    """Synchronised clock readings at labelled boundaries."""

    def __init__(self):
        self.events: list[tuple[float, str, str]] = []

    def mark(self, label: str, info: str = "") -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.events.append((time.perf_counter(), label, info))

    def segments(self) -> list[tuple[int, str, float]]:
        """(stage, segment, seconds) per interval between consecutive boundaries."""
        out, stage, current, stack = [], -1, "our set-up (pool, noise)", []
        for (t0, label, _), (t1, nxt, nxt_info) in itertools.pairwise(self.events):
            if label == "sample_in":
                stage += 1
            if label == "empty_in":
                stack.append(current)
                current = "soft_empty_cache"
            elif label == "empty_out":
                current = stack.pop()
            elif label == "call_in":
                current = f"model call: {nxt_info}"
            elif label == "sample_out" and nxt == "run_out":
                current = "return"
            else:
                current = AFTER.get(label, current)
            out.append((max(stage, 0), current, t1 - t0))
        return out

    def table(self, title: str) -> str:
        """Markdown: per stage and segment, calls and milliseconds; model calls also as median ms per call."""
        sums: dict[tuple[int, str], list[float]] = defaultdict(list)
        for stage, seg, sec in self.segments():
            sums[(stage, seg)].append(sec)
        total = self.events[-1][0] - self.events[0][0]
        lines = [f"### {title}: {total * 1e3:.0f} ms", "", "| stage | segment | n | ms | median ms |",
                 "|---|---|---|---|---|"]
        for (stage, seg), secs in sums.items():
            median = f"{statistics.median(secs) * 1e3:.2f}" if seg.startswith("model call") else ""
            lines.append(f"| {stage} | {seg} | {len(secs)} | {sum(secs) * 1e3:.1f} | {median} |")
        return "\n".join(lines) + "\n"

    def totals(self) -> dict[str, float]:
        """Seconds per segment kind over the whole run (model calls by kind)."""
        out: dict[str, float] = defaultdict(float)
        for _, seg, sec in self.segments():
            out[seg] += sec
        return dict(out)


def _boundary(timeline: Timeline, before: str, after: str, kind=None):
    def wrapper(executor, *args, **kwargs):
        counts = kind(args, kwargs) if kind else None
        timeline.mark(before)
        out = executor(*args, **kwargs)
        timeline.mark(after, kind(args, kwargs, counts) if kind else "")
        return out
    return wrapper


def _call_kind(graphs_module):
    """For DIFFUSION_MODEL: the GraphedForward's counts before the call, then what the call was."""
    import comfy.patcher_extension

    def kind(args, kwargs, before=None):
        options = graphs_module._find_options(args, kwargs)
        forward = None if options is None else comfy.patcher_extension.get_wrappers_with_key(
            comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, graphs_module.WRAPPER_KEY, options)[0]
        counts = dict(forward.counts) if forward is not None else {}
        if before is None:
            return counts
        changed = [k for k in counts if counts[k] != before.get(k, 0)]
        return changed[0] if changed else "eager"
    return kind


def traced(guider, run, graphs_module) -> Timeline:
    """Run `run()` (which samples with `guider`) with synchronised boundaries; the guider is left as it was."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.patcher_extension as pe
    import comfy.samplers

    timeline = Timeline()
    options, sample, own_sample = guider.model_options, guider.sample, vars(guider).get("sample")
    traced_options = comfy.model_patcher.create_model_options_clone(options)
    for wtype, before, after, kind in ((pe.WrappersMP.OUTER_SAMPLE, "outer_in", "outer_out", None),
                                       (pe.WrappersMP.PREPARE_SAMPLING, "prep_in", "prep_out", None),
                                       (pe.WrappersMP.SAMPLER_SAMPLE, "sampler_in", "sampler_out", None),
                                       (pe.WrappersMP.DIFFUSION_MODEL, "call_in", "call_out",
                                        _call_kind(graphs_module))):
        pe.add_wrapper_with_key(wtype, "pyra_timeline", _boundary(timeline, before, after, kind), traced_options,
                                is_model_options=True)
    originals = {(comfy.samplers, "process_conds"): ("conds_in", "conds_out"),
                 (mm, "soft_empty_cache"): ("empty_in", "empty_out")}
    saved = {key: getattr(*key) for key in originals}

    def stand_in(fn, before, after):
        def timed_fn(*args, **kwargs):
            timeline.mark(before)
            out = fn(*args, **kwargs)
            timeline.mark(after)
            return out
        return timed_fn

    def traced_sample(*args, **kwargs):
        timeline.mark("sample_in")
        out = sample(*args, **kwargs)
        timeline.mark("sample_out")
        return out

    try:
        for (module, name), (before, after) in originals.items():
            setattr(module, name, stand_in(saved[(module, name)], before, after))
        guider.model_options, guider.sample = traced_options, traced_sample
        timeline.mark("run_in")
        run()
        timeline.mark("run_out")
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)
        guider.model_options = options
        if own_sample is None:
            del guider.sample
        else:
            guider.sample = own_sample
    return timeline
