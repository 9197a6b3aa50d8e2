"""core/adapters extract.py, resize.py and lora_file.py: layouts, alpha, exact resize, merge, bad files."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
extract = importlib.import_module("pyra_pack.core.adapters.extract")
resize = importlib.import_module("pyra_pack.core.adapters.resize")
lora_file = importlib.import_module("pyra_pack.core.adapters.lora_file")
rank = importlib.import_module("pyra_pack.core.adapters.rank")

F32 = torch.float32


def low_rank(shape, r, seed=0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    out, inner = shape[0], torch.Size(shape[1:]).numel()
    d = torch.randn(out, r, generator=g) @ torch.randn(r, inner, generator=g) / r
    return (d + noise * torch.randn(out, inner, generator=g)).reshape(shape)


def host_delta(tensors, base, shape):
    """What the host's LoRA adapter adds: (alpha / r) * up.flatten(1) @ down.flatten(1), reshaped."""
    up, down = tensors[f"{base}.lora_up.weight"].double(), tensors[f"{base}.lora_down.weight"].double()
    alpha = float(tensors[f"{base}.alpha"]) if f"{base}.alpha" in tensors else down.shape[0]
    return (alpha / down.shape[0] * up.flatten(1) @ down.flatten(1)).reshape(shape)


@pytest.mark.parametrize("shape", [(40, 30), (32, 16, 3, 3), (24, 8, 1, 1), (16, 8, 1, 2, 2)])
def test_extract_layouts_match_the_host(shape):
    d = low_rank(shape, 5)
    ex = extract.extract_lora([("diffusion_model.x", shape, lambda: d)], rank.RankRule("energy", 1.0),
                              method="exact", dtype=F32)
    up, down = ex.tensors["diffusion_model.x.lora_up.weight"], ex.tensors["diffusion_model.x.lora_down.weight"]
    assert up.shape == (shape[0], 5, *[1] * (len(shape) - 2)) and down.shape == (5, *shape[1:])
    assert float(ex.tensors["diffusion_model.x.alpha"]) == 5
    assert torch.allclose(host_delta(ex.tensors, "diffusion_model.x", shape), d.double(), atol=1e-5)
    assert ex.layers[0].rank == 5 and ex.layers[0].rel_error < 1e-3  # sqrt of an fp32-rounded energy


def test_extract_skips_unchanged_and_reports():
    layers = [("a", (20, 10), lambda: low_rank((20, 10), 3, noise=0.01)), ("b", (10, 10), lambda: torch.zeros(10, 10))]
    ex = extract.extract_lora(layers, rank.RankRule("energy", 0.9), dtype=F32)
    assert ex.unchanged == ["b"] and "a.lora_up.weight" in ex.tensors and "b.lora_up.weight" not in ex.tensors
    text = ex.report("test")
    assert "1 layers unchanged" in text and "mean relative error" in text
    assert ex.layers[0].retained >= 0.9 and ex.layers[0].rel_error == pytest.approx((1 - ex.layers[0].retained) ** 0.5)


def test_size_budget_is_met_and_beats_uniform_rank():
    shapes = [(64, 48), (48, 48), (96, 32)]
    ds = [low_rank(s, r, seed=i, noise=0.02) for i, (s, r) in enumerate(zip(shapes, (2, 12, 6), strict=True))]
    layers = [(f"l{i}", s, (lambda d=d: d)) for i, (s, d) in enumerate(zip(shapes, ds, strict=True))]
    budget = sum(6 * (s[0] + s[1]) * 2 for s in shapes)  # uniform rank 6 in fp16
    ours = extract.extract_lora(layers, rank.RankRule("size_mb", budget / 1e6), dtype=torch.float16,
                                budget_bytes=budget)
    uniform = extract.extract_lora(layers, rank.RankRule("rank", 6), dtype=torch.float16)
    factor_bytes = sum(t.numel() * t.element_size() for k, t in ours.tensors.items() if not k.endswith("alpha"))
    assert factor_bytes <= budget
    mean = [sum(r.rel_error for r in e.layers) / 3 for e in (ours, uniform)]
    assert mean[0] < mean[1]


def lora(shape, r, alpha, seed=0):
    g = torch.Generator().manual_seed(seed)
    up = torch.randn(shape[0], r, *[1] * (len(shape) - 2), generator=g)
    down = torch.randn(r, *shape[1:], generator=g)
    return lora_file.LoraModule(up, down, alpha)


@pytest.mark.parametrize("shape", [(50, 40), (16, 8, 3, 3)])
def test_resize_equals_exact_truncated_svd_of_the_product(shape):
    m = lora(shape, 12, alpha=4.0)
    dense = resize.dense_delta(m).double()
    for k in (3, 12):
        ex = resize.resize_lora(lora_file.LoraFile({"x": m}), rank.RankRule("rank", k), dtype=torch.float64)
        got = host_delta(ex.tensors, "x", shape).flatten(1).double()
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert torch.allclose(got, best, atol=1e-5 * float(s[0]))
    assert not torch.allclose(host_delta(ex.tensors, "x", shape), 4.0 * host_delta(ex.tensors, "x", shape))


def test_alpha_semantics():
    m = lora((20, 10), 4, alpha=2.0)  # the host scales up @ down by alpha / rank = 0.5
    assert m.scale == 0.5
    ex = resize.resize_lora(lora_file.LoraFile({"x": m}), rank.RankRule("energy", 1.0), dtype=torch.float64)
    assert torch.allclose(host_delta(ex.tensors, "x", (20, 10)), (0.5 * m.up @ m.down).double(), atol=1e-5)
    no_alpha = lora_file.LoraModule(m.up, m.down, None)
    assert no_alpha.scale == 1.0


@pytest.mark.parametrize("mode", ["sum", "ties", "dare"])
def test_merge_of_one_lora_with_weight_one_reproduces_it(mode):
    m = lora((30, 20), 6, alpha=3.0)
    ex = resize.merge_loras([lora_file.LoraFile({"x": m})], [1.0], rank.RankRule("energy", 1.0), mode=mode,
                            dtype=torch.float64)
    assert torch.allclose(host_delta(ex.tensors, "x", (30, 20)), resize.dense_delta(m).double(), atol=1e-5)


def test_weighted_sum_merge_and_missing_modules():
    a, b = lora((30, 20), 4, 4.0, seed=1), lora((30, 20), 3, None, seed=2)
    c = lora((8, 8), 2, None, seed=3)
    ex = resize.merge_loras([lora_file.LoraFile({"x": a, "y": c}), lora_file.LoraFile({"x": b})], [0.5, -2.0],
                            rank.RankRule("energy", 1.0), dtype=torch.float64)
    want = 0.5 * resize.dense_delta(a) - 2.0 * resize.dense_delta(b)
    assert torch.allclose(host_delta(ex.tensors, "x", (30, 20)), want.double(), atol=1e-4)
    assert torch.allclose(host_delta(ex.tensors, "y", (8, 8)), 0.5 * resize.dense_delta(c).double(), atol=1e-5)
    assert ex.layers[0].rank == 7


def test_ties_elects_signs():
    d1, d2 = torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0, 1.0], [-1.0, 0.0]])
    merged = resize.ties_combine([d1, d2], [1.0, 1.0], density=1.0)
    assert torch.equal(merged, torch.tensor([[2.0, -2.0], [-1.0, 0.0]]))


def test_merge_rejects_shape_mismatch_naming_the_key():
    with pytest.raises(lora_file.LoraFileError, match=r"diffusion_model\.q"):
        resize.merge_loras([lora_file.LoraFile({"diffusion_model.q": lora((8, 4), 2, None)}),
                            lora_file.LoraFile({"diffusion_model.q": lora((8, 5), 2, None)})],
                           [1, 1], rank.RankRule("rank", 2))


def test_parse_variants_and_errors():
    up, down = torch.randn(6, 2), torch.randn(2, 4)
    parsed = lora_file.parse_lora({"m.lora_B.weight": up, "m.lora_A.weight": down, "n.diff_b": torch.ones(3),
                                   "k.hada_w1_a": torch.ones(2, 2)})
    assert set(parsed.modules) == {"m"} and set(parsed.additive) == {"n.diff_b"}
    assert set(parsed.other) == {"k.hada_w1_a"}
    with pytest.raises(lora_file.LoraFileError, match="bad: up"):
        lora_file.parse_lora({"bad.lora_up.weight": up, "bad.lora_down.weight": torch.randn(3, 4)})
    with pytest.raises(lora_file.LoraFileError, match="partner"):
        lora_file.parse_lora({"lone.lora_up.weight": up})


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "x.safetensors"
    size = lora_file.save_lora({"a.lora_up.weight": torch.randn(64, 4), "a.lora_down.weight": torch.randn(4, 64)},
                               path)
    assert set(lora_file.load_state_dict(path)) == {"a.lora_up.weight", "a.lora_down.weight"}
    path.write_bytes(path.read_bytes()[: size - 100])
    with pytest.raises(lora_file.LoraFileError, match="corrupt or truncated"):
        lora_file.load_state_dict(path)
    path.write_bytes(b"\x00" * 5)
    with pytest.raises(lora_file.LoraFileError, match="corrupt or truncated"):
        lora_file.load_state_dict(path)


def test_guess_family():
    t = torch.zeros(2, 2)
    assert lora_file.guess_family({"diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": t}) == "Flux"
    assert lora_file.guess_family({"lora_unet_joint_blocks_0_x_attn_qkv.lora_up.weight": t}) == "SD3"
    assert lora_file.guess_family({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": t}) == "Wan"
    k = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
    assert lora_file.guess_family({k: torch.zeros(4, 2048)}) == "SDXL"
    assert lora_file.guess_family({k: torch.zeros(4, 768)}) == "SD1.x"
    assert lora_file.guess_family({"foo.lora_up.weight": t}) == "unknown"


@pytest.mark.parametrize(("key", "family"), [
    ("diffusion_model.double_stream_modulation_img.lin", "Flux.2"),
    ("diffusion_model.distilled_guidance_layer.layers.0.in_layer", "Chroma"),
    ("transformer.double_blocks.0.img_attn_qkv", "HunyuanVideo"),  # diffusion-pipe's names
    ("diffusion_model.txt_in.individual_token_refiner.blocks.0.self_attn.qkv", "HunyuanVideo"),
    ("lora_unet_double_blocks_0_img_attn_qkv", "Flux"),  # kohya Flux: not HunyuanVideo's diffusion-pipe names
    ("transformer_blocks.0.img_mlp.net.0.proj", "Qwen-Image"),
    ("diffusion_model.layers.0.attention.qkv", "Z-Image (Lumina 2)"),
    ("diffusion_model.noise_refiner.0.feed_forward.w1", "Z-Image (Lumina 2)"),
    ("diffusion_model.transformer_blocks.0.audio_to_video_attn.to_v", "LTX-2"),
    ("diffusion_model.transformer_blocks.0.audio_attn1.to_q", "LTX-2"),
    ("diffusion_model.transformer_blocks.0.attn1.to_q", "LTX-Video"),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "an SD-style UNet"),  # not LTX
])
def test_guess_family_of_the_2026_families(key, family):
    assert lora_file.guess_family({f"{key}.lora_up.weight": torch.zeros(2, 2)}) == family
