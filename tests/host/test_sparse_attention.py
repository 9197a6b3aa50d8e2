"""PyraSparseAttention in-process on the tiny SD3, Flux and Wan models: keep-all equals the unpatched model,
sparse settings change it a little and reach the sparsity asked for, the base model stays untouched."""

from __future__ import annotations

import pytest
import torch

# family -> (conditioning family, latent shape with 256 image tokens)
FAMILIES = {
    "sd3": ("sd3", (1, 16, 32, 32)),
    "flux": ("flux", (1, 16, 32, 32)),
    "wan21": ("wan21", (1, 16, 1, 32, 32)),
}
STEPS = 3
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture(scope="module")
def mods(comfy_host):
    return (comfy_host.module("host.demo_models"), comfy_host.module("host.demo_models"),
            comfy_host.node("PyraSparseAttention"), comfy_host.module("host.sparse_attention"))


def sample(patcher, cond_mod, cond_family, shape):
    import comfy.sample

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    pos, neg = cond_mod.demo_conditioning(cond_family, seed=1), cond_mod.demo_conditioning(cond_family, seed=2)
    return comfy.sample.sample(patcher, noise, STEPS, 2.0, "euler", "simple", pos, neg, torch.zeros(shape),
                               disable_pbar=True, seed=3)


def patch(node, base, keep_mass=1.0, keep_ratio=0.0, block="64", start=0.0, end=1.0, text=-1):
    (out,) = node.execute(base, keep_mass, keep_ratio, block, start, end, text, True).result
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_keep_all_exact_sparse_close_base_untouched(mods, family, caplog):
    demo, cond, node, _ = mods
    cond_family, shape = FAMILIES[family]
    base = demo.build_tiny_model(family)
    plain = sample(base, cond, cond_family, shape)
    options_before = repr(base.model_options)

    keep_all = patch(node, base, keep_mass=1.0)
    assert torch.equal(sample(keep_all, cond, cond_family, shape), plain)

    with caplog.at_level("INFO", logger="pyra"):
        sparse = patch(node, base, keep_ratio=0.5)
        out = sample(sparse, cond, cond_family, shape)
    assert not torch.equal(out, plain)
    assert (out - plain).abs().mean() < 0.5 * plain.abs().mean()
    log = [r.getMessage() for r in caplog.records if "Pyra sparse attention" in r.getMessage()]
    assert log and "key blocks skipped" in log[-1]

    assert torch.equal(sample(base, cond, cond_family, shape), plain)
    assert repr(base.model_options) == options_before
    assert "optimized_attention_override" not in base.model_options.get("transformer_options", {})


def test_sparsity_reached_and_window(mods):
    demo, cond, _, hooks = mods
    base = demo.build_tiny_model("wan21")
    patched = base.clone()
    stats = hooks.install(patched, "wan21", hooks.SparseSettings(1.0, 0.5, 64, hooks.SigmaWindow(0.0, 1.0), -1, True))
    sample(patched, cond, "wan21", FAMILIES["wan21"][1])
    assert stats.sparse_calls > 0 and stats.history[-1] == pytest.approx(0.5)  # 2 of 4 blocks per row
    assert stats.dense_calls == stats.sparse_calls  # one cross-attention per self-attention stays dense
    assert isinstance(stats.kept_blocks, torch.Tensor)  # summed on the device, read once after the run

    same = base.clone()  # 7 x 11 = 77 image tokens, as many as the text: ambiguous, so everything stays dense
    stats = hooks.install(same, "wan21", hooks.SparseSettings(1.0, 0.5, 64, hooks.SigmaWindow(0.0, 1.0), -1, True))
    sample(same, cond, "wan21", (1, 16, 1, 14, 22))
    assert stats.sparse_calls == 0 and stats.dense_calls > 0

    windowed = base.clone()
    settings = hooks.SparseSettings(1.0, 0.5, 64, hooks.SigmaWindow(0.99, 1.0), -1, True)
    stats = hooks.install(windowed, "wan21", settings)
    sample(windowed, cond, "wan21", FAMILIES["wan21"][1])
    assert stats.sparse_calls == 0 and stats.dense_calls > 0  # every step of 3 lies before 99 %


def test_text_tokens_kept_in_joint_attention(mods):
    demo, cond, _, hooks = mods
    base = demo.build_tiny_model("flux")
    patched = base.clone()
    seen = []
    stats = hooks.install(patched, "flux", hooks.SparseSettings(1.0, 0.01, 64, hooks.SigmaWindow(0.0, 1.0), -1, True))
    override = patched.model_options["transformer_options"]["optimized_attention_override"]

    def spy(func, q, k, v, *args, **kwargs):
        seen.append(kwargs.get("transformer_options", {}).get(hooks.STEP_KEY))
        return override(func, q, k, v, *args, **kwargs)

    patched.model_options["transformer_options"]["optimized_attention_override"] = spy
    sample(patched, cond, "flux", FAMILIES["flux"][1])
    tokens = cond.demo_conditioning("flux")[0][0].shape[1]
    assert seen and all(s == {"text_tokens": tokens, "text_leads": True, "tokens": None, "grid": None} for s in seen)
    assert stats.history[-1] > 0


def test_unsupported_family_names_the_supported_ones(mods):
    demo, _, node, hooks = mods
    with pytest.raises(hooks.SparseAttentionError, match=r"SD3, Flux, Wan 2\.1, Chroma, Qwen-Image"):
        patch(node, demo.build_tiny_model("sd15"))
    with pytest.raises(ValueError, match="must be below end_percent"):
        patch(node, demo.build_tiny_model("flux"), start=0.5, end=0.5)
