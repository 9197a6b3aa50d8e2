"""PyraPyramidSampler with two experts (Wan 2.2 A14B, host/tiny_video_families.py): every model evaluation at a
sigma at or above the switch runs on the high-noise expert, every one below on the low-noise expert, a level
that spans the switch runs on both, and the edge cases are the single-expert pyramid."""

from __future__ import annotations

import pytest
import torch

STEPS, LADDER = 8, "2:0.5"


@pytest.fixture(scope="module")
def experts(comfy_host):
    mod = comfy_host.module("host.tiny_video_families")
    if mod.missing_host_classes("wan22_a14b_high"):
        pytest.skip("this host lacks Wan 2.2")
    high, low = (mod.with_shift(mod.build(f"wan22_a14b_{e}", seed=i)) for i, e in ((1, "high"), (2, "low")))
    return mod, high, low


def _spied(model, tag: str, seen: list):
    clone = model.clone()

    def wrapper(apply_model, args):
        seen.append((tag, float(args["timestep"].max()), tuple(args["input"].shape[-2:])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone.set_model_unet_function_wrapper(wrapper)
    return clone


def _run(comfy_host, mod, high, low=None, switch=0.875):
    node = comfy_host.node("PyraPyramidSampler")
    shape = mod.latent_shape("wan22_a14b_high", frames=2, height=8, width=8)
    extra = {} if low is None else {"low_noise_model": low, "expert_switch_sigma": switch}
    out = node.execute(high, 1, STEPS, 1.0, "euler", "simple", mod.conditioning("wan22_a14b_high", 1),
                       mod.conditioning("wan22_a14b_high", 2), {"samples": torch.zeros(shape)}, 1.0, LADDER,
                       "bicubic", False, **extra)
    return out.args[0]["samples"]


def test_each_evaluation_runs_on_the_expert_of_its_sigma(comfy_host, experts):
    mod, high, low = experts
    seen = []
    out = _run(comfy_host, mod, _spied(high, "high", seen), _spied(low, "low", seen), switch=0.6)
    assert torch.isfinite(out).all()
    assert all(s >= 0.6 for tag, s, _ in seen if tag == "high") and all(s < 0.6 for tag, s, _ in seen if tag == "low")
    by_level = {}
    for tag, _, size in seen:
        by_level.setdefault(size, set()).add(tag)
    assert set().union(*by_level.values()) == {"high", "low"}
    assert any(tags == {"high", "low"} for tags in by_level.values()), by_level  # a level split at the switch
    for size in by_level:   # within a level the high-noise steps come first
        tags = [tag for tag, _, sz in seen if sz == size]
        assert tags == sorted(tags, key=lambda t: t == "low"), tags


def test_a_switch_outside_the_schedule_is_the_one_expert_pyramid(comfy_host, experts):
    mod, high, low = experts
    assert torch.equal(_run(comfy_host, mod, high, low, switch=0.0), _run(comfy_host, mod, high))
    assert torch.equal(_run(comfy_host, mod, high, low, switch=1.01), _run(comfy_host, mod, low))  # above t = 1


def test_experts_of_different_models_are_refused(comfy_host, experts):
    mod, high, _ = experts
    other = comfy_host.module("host.tiny_video_families").build("ltxv")
    with pytest.raises(ValueError, match="connect the two experts of one model"):
        _run(comfy_host, mod, high, other)
