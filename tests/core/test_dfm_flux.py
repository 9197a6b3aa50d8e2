"""core/dfm on Flux: S = 1 exactness (guidance and pooled vector included), training, sampling, checkpoints.

The base network is the host's own tiny Flux.1 (host/demo_models.py, guidance embedding on), built on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from dfm_helpers import (
    arch_mod,
    checkpoint_round_trip,
    differentiable_rope,
    levels,
    network,
    same_state,
    sampler,
    tiny_model,
    train,
)


def tiny_flux(seed: int = 0, std: float = 0.05):
    """The host's tiny Flux (BaseModel) with seeded weights and small random biases (so each one matters)."""
    return tiny_model("flux", seed, std).model


@pytest.fixture(scope="module")
def base():
    return tiny_flux()


def inputs(batch=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 16, size, size, generator=g), torch.randn(batch, 5, 4096, generator=g),
            torch.randn(batch, 768, generator=g))


def test_flux_is_recognised_and_the_error_names_the_families(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    assert arch.family == "flux" and arch.patch == 2 and arch.out_channels == 16
    with pytest.raises(arch_mod.UnsupportedModel, match=r"MMDiT, Flux\.1 .*and Wan 2\.1"):
        arch_mod.adapter_for(torch.nn.Linear(2, 2))


def test_one_level_equals_the_base_model_exactly(base):
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    x, ctx, y = inputs(size=12)
    t, guidance = torch.tensor([0.7, 0.2]), torch.tensor([3.5, 1.0])
    ref = dit(x, t, context=ctx, y=y, guidance=guidance)
    one = network.DFMLayers(arch, 1)
    out = network.dfm_forward(arch, one, [x], t[:, None], torch.ones(2, 1), ctx, y, guidance=guidance)
    assert torch.equal(out[0], ref)
    # the check can fail: guidance, the pooled vector and the grid (RoPE) all reach the output
    assert not torch.equal(network.dfm_forward(arch, one, [x], t[:, None], torch.ones(2, 1), ctx, y)[0], ref)
    assert not torch.equal(network.dfm_forward(arch, one, [x], t[:, None], torch.ones(2, 1), ctx, y * 0,
                                               guidance=guidance)[0], ref)
    tall = x.reshape(2, 16, 24, 6)
    assert torch.equal(network.dfm_forward(arch, one, [tall], t[:, None], torch.ones(2, 1), ctx, y,
                                           guidance=guidance)[0], dit(tall, t, context=ctx, y=y, guidance=guidance))
    two = network.DFMLayers(arch, 2)
    out2 = network.dfm_forward(arch, two, levels.split(x, 2), t[:, None].expand(2, 2), torch.ones(2, 2), ctx, y,
                               guidance=guidance)
    assert [tuple(o.shape[-2:]) for o in out2] == [(6, 6), (12, 12)]
    assert (levels.merge(out2) - ref).abs().max() > 1e-3  # two levels are a different model


def test_level_layers_start_from_the_pretrained_ones(base):
    """Block-sum patch kernels, split output heads, time embedders that sum to the base at one time."""
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    two = network.DFMLayers(arch, 2)
    coarse = two.embed[0].weight.reshape(-1, 16, 1, 1)[..., 0, 0]
    assert torch.allclose(coarse, dit.img_in.weight.reshape(-1, 16, 4).sum(-1), atol=1e-6)
    assert torch.equal(two.embed[1].weight, dit.img_in.weight) and not two.embed[1].bias.any()
    t = torch.tensor([0.4])
    emb = sum(arch.embed_time(m, t, torch.float32) for m in two.time)
    assert torch.allclose(emb, arch.embed_time(dit.time_in, t, torch.float32), atol=1e-6)
    head = dit.final_layer.linear.weight.reshape(16, 4, -1)  # (c, ph pw) rows
    assert torch.allclose(two.head[0].linear.weight, head.mean(1), atol=1e-6)
    assert torch.allclose(two.head[1].linear.weight, (head - head.mean(1, keepdim=True)).reshape(64, -1), atol=1e-6)


def _denoiser(arch, layers, ctx, y, guidance):
    def denoise(parts, sig, mask):
        b = parts[0].shape[0]
        s = sig.float()[None].expand(b, -1)
        out = network.dfm_forward(arch, layers, parts, s, mask[None].expand(b, -1).float(), ctx, y, guidance=guidance)
        return [p - o * s[:, i, None, None, None] for i, (p, o) in enumerate(zip(parts, out, strict=True))]
    return denoise


def test_stage_wise_sampler_runs_on_flux(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    x, ctx, y = inputs(seed=2)
    layers = network.DFMLayers(arch, 2)
    seen = []
    denoise = _denoiser(arch, layers, ctx, y, torch.full((2,), 3.5))

    def spy(parts, sig, mask):
        seen.append(mask.tolist())
        return denoise(parts, sig, mask)
    out = sampler.sample_dfm(spy, levels.split(x, 2), sampler.parse_plan("3, 2", "0.4", 2), torch.linspace(1, 0, 6))
    assert seen == [[True, False]] * 3 + [[True, True]] * 2
    assert [tuple(o.shape[-2:]) for o in out] == [(8, 8), (16, 16)] and all(torch.isfinite(o).all() for o in out)


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    base = tiny_flux(seed=3)
    arch = arch_mod.adapter_for(base.diffusion_model)
    trainer = train.DFMTrainer(arch, network.DFMLayers(arch, 2), train.TrainConfig(levels=2, lr=5e-3, rank=4),
                               lambda s: s, autograd_context=differentiable_rope)
    assert {n.split(".")[0] for n in trainer.lora.names} == {"single_blocks", "double_blocks"}
    x, ctx, y = inputs(batch=4, seed=4)
    guidance = torch.full((4,), 3.5)
    before_w = base.diffusion_model.double_blocks[0].img_attn.qkv.weight.clone()
    start = trainer.fixed_loss(x, ctx, y, seed=9, guidance=guidance)
    for _ in range(20):
        trainer.step(x, ctx, y, guidance)
    assert trainer.fixed_loss(x, ctx, y, seed=9, guidance=guidance) < 0.9 * start
    assert torch.equal(base.diffusion_model.double_blocks[0].img_attn.qkv.weight, before_w)  # core untouched
    assert float(torch.stack([u.abs().max() for u in trainer.lora.up]).max()) > 0  # the LoRA did train


def test_gradient_checkpointing_gives_the_same_gradients(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    x, ctx, y = inputs(seed=5)
    grads = []
    for flag in (False, True):
        layers = network.DFMLayers(arch, 2)
        with torch.enable_grad():
            out = network.dfm_forward(arch, layers, levels.split(x, 2), torch.full((2, 2), 0.5), torch.ones(2, 2),
                                      ctx, y, checkpoint=flag, guidance=torch.full((2,), 3.5),
                                      autograd_context=differentiable_rope)
            sum(o.square().mean() for o in out).backward()
        grads.append(torch.cat([p.grad.flatten() for p in layers.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5) and grads[0].abs().max() > 0


def test_gradients_through_the_in_place_flux_blocks_are_right():
    """The host's blocks add into their inputs in place after saving them: the gradient equals one where autograd
    saves a copy of every tensor, and a central finite difference (float64; the host keeps RoPE in float32)."""
    dit = tiny_flux(seed=6).diffusion_model.double()
    arch = arch_mod.adapter_for(dit)
    layers = network.DFMLayers(arch, 2).double()
    x, ctx, y = (v.double() for v in inputs(seed=6, size=8))
    parts, t, g = levels.split(x, 2), torch.full((2, 2), 0.5, dtype=torch.float64), torch.full((2,), 3.5)
    weight = layers.embed[0].weight

    def loss():
        out = network.dfm_forward(arch, layers, parts, t, torch.ones(2, 2), ctx, y, guidance=g,
                                  autograd_context=differentiable_rope)
        return sum(o.square().mean() for o in out)

    with torch.enable_grad():
        loss().backward()
    ours, weight.grad = weight.grad, None
    copy_saved = torch.autograd.graph.saved_tensors_hooks(lambda v: v.clone(), lambda v: v)
    with torch.enable_grad(), copy_saved:
        loss().backward()
    assert torch.equal(ours, weight.grad) and ours.abs().max() > 1e-4
    d = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-4
    with torch.no_grad():
        weight.add_(eps * d)
        up = float(loss())
        weight.sub_(2 * eps * d)
        down = float(loss())
        weight.add_(eps * d)
    numeric, analytic = (up - down) / (2 * eps), float((ours * d).sum())
    assert abs(numeric - analytic) < 1e-4 * abs(numeric)


def test_checkpoint_round_trip_records_the_family(tmp_path, base):
    layers, fresh, meta, sd, lora = checkpoint_round_trip(tmp_path / "f.safetensors", base.diffusion_model, True)
    assert meta["family"] == "flux" and not lora
    fresh.load_state_dict(sd)
    assert same_state(fresh, layers)


def test_new_layers_train_even_where_the_host_froze_the_base():
    """0.33 builds diffusion models with requires_grad off; the per-level layers start as copies of its layers."""
    dit = tiny_flux(seed=7).diffusion_model.requires_grad_(False)
    layers = network.DFMLayers(arch_mod.adapter_for(dit), 2)
    assert all(p.requires_grad for p in layers.parameters())
    assert not any(p.requires_grad for p in dit.parameters())  # the base stays as it was
