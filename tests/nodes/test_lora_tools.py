"""LoRA tools in the in-process host: extraction on the tiny SD1.5 demo model read back by the stock loader,
key layouts of every tiny family, resize and merge nodes, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sampling_helpers import denoise

RANK = 4


@pytest.fixture(scope="module")
def loras_dir(comfy_host) -> Path:
    import folder_paths

    out = Path(folder_paths.get_output_directory()) / "loras"
    out.mkdir(exist_ok=True)
    folder_paths.add_model_folder_path("loras", str(out))  # as main.py does for output/loras
    return out


@pytest.fixture(scope="module")
def tools(comfy_host):
    return comfy_host.module("nodes.adapters")


def finetune(base, seed: int = 1, scale: float = 0.3):
    """A clone of `base` with a rank-RANK delta on every matrix weight and a shift on every bias."""
    g = torch.Generator().manual_seed(seed)
    patches = {}
    for key, w in base.model.state_dict().items():
        if not key.startswith("diffusion_model."):
            continue
        if w.ndim >= 2 and key.endswith(".weight"):
            out, inner = w.shape[0], w[0].numel()
            d = torch.randn(out, RANK, generator=g) @ torch.randn(RANK, inner, generator=g) / (RANK * inner) ** 0.5
            patches[key] = (scale * float(w.float().std()) * d.reshape(w.shape) * inner**0.5,)
        elif key.endswith(".bias"):
            patches[key] = (0.01 * torch.randn(w.shape, generator=g),)
    ft = base.clone()
    ft.add_patches(patches, 1.0)
    return ft


def newest(folder: Path, stem: str) -> Path:
    return max(folder.glob(f"{stem}_*_.safetensors"), key=lambda p: p.stat().st_mtime_ns)


@pytest.fixture(scope="module")
def sd15(comfy_host):
    demo = comfy_host.module("host.demo_models")
    base = demo.build_tiny_model("sd15_detectable", torch.float32, seed=0)
    return base, finetune(base)


@pytest.fixture(scope="module")
def extracted(tools, sd15, loras_dir):
    base, ft = sd15
    out = tools.PyraExtractLoRA.execute(ft, "energy", 0.9999, 8, "randomized", "cpu", True, "fp32",
                                        "loras/pyra_test_extract", model_b=base)
    return out.args[0], newest(loras_dir, "pyra_test_extract")


def test_extract_loads_through_the_stock_loader_and_matches_the_finetune(comfy_host, sd15, extracted):
    import nodes

    base, ft = sd15
    report, path = extracted
    assert "mean relative error" in report and path.name in report
    sd = load_file(str(path))
    assert all(k.startswith("diffusion_model.") for k in sd)
    ups = [k for k in sd if k.endswith(".lora_up.weight")]
    assert ups and all(sd[k].shape[1] == RANK for k in ups)  # the energy rule found the planted rank
    (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, f"{path.name}", 1.0)
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd15", seed=1)
    y_base, y_ft, y_lora = denoise(base, cond), denoise(ft, cond), denoise(patched, cond)
    gap = (y_ft - y_base).norm()
    assert gap > 1e-2 * y_base.norm(), "the finetune does not change the output: the test would be vacuous"
    assert (y_lora - y_ft).norm() < 1e-3 * gap


def test_save_load_round_trip_is_bit_exact(comfy_host, sd15, extracted):
    import comfy.sd

    import nodes

    base, _ = sd15
    _, path = extracted
    in_memory = load_file(str(path))
    (from_file,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, path.name, 1.0)
    direct, _ = comfy.sd.load_lora_for_models(base, None, {k: v.clone() for k, v in in_memory.items()}, 1.0, 0)
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd15", seed=3)
    assert torch.equal(denoise(from_file, cond), denoise(direct, cond))


def test_base_model_is_untouched(comfy_host, sd15, extracted):
    base, _ = sd15
    assert not base.patches, "extraction must not patch its inputs"


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux", "wan21"])
def test_keys_load_for_every_family(comfy_host, tools, loras_dir, family):
    import comfy.lora
    import comfy.sd

    base = comfy_host.module("host.demo_models").build_tiny_model(family, torch.float32, seed=0)
    ft = finetune(base, seed=2)
    tools.PyraExtractLoRA.execute(ft, "rank", RANK, 8, "exact", "cpu", True, "fp32", f"loras/pyra_fam_{family}",
                                  model_b=base)
    sd = load_file(str(newest(loras_dir, f"pyra_fam_{family}")))
    key_map = comfy.lora.model_lora_keys_unet(base.model, {})
    loaded = comfy.lora.load_lora(sd, key_map, log_missing=False)
    modules = {k.rsplit(".", 2)[0] for k in sd if k.endswith(".lora_up.weight")}
    assert len(loaded) == len(modules) + sum(k.endswith((".diff", ".diff_b")) for k in sd)
    patched, _ = comfy.sd.load_lora_for_models(base, None, sd, 1.0, 0)
    for key in list(ft.patches)[:: max(1, len(ft.patches) // 8)]:
        w = comfy.utils.get_attr(base.model, key).float()
        want = comfy.lora.calculate_weight(ft.patches[key], w.clone(), key)
        got = comfy.lora.calculate_weight(patched.patches[key], w.clone(), key)
        assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max())), key


def test_resize_and_merge_nodes(comfy_host, tools, extracted, loras_dir, sd15):
    _, path = extracted
    src = load_file(str(path))
    report = tools.PyraResizeLoRA.execute(path.name, "rank", 2.0, "fp32", "loras/pyra_test_resize").args[0]
    small = load_file(str(newest(loras_dir, "pyra_test_resize")))
    assert "PyraResizeLoRA" in report
    ups = [k for k in small if k.endswith(".lora_up.weight")]
    assert ups and all(small[k].shape[1] == 2 for k in ups)
    tools.PyraMergeLoRA.execute("sum", 1.0, 0, "energy", 1.0, "fp32", "loras/pyra_test_merge", model=sd15[0],
                                lora_1=path.name, weight_1=0.25, lora_2=path.name, weight_2=0.75,
                                lora_3="None", weight_3=1.0, lora_4="None", weight_4=1.0)
    merged = load_file(str(newest(loras_dir, "pyra_test_merge")))
    key = ups[0][: -len(".lora_up.weight")]
    want = src[f"{key}.lora_up.weight"].flatten(1) @ src[f"{key}.lora_down.weight"].flatten(1)
    got = merged[f"{key}.lora_up.weight"].flatten(1) @ merged[f"{key}.lora_down.weight"].flatten(1)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))


def test_bad_files_are_rejected_without_output(comfy_host, tools, extracted, loras_dir, sd15):
    _, path = extracted
    core_file = comfy_host.module("core.adapters.lora_file")
    (loras_dir / "pyra_truncated.safetensors").write_bytes(path.read_bytes()[:-1000])
    before = set(loras_dir.iterdir())
    with pytest.raises(core_file.LoraFileError, match="corrupt or truncated"):
        tools.PyraResizeLoRA.execute("pyra_truncated.safetensors", "rank", 2.0, "fp16", "loras/pyra_bad")
    assert set(loras_dir.iterdir()) == before
    flux_keys = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": torch.zeros(9, 2),
                 "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(2, 3)}
    core_file.save_lora(flux_keys, loras_dir / "pyra_flux_like.safetensors")
    with pytest.raises(core_file.LoraFileError, match=r"0 of 1 LoRA modules match.*looks made for Flux"):
        tools.PyraResizeLoRA.execute("pyra_flux_like.safetensors", "rank", 2.0, "fp16", "loras/pyra_bad",
                                     model=sd15[0])
    sd = load_file(str(path))
    key = next(k for k in sd if k.endswith(".lora_down.weight"))
    sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1] + 1, *sd[key].shape[2:])
    sd[key.replace("lora_down", "lora_up")] = torch.zeros(sd[key.replace("lora_down", "lora_up")].shape)
    core_file.save_lora(sd, loras_dir / "pyra_wrong_shape.safetensors")
    with pytest.raises(core_file.LoraFileError, match=key[: -len(".lora_down.weight")].replace(".", r"\.")):
        tools.PyraResizeLoRA.execute("pyra_wrong_shape.safetensors", "rank", 2.0, "fp16", "loras/pyra_bad",
                                     model=sd15[0])
    assert set(loras_dir.iterdir()) == before | {loras_dir / "pyra_flux_like.safetensors",
                                                 loras_dir / "pyra_wrong_shape.safetensors"}


def test_extraction_memory_is_refused_under_a_cap_and_the_rank_estimate_is_exact(comfy_host, tools, sd15, loras_dir,
                                                                                  monkeypatch):
    """Mode rank at max_rank 8192 keeps full-rank factors of every layer (about twice the model for square
    layers): over the free memory it is refused before any SVD; the estimate of what it keeps is exact."""
    base, ft = sd15
    extract, lora_host = comfy_host.module("core.adapters.extract"), comfy_host.module("host.lora")
    rule = comfy_host.module("core.adapters.rank").RankRule("rank", 3.0)
    layers, _ = lora_host.model_differences(ft, base, torch.device("cpu"))
    kept = extract.memory_needed(layers, rule, 8)["kept singular triplets"]
    ex = extract.extract_lora(layers, rule, 8, "exact", "cpu", torch.float32)
    factors = sum(t.numel() * 4 for k, t in ex.tensors.items() if k.endswith(("lora_up.weight", "lora_down.weight")))
    ranks = sum(t.shape[0] for k, t in ex.tensors.items() if k.endswith("lora_down.weight"))
    assert kept == factors + 4 * ranks  # the factors plus one singular value per kept triplet
    budget = comfy_host.module("host.memory")
    monkeypatch.setattr(budget, "free_bytes", lambda device: 1 << 20)
    before = set(loras_dir.iterdir())
    with pytest.raises(budget.NotEnoughMemory, match=r"PyraExtractLoRA needs at least .* lower value"):
        tools.PyraExtractLoRA.execute(ft, "rank", 8192.0, 8192, "exact", "cpu", True, "fp16", "loras/pyra_capped",
                                      model_b=base)
    assert set(loras_dir.iterdir()) == before


def test_an_empty_adapter_is_not_saved(comfy_host, loras_dir):
    before = set(loras_dir.iterdir())
    with pytest.raises(ValueError, match="nothing to save under loras/pyra_empty"):
        comfy_host.module("host.lora").save({}, "loras/pyra_empty", {})
    assert set(loras_dir.iterdir()) == before


def test_extract_needs_a_difference(tools, sd15):
    with pytest.raises(ValueError, match="connect the base model"):
        tools.PyraExtractLoRA.execute(sd15[0], "energy", 0.9, 8, "exact", "cpu", True, "fp16", "loras/pyra_none")


def test_interrupt_stops_extraction_without_output(comfy_host, tools, loras_dir):
    import comfy.model_management as mm

    base = comfy_host.module("host.demo_models").build_tiny_model("sd15", torch.float32, seed=0)
    before = set(loras_dir.iterdir())
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            tools.PyraExtractLoRA.execute(finetune(base), "energy", 0.9, 4, "exact", "cpu", True, "fp16",
                                          "loras/pyra_interrupted", model_b=base)
    finally:
        mm.interrupt_current_processing(False)
    assert set(loras_dir.iterdir()) == before
