"""core/cache: the reuse decision, per-cond and per-row caches, reset on shape change, the DiT block cache."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
cache_mod = importlib.import_module("pyra_pack.core.cache")
StepCache, DitBlockCache, plan_blocks = cache_mod.StepCache, cache_mod.DitBlockCache, cache_mod.plan_blocks


def test_relative_change_per_row():
    old = torch.ones(2, 3, 4)
    new = old.clone()
    new[1] *= 1.5
    assert cache_mod.relative_change(new, old).tolist() == pytest.approx([0.0, 0.5])


def test_row_keys_split_conds_and_items():
    assert cache_mod.row_keys(4, [0, 1], ["c", "u"]) == [("c", 0), ("c", 1), ("u", 0), ("u", 1)]
    assert cache_mod.row_keys(2, None, None) == [(None, 0), (None, 1)]


def run_decisions(cache, features, keys):
    out = []
    for f in features:
        reuse = cache.decide(keys, f)
        if not reuse:
            cache.put(keys, "img", f)
        out.append(reuse)
    return out


def test_accumulated_change_against_threshold():
    """Changes of 4% per step under a 0.1 threshold: compute, reuse, reuse (8%), compute (12% > 10%)."""
    f = [torch.full((1, 8), 1.04**i) for i in range(6)]
    decisions = run_decisions(StepCache(0.1), f, [("c", 0)])
    assert decisions == [False, True, True, False, True, True]
    assert run_decisions(StepCache(0.0), f, [("c", 0)]) == [False] * 6


def test_consecutive_reuse_is_capped():
    """A feature that never moves reuses every step without a cap; with max_in_a_row 2 every third evaluation
    computes, and simulate_reuse on the recorded changes predicts the same count."""
    f = [torch.ones(1, 8)] * 9
    assert run_decisions(StepCache(0.1), f, [("c", 0)]) == [False] + [True] * 8
    capped = StepCache(0.1, max_in_a_row=2)
    decisions = run_decisions(capped, f, [("c", 0)])
    assert decisions == [False, True, True, False, True, True, False, True, True]
    assert cache_mod.simulate_reuse(capped.stats.changes, capped.stats.active, 0.1, 2) == sum(decisions)
    with pytest.raises(ValueError, match="max_in_a_row"):
        StepCache(0.1, max_in_a_row=-1)


def test_inactive_window_forces_compute():
    cache = StepCache(1.0)
    keys = [("c", 0)]
    run_decisions(cache, [torch.ones(1, 4)], keys)
    assert cache.decide(keys, torch.ones(1, 4), active=False) is False
    assert cache.decide(keys, torch.ones(1, 4), active=True) is True


def test_per_cond_caches_are_separate():
    """cond rows barely change, uncond rows change a lot: the batch (one forward) must compute; each row keeps
    its own cached value, and a batch of only the quiet cond may reuse."""
    cache = StepCache(0.1)
    keys = cache_mod.row_keys(2, [0, 1], ["c", "u"])
    first = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    run_decisions(cache, [first], keys)
    assert cache.decide(keys, torch.tensor([[1.01, 1.01], [2.0, 2.0]])) is False
    cache.put(keys, "img", torch.tensor([[5.0, 5.0], [7.0, 7.0]]))
    assert cache.get([("u", 0)], "img", first).tolist() == [[7.0, 7.0]]
    assert cache.get([("c", 0)], "img", first).tolist() == [[5.0, 5.0]]
    assert cache.decide([("c", 0)], torch.tensor([[1.02, 1.02]])) is True
    assert cache.decide([("new", 0)], torch.tensor([[1.0, 1.0]])) is False


def test_reset_on_shape_change():
    cache = StepCache(1.0)
    keys = [("c", 0)]
    run_decisions(cache, [torch.ones(1, 4, 4)], keys)
    assert cache.decide(keys, torch.ones(1, 4, 4)) is True
    assert cache.decide(keys, torch.ones(1, 8, 8)) is False
    assert cache.stats.resets == 1
    assert cache.get(keys, "img", torch.ones(1)) is None


def test_cpu_store_and_stats():
    cache = StepCache(0.5, store_device="cpu")
    keys = [("c", 0)]
    run_decisions(cache, [torch.ones(1, 2)] * 3, keys)
    assert cache.entries[keys[0]].cached["img"].device.type == "cpu"
    assert (cache.stats.computed, cache.stats.reused) == (1, 2)
    assert "1 of 3 model evaluations computed, 2 reused" in cache.stats.summary()
    with pytest.raises(ValueError):
        StepCache(-0.1)


def test_extrapolation_follows_the_last_two_computed_values_per_row():
    """Rows cached at sigma 1.0 and 0.8 with values moving linearly: at 0.6 the extrapolating cache returns the
    next point of each row's line, the plain cache the last value; one computed value is returned as is, and
    a put without a time (or at the same time) drops the line."""
    keys = [("c", 0), ("u", 0)]
    like = torch.zeros(2, 3)
    plain, linear = StepCache(1.0), StepCache(1.0, extrapolate=True)
    for cache in (plain, linear):
        cache.decide(keys, torch.ones(2, 3))
        cache.put(keys, "img", torch.tensor([[1.0] * 3, [10.0] * 3]), at=1.0)
    assert torch.equal(linear.get(keys, "img", like, at=0.6), torch.tensor([[1.0] * 3, [10.0] * 3]))
    for cache in (plain, linear):
        cache.put(keys, "img", torch.tensor([[2.0] * 3, [9.0] * 3]), at=0.8)
    torch.testing.assert_close(linear.get(keys, "img", like, at=0.6), torch.tensor([[3.0] * 3, [8.0] * 3]))
    torch.testing.assert_close(linear.get(keys, "img", like, at=0.7), torch.tensor([[2.5] * 3, [8.5] * 3]))
    assert torch.equal(plain.get(keys, "img", like, at=0.6), torch.tensor([[2.0] * 3, [9.0] * 3]))
    linear.put(keys, "img", torch.tensor([[4.0] * 3, [4.0] * 3]), at=0.8)
    assert torch.equal(linear.get(keys, "img", like, at=0.6), torch.tensor([[4.0] * 3, [4.0] * 3]))
    linear.put(keys, "img", torch.tensor([[5.0] * 3, [5.0] * 3]))
    assert torch.equal(linear.get(keys, "img", like, at=0.4), torch.tensor([[5.0] * 3, [5.0] * 3]))


def test_plan_blocks():
    blocks = [("double_block", 0), ("double_block", 1), ("single_block", 0), ("single_block", 1)]
    plan = plan_blocks(blocks, 1, 1)
    assert plan.head == (blocks[0],) and plan.middle == tuple(blocks[1:3]) and plan.tail == (blocks[3],)
    assert plan_blocks(blocks[:2], 1, 1).middle == (blocks[1],)  # the tail gives way
    assert plan_blocks(blocks[:1], 1, 1).middle == ()


class ToyDiT:
    """Flux-like: double blocks on (img, txt), then single blocks on cat(txt, img), through replace patches,
    with a ControlNet-like in-place add after every double block. `inplace`: the blocks update their input
    tensors in place and return them, as the host's Flux blocks do (`img += ...`)."""

    def __init__(self, n_double=3, n_single=3, seed=0, inplace=False):
        g = torch.Generator().manual_seed(seed)
        self.w = [torch.randn(4, 4, generator=g) * 0.3 for _ in range(n_double + n_single)]
        self.n_double, self.n_single = n_double, n_single
        self.control = None
        self.inplace = inplace

    def _add(self, x, y):
        return x.add_(y) if self.inplace else x + y

    def blocks(self):
        return ([("double_block", i) for i in range(self.n_double)]
                + [("single_block", i) for i in range(self.n_single)])

    def __call__(self, img, txt, t, patches=None):
        patches = patches or {}
        opts = {"cond_or_uncond": [0], "uuids": ["c"]}
        for i in range(self.n_double):
            def orig(a, i=i):
                return {"img": self._add(a["img"], torch.tanh(a["img"] @ self.w[i]) * t),
                        "txt": self._add(a["txt"], torch.tanh(a["txt"] @ self.w[i]) * t)}
            args = {"img": img, "txt": txt, "transformer_options": opts}
            out = patches[("double_block", i)](args, {"original_block": orig}) if ("double_block", i) in patches \
                else orig(args)
            img, txt = out["img"], out["txt"]
            if self.control is not None:
                img += self.control[i]
        x = torch.cat((txt, img), 1)
        for j in range(self.n_single):
            def orig(a, j=j):
                return {"img": self._add(a["img"], torch.tanh(a["img"] @ self.w[self.n_double + j]) * t)}
            args = {"img": x, "transformer_options": opts}
            x = (patches[("single_block", j)](args, {"original_block": orig}) if ("single_block", j) in patches
                 else orig(args))["img"]
        return x[:, txt.shape[1]:]


def toy_patches(model, cache, head=1, tail=1):
    plan = plan_blocks(model.blocks(), head, tail)
    hook = DitBlockCache(cache, plan, lambda sigma: True)
    return {b: hook.patch_for(b) for b in plan.head + plan.middle}


@pytest.mark.parametrize("inplace", [False, True])
def test_dit_cache_exact_at_threshold_zero_and_reuse_adds_the_block_residuals(inplace):
    model = ToyDiT(inplace=inplace)
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(1, 6, 4, generator=g), torch.randn(1, 2, 4, generator=g)
    plain = [model(img.clone(), txt.clone(), t) for t in (1.0, 0.99)]
    exact = toy_patches(model, StepCache(0.0))
    assert all(torch.equal(model(img.clone(), txt.clone(), t, exact), p)
               for t, p in zip((1.0, 0.99), plain, strict=True))
    cache = StepCache(10.0)
    patches = toy_patches(model, cache)
    first = model(img.clone(), txt.clone(), 1.0, patches)
    torch.testing.assert_close(first, plain[0])
    # Reused with the same inputs: the skipped blocks' cached residual reproduces the computed output.
    torch.testing.assert_close(model(img.clone(), txt.clone(), 1.0, patches), plain[0])
    assert (cache.stats.computed, cache.stats.reused) == (1, 1)
    # A different step reuses stale middle blocks: close to, but not equal to, the computed output.
    reused = model(img.clone(), txt.clone(), 0.99, patches)
    assert not torch.equal(reused, plain[1]) and (reused - plain[1]).abs().max() < 0.05


@pytest.mark.parametrize("inplace", [False, True])
def test_dit_change_indicator_is_positive_when_the_step_changes(inplace):
    """The decision feature (the first block's residual) moves when the step does, also when the blocks update
    their input in place: measured after the call, out - in would be zero and every evaluation would reuse."""
    model = ToyDiT(inplace=inplace)
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(1, 6, 4, generator=g), torch.randn(1, 2, 4, generator=g)
    cache = StepCache(1e-4)
    patches = toy_patches(model, cache)
    outs = [model(img * (1 + 0.2 * k), txt.clone(), 1.0 - 0.1 * k, patches) for k in range(3)]
    assert (outs[1] - outs[0]).abs().max() > 0.1
    assert min(cache.stats.changes[1:]) > 0.01, cache.stats.changes
    assert cache.stats.reused == 0


def test_dit_cache_applies_control_once():
    """In-place additions between skipped blocks (ControlNet) are not baked into the cache: a residual taken as
    out - in over the whole middle would count them twice on a reused evaluation with the same inputs."""
    model = ToyDiT()
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(1, 6, 4, generator=g), torch.randn(1, 2, 4, generator=g)
    model.control = [torch.full((1, 6, 4), 0.1)] * model.n_double
    plain = model(img, txt, 1.0)
    patches = toy_patches(model, StepCache(10.0))
    model(img, txt, 1.0, patches)
    torch.testing.assert_close(model(img, txt, 1.0, patches), plain)


def test_simulated_reuse_matches_the_cache_on_a_fixed_trajectory():
    f = [torch.full((1, 8), 1.03**i) for i in range(12)]
    for threshold in (0.0, 0.05, 0.1, 0.2):
        cache = StepCache(threshold)
        run_decisions(cache, f, [("c", 0)])
        probe = StepCache(0.0)
        run_decisions(probe, f, [("c", 0)])
        assert cache_mod.simulate_reuse(probe.stats.changes, probe.stats.active, threshold) == cache.stats.reused
    assert cache.stats.reused > 0


def test_reuse_candidates_are_the_smallest_thresholds_of_each_reuse_count():
    g = torch.Generator().manual_seed(4)
    changes = [float("nan"), *(torch.rand(19, generator=g) * 0.1).tolist()]
    active = [False] * 3 + [True] * 15 + [False] * 2
    candidates = cache_mod.reuse_candidates(changes, active)
    counts = [r for _, r in candidates]
    assert counts == sorted(set(counts)) and counts[-1] == 15  # every active evaluation after the first
    for threshold, reused in candidates:
        assert cache_mod.simulate_reuse(changes, active, threshold) == reused
        below = math.nextafter(threshold, 0.0)
        assert cache_mod.simulate_reuse(changes, active, below) < reused  # nothing smaller reaches it
    grid = [i * 1e-3 for i in range(2000)]
    for t in grid:  # no threshold reuses more than the last candidate at or below it
        best = max([r for th, r in candidates if th <= t], default=0)
        assert cache_mod.simulate_reuse(changes, active, t) <= best


def test_dit_cache_keeps_each_part_of_a_tuple_stream():
    """LTX-2's blocks take and return (video, audio) as one "img": a reused evaluation adds each part's own cached
    residual (the video part decides), so the same inputs reproduce the computed output in both parts."""
    g = torch.Generator().manual_seed(2)
    w = [torch.randn(4, 4, generator=g) * 0.3 for _ in range(3)]
    blocks = [("double_block", i) for i in range(3)]

    def run(video, audio, patches):
        opts = {"cond_or_uncond": [0], "uuids": ["c"]}
        for i, block in enumerate(blocks):
            def orig(a, i=i):
                v, au = a["img"]
                return {"img": (v + torch.tanh(v @ w[i]), au - torch.sin(au @ w[i]))}
            args = {"img": (video, audio), "txt": torch.zeros(1, 2, 4), "transformer_options": opts}
            video, audio = (patches[block](args, {"original_block": orig}) if block in patches else orig(args))["img"]
        return video, audio

    video, audio = torch.randn(1, 6, 4, generator=g), torch.randn(1, 3, 4, generator=g)
    plain = run(video, audio, {})
    cache = StepCache(10.0)
    hook = DitBlockCache(cache, plan_blocks(blocks, 1, 1), lambda sigma: True)
    patches = {b: hook.patch_for(b) for b in blocks[:2]}
    for _ in range(2):   # computed, then reused
        out = run(video, audio, patches)
        torch.testing.assert_close(out[0], plain[0])
        torch.testing.assert_close(out[1], plain[1])
    assert (cache.stats.computed, cache.stats.reused) == (1, 1)
