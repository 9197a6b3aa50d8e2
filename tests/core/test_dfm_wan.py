"""core/dfm on Wan 2.1 text-to-video: S = 1 exactness on 5-D latents, spatial-only levels, training, sampling,
checkpoints, and the refusal of the other Wan variants.

The base network is the host's own tiny Wan 2.1 t2v (host/demo_models.py "wan21"), built on the CPU.
"""

from __future__ import annotations

import itertools

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


def tiny_wan(seed: int = 0, std: float = 0.05):
    """The host's tiny Wan 2.1 t2v (BaseModel) with seeded weights and small random biases (so each one matters)."""
    return tiny_model("wan21", seed, std).model


@pytest.fixture(scope="module")
def base():
    return tiny_wan()


def inputs(batch=2, frames=3, size=8, seed=0, text_dim=None):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 16, frames, size, size, generator=g),
            torch.randn(batch, 5, text_dim or 4096, generator=g))


def test_wan_is_recognised_and_other_variants_are_refused(base):
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    assert arch.family == "wan21" and arch.patch == 2 and arch.out_channels == 16
    with pytest.raises(arch_mod.UnsupportedModel, match=r"MMDiT, Flux\.1 .*and Wan 2\.1"):
        arch_mod.adapter_for(torch.nn.Linear(2, 2))
    dit.model_type = "i2v"  # an image-to-video Wan (same attributes, other cross-attention and inputs)
    try:
        with pytest.raises(arch_mod.UnsupportedModel, match="text-to-video model only"):
            arch_mod.adapter_for(dit)
    finally:
        dit.model_type = "t2v"
    vace = type("VaceWanModel", (torch.nn.Module,), {})()
    for name in ("patch_embedding", "time_embedding", "time_projection", "head", "blocks"):
        setattr(vace, name, torch.nn.Identity())
    with pytest.raises(arch_mod.UnsupportedModel, match="not VaceWanModel"):
        arch_mod.adapter_for(vace)


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_one_level_equals_the_base_model_exactly(base, frames):
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    x, ctx = inputs(frames=frames, size=6, seed=frames)
    t = torch.tensor([700.0, 200.0])
    ref = dit(x, t, ctx)
    one = network.DFMLayers(arch, 1)
    out = network.dfm_forward(arch, one, [x], t[:, None], torch.ones(2, 1), ctx)
    assert out[0].shape == x.shape and torch.equal(out[0], ref)
    # the check can fail: the text, the timestep and the frame count (RoPE over t) all reach the output
    assert not torch.equal(network.dfm_forward(arch, one, [x], t[:, None], torch.ones(2, 1), ctx * 0)[0], ref)
    assert not torch.equal(network.dfm_forward(arch, one, [x], t[:, None] + 1, torch.ones(2, 1), ctx)[0], ref)
    wide = x.reshape(2, 16, frames, 2, 18)
    assert torch.equal(network.dfm_forward(arch, one, [wide], t[:, None], torch.ones(2, 1), ctx)[0],
                       dit(wide, t, ctx))


def test_rope_follows_the_frame_count(base):
    """Frames are tokens: the same frames in a longer clip see other positions, so the output differs."""
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    x, ctx = inputs(frames=4, size=4, seed=7)
    one = network.DFMLayers(arch, 1)
    t = torch.full((2, 1), 500.0)
    full = network.dfm_forward(arch, one, [x], t, torch.ones(2, 1), ctx)[0]
    head = network.dfm_forward(arch, one, [x[:, :, :2]], t, torch.ones(2, 1), ctx)[0]
    assert torch.equal(head, dit(x[:, :, :2], t[:, 0], ctx)) and not torch.allclose(head, full[:, :, :2])


def test_levels_are_spatial_and_every_level_keeps_all_frames(base):
    x, _ = inputs(frames=3, size=8, seed=1)
    parts = levels.split(x, 2)
    assert [tuple(p.shape) for p in parts] == [(2, 16, 3, 4, 4), (2, 16, 3, 8, 8)]
    assert torch.allclose(levels.merge(parts), x, atol=1e-5)
    # frame by frame: the pyramid of one frame is that frame's slice of the video pyramid
    frame = levels.split(x[:, :, 1], 2)
    assert all(torch.equal(a[:, :, 1], b) for a, b in zip(parts, frame, strict=True))
    sizes = [tuple(p.shape[2:]) for p in parts]
    packed = levels.pack(parts)
    assert packed.ndim == 5 and all(torch.equal(a, b) for a, b in zip(levels.unpack(packed, sizes), parts,
                                                                       strict=True))


def test_level_layers_start_from_the_pretrained_ones(base):
    """Block-sum patch kernels, split output heads, time embedders that sum to the base at one time."""
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    two = network.DFMLayers(arch, 2)
    w = dit.patch_embedding.weight  # (D, C, 1, 2, 2)
    assert two.embed[0].weight.shape == (w.shape[0], 16, 1, 1, 1) and two.embed[0].weight.dtype == torch.float32
    assert torch.allclose(two.embed[0].weight[..., 0, 0, 0], w.sum((-3, -2, -1)), atol=1e-6)
    assert torch.equal(two.embed[1].weight, w) and not two.embed[1].bias.any()
    t = torch.tensor([400.0])
    emb = sum(arch.embed_time(m, t, torch.float32) for m in two.time)
    assert torch.allclose(emb, arch.embed_time(dit.time_embedding, t, torch.float32), atol=1e-5)
    head = dit.head.head.weight.reshape(4, 16, -1)  # (ph pw, c) rows
    assert torch.allclose(two.head[0].head.weight, head.mean(0), atol=1e-6)
    assert torch.allclose(two.head[1].head.weight, (head - head.mean(0, keepdim=True)).reshape(64, -1), atol=1e-6)
    assert torch.equal(two.head[0].modulation, dit.head.modulation)
    # two levels run on video and give every level its own size, all frames kept
    x, ctx = inputs(frames=2, seed=3)
    out = network.dfm_forward(arch, two, levels.split(x, 2), torch.full((2, 2), 500.0), torch.ones(2, 2), ctx)
    assert [tuple(o.shape) for o in out] == [(2, 16, 2, 4, 4), (2, 16, 2, 8, 8)]
    assert (levels.merge(out) - dit(x, torch.full((2,), 500.0), ctx)).abs().max() > 1e-3  # a different model


def test_inactive_levels_are_masked(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    two = network.DFMLayers(arch, 2)
    x, ctx = inputs(frames=2, seed=4)
    parts = levels.split(x, 2)
    t, mask = torch.tensor([[300.0, 1000.0]] * 2), torch.tensor([[1.0, 0.0]] * 2)
    a = network.dfm_forward(arch, two, parts, t, mask, ctx)
    b = network.dfm_forward(arch, two, [parts[0], torch.randn_like(parts[1])], t, mask, ctx)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c = network.dfm_forward(arch, two, [parts[0], torch.randn_like(parts[1])], t, torch.ones(2, 2), ctx)
    assert not torch.equal(a[0], c[0])  # unmasked, the fine level does reach the output


def _denoiser(arch, layers, ctx):
    def denoise(parts, sig, mask):
        b = parts[0].shape[0]
        s = sig.float()[None].expand(b, -1)
        out = network.dfm_forward(arch, layers, parts, s * 1000, mask[None].expand(b, -1).float(), ctx)
        return [p - o * s[:, i, None, None, None, None] for i, (p, o) in enumerate(zip(parts, out, strict=True))]
    return denoise


def test_stage_wise_sampler_runs_on_wan(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    x, ctx = inputs(frames=3, seed=2)
    layers = network.DFMLayers(arch, 2)
    seen, previews = [], []
    denoise = _denoiser(arch, layers, ctx)

    def spy(parts, sig, mask):
        seen.append(mask.tolist())
        return denoise(parts, sig, mask)
    out = sampler.sample_dfm(spy, levels.split(x, 2), sampler.parse_plan("3, 2", "0.4", 2), torch.linspace(1, 0, 6),
                             callback=lambda n, p, d, preview: previews.append(preview.shape))
    assert seen == [[True, False]] * 3 + [[True, True]] * 2
    assert [tuple(o.shape) for o in out] == [(2, 16, 3, 4, 4), (2, 16, 3, 8, 8)]
    assert all(torch.isfinite(o).all() for o in out) and set(previews) == {x.shape}


def test_one_stage_sampler_is_the_plain_euler_sampler(base):
    dit = base.diffusion_model
    arch = arch_mod.adapter_for(dit)
    x, ctx = inputs(frames=2, size=4, seed=8)
    sigmas = torch.linspace(1, 0, 5)
    out = sampler.sample_dfm(_denoiser(arch, network.DFMLayers(arch, 1), ctx), [x], sampler.parse_plan("4", "", 1),
                             sigmas)[0]
    ref = x
    for s, s_next in itertools.pairwise(sigmas):
        den = ref - dit(ref, (s * 1000).expand(2), ctx) * s
        ref = ref + (ref - den) / s * (s_next - s)
    assert torch.allclose(out, ref, atol=1e-5) and not torch.allclose(out, x)


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    base = tiny_wan(seed=3)
    arch = arch_mod.adapter_for(base.diffusion_model)
    trainer = train.DFMTrainer(arch, network.DFMLayers(arch, 2), train.TrainConfig(levels=2, lr=5e-3, rank=4),
                               lambda s: s * 1000, autograd_context=differentiable_rope)
    assert {n.split(".")[0] for n in trainer.lora.names} == {"blocks"}
    x, ctx = inputs(batch=4, frames=2, seed=4)
    before_w = base.diffusion_model.blocks[0].self_attn.q.weight.clone()
    start = trainer.fixed_loss(x, ctx, seed=9)
    for _ in range(20):
        trainer.step(x, ctx)
    assert trainer.fixed_loss(x, ctx, seed=9) < 0.9 * start
    assert torch.equal(base.diffusion_model.blocks[0].self_attn.q.weight, before_w)  # core untouched
    assert float(torch.stack([u.abs().max() for u in trainer.lora.up]).max()) > 0  # the LoRA did train


def test_gradient_checkpointing_gives_the_same_gradients(base):
    arch = arch_mod.adapter_for(base.diffusion_model)
    x, ctx = inputs(frames=2, seed=5)
    grads = []
    for flag in (False, True):
        layers = network.DFMLayers(arch, 2)
        with torch.enable_grad():
            out = network.dfm_forward(arch, layers, levels.split(x, 2), torch.full((2, 2), 500.0),
                                      torch.ones(2, 2), ctx, checkpoint=flag, autograd_context=differentiable_rope)
            sum(o.square().mean() for o in out).backward()
        grads.append(torch.cat([p.grad.flatten() for p in layers.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5) and grads[0].abs().max() > 0


def test_checkpoint_round_trip_records_the_family(tmp_path, base):
    layers, fresh, meta, sd, lora = checkpoint_round_trip(tmp_path / "w.safetensors", base.diffusion_model, True)
    assert meta["family"] == "wan21" and not lora
    assert not torch.equal(fresh.embed[0].weight, layers.embed[0].weight)  # the load below has work to do
    fresh.load_state_dict(sd)
    assert same_state(fresh, layers)
