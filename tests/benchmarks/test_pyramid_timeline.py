"""benchmarks/pyramid_timeline.py on the CPU: every stage's set-up, model calls and tear-down are found, and the
guider and the host functions it times are left as they were."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_timeline_of_a_tiny_pyramid(comfy_host):
    import comfy.model_management
    import comfy.samplers

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from pyramid_timeline import traced
    finally:
        sys.path.remove(str(BENCHMARKS))
    load = comfy_host.module
    pyr_sampling, pyr = load("host.pyramid"), load("core.samplers.pyramid")
    patcher = load("host.demo_models").build_tiny_model("sd15")
    g = torch.Generator().manual_seed(0)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds([[torch.randn(1, 77, 768, generator=g), {}]], [[torch.randn(1, 77, 768, generator=g), {}]])
    guider.set_cfg(3.0)
    noise = torch.randn(1, 4, 32, 32, generator=g)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 6).cpu()
    options, process_conds = guider.model_options, comfy.samplers.process_conds
    empty_cache = comfy.model_management.soft_empty_cache

    def run():
        with torch.no_grad():
            pyr_sampling.pyramid_sample(guider, noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"),
                                        sigmas, pyr.parse_ladder("4:0.3, 2:0.3"), seed=0, disable_pbar=True)

    timeline = traced(guider, run, load("host.cuda_graphs"))
    segments = timeline.segments()
    assert {s for s, _, _ in segments} == {0, 1, 2}
    calls = [(stage, seg) for stage, seg, _ in segments if seg.startswith("model call")]
    assert len(calls) == 8, calls  # 2 + 1, 2 + 1, 2: each lower level evaluates once more at its end
    assert {seg for stage, seg in calls if stage < 2} == {"model call: eager: not on a CUDA device"}
    assert {seg for stage, seg in calls if stage == 2} == {"model call: eager"}  # no graphs at full size
    for stage in range(3):
        names = {seg for s, seg, _ in segments if s == stage}
        assert {"load_models_gpu", "process_conds", "sampler between model calls",
                "process_latent_out, cleanup"} <= names, names
    assert {seg for s, seg, _ in segments if s == 1} >= {"transition (lift: upsample, re-noise)"}
    assert segments[-1][1] == "return"
    total = timeline.events[-1][0] - timeline.events[0][0]
    assert abs(sum(timeline.totals().values()) - total) < 1e-9
    assert "| 2 | load_models_gpu | 1 |" in timeline.table("tiny")
    assert guider.model_options is options and "sample" not in vars(guider)
    assert comfy.samplers.process_conds is process_conds
    assert comfy.model_management.soft_empty_cache is empty_cache
