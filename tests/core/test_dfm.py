"""core/dfm: pyramid levels, S = 1 exactness, the stage-wise sampler, the training step and checkpoints.

The base network is the host's own tiny SD3 MMDiT (built on the CPU); everything under test is host-free.
"""

from __future__ import annotations

import pytest
import torch
from dfm_helpers import arch_mod, checkpoint_round_trip, ckpt, levels, network, same_state, sampler, tiny_model, train


def tiny_sd3(seed: int = 0, std: float = 0.05):
    """(ModelPatcher, BaseModel) of the host's tiny SD3 (host/demo_models.py), weights large enough to matter."""
    patcher = tiny_model("sd3", seed, std, random_biases=False)
    return patcher, patcher.model


@pytest.fixture(scope="module")
def base():
    return tiny_sd3()[1]


def inputs(batch=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 16, size, size, generator=g), torch.randn(batch, 5, 4096, generator=g),
            torch.randn(batch, 2048, generator=g))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_split_merge_is_exact(n):
    x = torch.randn(2, 4, 16, 24)
    parts = levels.split(x, n)
    assert [tuple(p.shape[-2:]) for p in parts] == [(16 // 2 ** (n - 1 - i), 24 // 2 ** (n - 1 - i)) for i in range(n)]
    assert torch.allclose(levels.merge(parts), x, atol=1e-5, rtol=0)  # core.multilevel.pyramids works in fp32
    assert all(torch.equal(a, b) for a, b in zip(levels.unpack(levels.pack(parts), [p.shape[-2:] for p in parts]),
                                                 parts, strict=True))
    if n > 1:  # the check can fail: a dropped band does not reconstruct
        assert not torch.allclose(levels.partial_merge(parts, n - 1), x, atol=1e-3)


def test_one_level_equals_the_base_model_exactly(base):
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    x, ctx, y = inputs()
    t = torch.tensor([500.0, 200.0])
    ref = dit(x, t, context=ctx, y=y)
    out = network.dfm_forward(arch, network.DFMLayers(arch, 1), [x], t[:, None], torch.ones(2, 1), ctx, y)
    assert torch.equal(out[0], ref)
    two = network.DFMLayers(arch, 2)
    out2 = network.dfm_forward(arch, two, levels.split(x, 2), t[:, None].expand(2, 2), torch.ones(2, 2), ctx, y)
    assert (levels.merge(out2) - ref).abs().max() > 1e-3  # two levels are a different model
    assert [tuple(o.shape[-2:]) for o in out2] == [(8, 8), (16, 16)]


def test_too_many_levels_for_the_patch_is_a_clear_error(base):
    with pytest.raises(levels.DFMShapeError, match="patch size 2"):
        network.DFMLayers(arch_mod.adapter_for(base.diffusion_model), 3)


def test_a_size_off_the_patch_grid_is_a_clear_error(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    x, ctx, y = inputs()
    odd = x[..., :-1]
    with pytest.raises(levels.DFMShapeError, match="does not divide into 2x2 patches"):
        network.dfm_forward(arch, network.DFMLayers(arch, 1), [odd], torch.ones(2, 1), torch.ones(2, 1), ctx, y)


def _denoiser(base, layers, ctx, y):
    arch = arch_mod.adapter_for(base.diffusion_model)

    def denoise(parts, sig, mask):
        b = parts[0].shape[0]
        s = sig.float()[None].expand(b, -1)
        out = network.dfm_forward(arch, layers, parts, s * 1000, mask[None].expand(b, -1).float(), ctx, y)
        return [p - o * s[:, i, None, None, None] for i, (p, o) in enumerate(zip(parts, out, strict=True))]
    return denoise


def test_one_stage_sampler_is_the_host_flow_euler(base):
    from comfy.k_diffusion.sampling import sample_euler

    x, ctx, y = inputs(seed=1)
    layers = network.DFMLayers(arch_mod.adapter_for(base.diffusion_model), 1)
    denoise = _denoiser(base, layers, ctx, y)
    sigmas = torch.linspace(1, 0, 7) ** 1.5
    ref = sample_euler(lambda z, s, **_: denoise([z], s[:1], torch.ones(1, dtype=torch.bool))[0], x, sigmas,
                       disable=True)
    ours = sampler.sample_dfm(denoise, [x], sampler.parse_plan("6", "", 1), sigmas)[0]
    assert torch.equal(ours, ref)
    heun = sampler.sample_dfm(denoise, [x], sampler.parse_plan("6", "", 1), sigmas, "heun")[0]
    assert (heun - ref).abs().max() > 1e-4


def test_stage_schedules_meet_their_thresholds_and_end_clean():
    plan = sampler.parse_plan("4, 3, 2", "0.5, 0.25", 3)
    sched = sampler.level_schedules(plan, torch.linspace(1, 0, 11))
    assert torch.all(sched[:, -1] == 0)
    assert float(sched[0, 4]) == pytest.approx(0.5) and float(sched[1, 7]) == pytest.approx(0.25)
    assert torch.all(sched[1, :5] == 1) and torch.all(sched[2, :8] == 1)
    assert torch.all(sched[:, 1:] <= sched[:, :-1])
    with pytest.raises(ValueError, match="one step count per stage"):
        sampler.parse_plan("4, 3", "0.5", 3)


def test_multi_stage_sampling_activates_levels_in_order(base):
    x, ctx, y = inputs(seed=2)
    layers = network.DFMLayers(arch_mod.adapter_for(base.diffusion_model), 2)
    seen = []
    denoise = _denoiser(base, layers, ctx, y)

    def spy(parts, sig, mask):
        seen.append((mask.tolist(), sig.tolist()))
        return denoise(parts, sig, mask)
    out = sampler.sample_dfm(spy, levels.split(x, 2), sampler.parse_plan("3, 2", "0.4", 2), torch.linspace(1, 0, 6))
    assert [m for m, _ in seen] == [[True, False]] * 3 + [[True, True]] * 2
    assert all(s[1] == 1.0 for _, s in seen[:3])  # the masked level is shown as pure noise
    assert all(torch.isfinite(o).all() for o in out)


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    _, base = tiny_sd3(seed=3)
    arch = arch_mod.adapter_for(base.diffusion_model)
    layers = network.DFMLayers(arch, 2)
    trainer = train.DFMTrainer(arch, layers, train.TrainConfig(levels=2, lr=2e-3, rank=4), lambda s: s * 1000)
    x, ctx, y = inputs(batch=4, seed=4)
    before_w = base.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight.clone()

    def fixed_loss():
        g = torch.Generator().manual_seed(9)
        parts = levels.split(x, 2)
        sig, mask = train.sample_times(4, trainer.dist, g)
        with torch.no_grad(), torch.inference_mode(False):
            trainer.lora.attach()
            try:
                loss = train.dfm_loss(trainer.velocity(ctx, y), parts, train.level_noise(parts, g), sig, mask)[0]
                return float(loss.detach())
            finally:
                trainer.lora.detach()
    start = fixed_loss()  # 8 steps gave 0.89 of it with the old CPU random stream and 0.91 with the new: 12 steps
    for _ in range(12):
        trainer.step(x, ctx, y)
    assert fixed_loss() < 0.9 * start
    assert torch.equal(base.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight, before_w)  # core untouched
    assert float(torch.stack([u.abs().max() for u in trainer.lora.up]).max()) > 0  # the LoRA did train


def test_checkpoint_round_trip(tmp_path, base):
    layers, fresh, meta, sd, lora = checkpoint_round_trip(tmp_path / "a.safetensors", base.diffusion_model, False)
    fresh.load_state_dict(sd)
    assert same_state(fresh, layers)
    assert meta["base"] == ckpt.fingerprint(base.diffusion_model) and not lora


def test_stage_draw_follows_the_stage_probabilities():
    dist = train.TimeDistribution((0.7, 0.2, 0.1), (0.3, 0.5))
    sig, mask = train.sample_times(20000, dist, torch.Generator().manual_seed(0))
    stage = mask.sum(1) - 1
    freq = torch.bincount(stage, minlength=3).float() / len(stage)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015), freq  # fails for a uniform draw
    assert (sig[stage == 0, 1:] == 1).all() and (sig[stage == 2, 0] < 0.3).all() and (sig[stage == 2, 1] < 0.5).all()
    again = train.sample_times(20000, dist, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], sig) and torch.equal(again[1], mask)  # seeded: deterministic


def _trained_params(optimizer: str, base, steps: int = 3, lr: float = 2e-3):
    arch = arch_mod.adapter_for(base.diffusion_model)
    trainer = train.DFMTrainer(arch, network.DFMLayers(arch, 2),
                               train.TrainConfig(levels=2, lr=lr, rank=4, optimizer=optimizer), lambda s: s * 1000)
    x, ctx, y = inputs(batch=2, seed=4)
    losses = [trainer.step(x, ctx, y) for _ in range(steps)]
    return trainer, [p.detach().clone() for p in trainer.params], losses


def test_fused_adamw_matches_the_per_parameter_reference(base):
    fast, p_fast, losses = _trained_params("auto", base)
    assert fast.optimizer.param_groups[0]["fused"]  # torch >= 2.4 has the fused kernel on the CPU too
    _, p_ref, ref_losses = _trained_params("loop", base)
    # fused rounds differently: 2.5e-6 apart after 3 steps whose updates are ~lr = 2e-3 each
    assert all(torch.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(p_fast, p_ref, strict=True))
    assert all(isinstance(loss, torch.Tensor) and loss.ndim == 0 and per.shape == (2,) for loss, per in losses)
    assert torch.allclose(torch.stack([loss for loss, _ in losses]), torch.stack([loss for loss, _ in ref_losses]))
    _, p_other, _ = _trained_params("loop", base, lr=4e-3)  # the comparison can fail: another lr differs
    assert not all(torch.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(p_other, p_ref, strict=True))
    with pytest.raises(ValueError, match="'auto' or 'loop'"):
        _trained_params("fast", base)


def test_resumed_optimizer_keeps_its_own_implementation(base):
    fast, _, _ = _trained_params("auto", base, steps=1)
    ref, _, _ = _trained_params("loop", base, steps=1)
    ref.load_optimizer_state(fast.optimizer.state_dict())
    group = ref.optimizer.param_groups[0]
    assert group["foreach"] is False and not group["fused"]  # load_state_dict alone would bring fused=True
    assert int(ref.optimizer.state_dict()["state"][0]["step"]) == 1
    ref.step(*inputs(batch=2, seed=4))
    assert int(ref.optimizer.state_dict()["state"][0]["step"]) == 2
