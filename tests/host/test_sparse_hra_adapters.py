"""Sparse and Householder adapters in the in-process host: the stock loader reads both, strength, composition with
a stock LoRA, full vs low-VRAM patching, bit-exact save-load, bad files, the SaRA converter and the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sampling_helpers import denoise


@pytest.fixture(scope="module")
def core(comfy_host):
    return {n: comfy_host.module(f"core.adapters.{n}") for n in ("sparse", "householder", "sara")}


@pytest.fixture(scope="module")
def loras_dir(comfy_host) -> Path:
    import folder_paths

    out = Path(folder_paths.get_output_directory()) / "loras"
    out.mkdir(exist_ok=True)
    folder_paths.add_model_folder_path("loras", str(out))
    return out


@pytest.fixture(scope="module")
def base(comfy_host):
    return comfy_host.module("host.demo_models").build_tiny_model("sd15_detectable", torch.float32, seed=0)


@pytest.fixture(scope="module")
def cond(comfy_host):
    return comfy_host.module("host.demo_models").demo_conditioning("sd15", seed=1)


def weights(base):
    return {k: w for k, w in base.model.state_dict().items() if k.startswith("diffusion_model.")}


def sparse_file(core, base, threshold=5e-3, scale=0.05, matrices_only=False):
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, w in weights(base).items():
        if matrices_only and w.ndim < 2:
            continue
        idx = core["sparse"].select_small(w, threshold)
        if idx.numel():
            d = core["sparse"].SparseDelta(idx, scale * torch.randn(idx.numel(), generator=g), tuple(w.shape))
            out.update(core["sparse"].to_tensors(core["sparse"].module_key(key), d))
    return out


def hra_file(core, base, r=4):
    g = torch.Generator().manual_seed(1)
    out = {}
    for key, w in weights(base).items():
        if key.endswith(".weight") and w.ndim >= 2:
            d = w[0].numel()
            u = core["householder"].init_vectors(d, r, g) + 0.2 * torch.randn(d, r, generator=g)
            out[key[: -len(".weight")] + ".hra_u"] = u
    return out


@pytest.fixture(scope="module")
def files(core, base, loras_dir):
    names = {}
    for kind, tensors in (("sparse", sparse_file(core, base)), ("hra", hra_file(core, base)),
                          ("sparse_matrices", sparse_file(core, base, matrices_only=True))):
        save_file(tensors, str(loras_dir / f"pyra_test_{kind}.safetensors"))
        names[kind] = f"pyra_test_{kind}.safetensors"
    return names


def load(base, name, strength=1.0):
    import nodes

    return nodes.LoraLoaderModelOnly().load_lora_model_only(base, name, strength)[0]


@pytest.mark.parametrize("kind", ["sparse", "hra"])
def test_stock_loader_reads_the_file_and_strength_scales(comfy_host, base, cond, files, kind):
    y_base = denoise(base, cond)
    adapted = load(base, files[kind])
    assert len(adapted.patches) > 50
    y = denoise(adapted, cond)
    assert (y - y_base).norm() > 1e-3 * y_base.norm()
    assert torch.equal(denoise(load(base, files[kind], 0.0), cond), y_base)
    half = denoise(load(base, files[kind], 0.5), cond)
    assert 0 < (half - y_base).norm() < (y - y_base).norm()
    assert not base.patches and torch.equal(denoise(base, cond), y_base)


@pytest.mark.parametrize("kind", ["sparse", "hra"])
def test_patched_weights_equal_the_adapter_math(comfy_host, core, base, files, loras_dir, kind):
    import comfy.lora

    adapted = load(base, files[kind], 0.7)
    sd = load_file(str(loras_dir / files[kind]))
    key = next(k for k in weights(base) if k.endswith("attn1.to_q.weight"))
    w = weights(base)[key].clone()
    got = comfy.lora.calculate_weight(adapted.patches[key], w.clone(), key)
    if kind == "sparse":
        want = w + 0.7 * core["sparse"].dense_delta(core["sparse"].from_tensors(sd, key[:-7]))
    else:
        h = core["householder"].householder_matrix(sd[key[:-7] + ".hra_u"])
        w2 = w.double().flatten(1)
        want = torch.lerp(w2, w2 @ h, 0.7).reshape(w.shape)
    assert torch.allclose(got.double(), want.double(), rtol=0, atol=1e-6)
    assert not torch.allclose(got, w, atol=1e-6)


@pytest.mark.parametrize("kind", ["sparse", "hra"])
def test_full_and_lowvram_loading_agree(comfy_host, base, cond, files, kind):
    import comfy.model_management

    # earlier tests leave a patched clone of `base` loaded (its weights patched in place in the shared model);
    # patching by hand below must start from the original weights
    comfy.model_management.unload_all_models()
    adapted = load(base, files[kind])
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([500.0])
    c = cond[0][0]
    outs = []
    for lowvram in (0, 1):
        adapted.patch_model(lowvram_model_memory=lowvram)
        try:
            with torch.no_grad():
                outs.append(adapted.model.apply_model(x, t, c_crossattn=c))
        finally:
            adapted.unpatch_model()
    with torch.no_grad():
        base.patch_model()
        plain = base.model.apply_model(x, t, c_crossattn=c)
        base.unpatch_model()
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-5)
    assert (outs[0] - plain).abs().max() > 1e-4


def test_composes_with_a_stock_lora(comfy_host, core, base, cond, files, loras_dir):
    """sparse + a LoRA stacked by the stock loaders equals one .diff file of the summed dense deltas."""
    g = torch.Generator().manual_seed(5)
    lora, summed = {}, {}
    sp = load_file(str(loras_dir / files["sparse"]))
    for key, w in weights(base).items():
        x = key[: -len(".weight")] if key.endswith(".weight") else key
        s = core["sparse"].from_tensors(sp, x)
        d = core["sparse"].dense_delta(s) if s is not None else torch.zeros(w.shape)
        if key.endswith(".weight") and w.ndim == 2:
            up, down = 0.05 * torch.randn(w.shape[0], 2, generator=g), 0.05 * torch.randn(2, w.shape[1], generator=g)
            lora.update({f"{x}.lora_up.weight": up, f"{x}.lora_down.weight": down})
            d = d + up @ down
        if d.any():
            summed[f"{x}.diff"] = d
    save_file(lora, str(loras_dir / "pyra_test_plain_lora.safetensors"))
    save_file(summed, str(loras_dir / "pyra_test_summed_diff.safetensors"))
    stacked = load(load(base, files["sparse"]), "pyra_test_plain_lora.safetensors")
    y_stacked, y_ref = denoise(stacked, cond), denoise(load(base, "pyra_test_summed_diff.safetensors"), cond)
    y_lora = denoise(load(base, "pyra_test_plain_lora.safetensors"), cond)
    assert (y_stacked - y_ref).norm() < 1e-4 * y_ref.norm()
    assert (y_stacked - y_lora).norm() > 1e-3 * y_lora.norm()
    hra_then_lora = denoise(load(load(base, files["hra"]), "pyra_test_plain_lora.safetensors"), cond)
    assert torch.isfinite(hra_then_lora).all() and (hra_then_lora - y_lora).norm() > 1e-3 * y_lora.norm()


@pytest.mark.parametrize("kind", ["sparse", "hra"])
def test_save_load_round_trip_is_bit_exact(comfy_host, base, cond, files, loras_dir, kind):
    import comfy.sd

    sd = load_file(str(loras_dir / files[kind]))
    direct, _ = comfy.sd.load_lora_for_models(base, None, {k: v.clone() for k, v in sd.items()}, 1.0, 0)
    assert torch.equal(denoise(load(base, files[kind]), cond), denoise(direct, cond))


def test_bad_files_are_rejected_and_name_the_key(comfy_host, core, base, cond, files, loras_dir):
    import comfy.sd

    sd = sparse_file(core, base)
    key = next(k for k in sd if k.endswith(".sparse_shape") and len(sd[k]) == 2 and sd[k][0] != sd[k][1])
    swapped = dict(sd, **{key: sd[key].flip(0)})  # same size, other shape: caught when the weight is patched
    patched, _ = comfy.sd.load_lora_for_models(base, None, swapped, 1.0, 0)
    with pytest.raises(Exception, match=key[: -len(".sparse_shape")].replace(".", r"\.") + ".*another model"):
        denoise(patched, cond)
    too_small = dict(sd, **{key: torch.tensor([3, 3], dtype=torch.int64)})  # caught by the loader itself
    with pytest.raises(Exception, match="indices outside"):
        comfy.sd.load_lora_for_models(base, None, too_small, 1.0, 0)
    values = key.replace(".sparse_shape", ".sparse_val")
    nan = dict(sd, **{values: sd[values].clone().index_fill_(0, torch.tensor([0]), float("nan"))})
    with pytest.raises(Exception, match=r"sparse_val: 1 non-finite values"):
        comfy.sd.load_lora_for_models(base, None, nan, 1.0, 0)
    truncated = loras_dir / "pyra_test_truncated.safetensors"
    truncated.write_bytes((loras_dir / files["sparse"]).read_bytes()[:5000])
    y_base = denoise(base, cond)
    with pytest.raises(Exception):  # noqa: B017 - the host's loader raises safetensors' own error type
        load(base, truncated.name)
    assert not base.patches and torch.equal(denoise(base, cond), y_base)


def test_sara_checkpoint_converts_and_loads(comfy_host, core, base, cond, loras_dir):
    """A file in SaRA's layout (values by diffusers parameter index) -> our format -> the stock loader."""
    import comfy.lora

    convert = comfy_host.module("host.sara")
    node = comfy_host.module("nodes.adapters").PyraConvertSaRA
    params = convert.base_parameters(base)
    assert params[0][0] == "diffusion_model.input_blocks.0.0.weight"  # diffusers conv_in.weight
    assert params[2][0] == "diffusion_model.time_embed.0.weight"  # time_embedding.linear_1.weight
    assert len(params) == len(weights(base))
    g, data, threshold = torch.Generator().manual_seed(3), {"threshold": 5e-3}, 5e-3
    for i, (_, w) in enumerate(params):
        vals = w.flatten()[w.flatten().abs() < threshold]
        data[i] = vals + 0.05 * torch.randn(vals.shape, generator=g)
    torch.save(data, loras_dir / "pyra_test_sara.pt")
    out = node.execute(base, "pyra_test_sara.pt", "fp32", "loras/pyra_test_sara_converted")
    assert "saved loras/pyra_test_sara_converted_" in out.args[0]
    name = max(loras_dir.glob("pyra_test_sara_converted_*.safetensors"), key=lambda p: p.stat().st_mtime_ns).name
    adapted = load(base, name)
    for i in (3, len(params) // 2):
        key, w = params[i]
        got = comfy.lora.calculate_weight(adapted.patches[key], w.clone(), key)
        mask = w.abs() < threshold
        if mask.any():
            assert torch.allclose(got[mask], data[i], atol=1e-6) and torch.equal(got[~mask], w[~mask])
    assert (denoise(adapted, cond) - denoise(base, cond)).norm() > 0


@pytest.mark.parametrize("adapter_type", ["sparse", "householder"])
def test_trainer_lowers_the_loss_and_saves_a_loadable_file(comfy_host, base, cond, loras_dir, adapter_type):
    node = comfy_host.node("PyraTrainSparseAdapter")
    latents = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))}
    y_base = denoise(base, cond)
    lr = {"sparse": 3e-3, "householder": 3e-4}[adapter_type]
    out = node.execute(base, latents, cond, adapter_type, 8, lr, 2, 0, 5e-3, 5e-4, 0.5, 2,
                       f"loras/pyra_test_train_{adapter_type}")
    model, name, loss, report = out.args
    before, after = (float(x) for x in report.split("fixed-batch loss ")[1].split("\n")[0].split(" -> "))
    assert after < before, report
    assert len(loss["loss"]) == 8
    sd = load_file(str(loras_dir / name))
    if adapter_type == "sparse":  # indices intact: exactly the base entries below the threshold
        key = next(k for k in weights(base) if k.endswith("attn2.to_k.weight"))[: -len(".weight")]
        w = weights(base)[key + ".weight"]
        assert torch.equal(sd[key + ".sparse_idx"], torch.nonzero(w.flatten().abs() < 5e-3).flatten())
        assert sd[key + ".sparse_idx"].dtype == torch.int64
    y = denoise(load(base, name), cond)
    assert (y - y_base).norm() > 0
    assert torch.equal(denoise(model, cond), y)
    assert not base.patches and torch.equal(denoise(base, cond), y_base)  # training left the base untouched


@pytest.mark.parametrize("adapter_type, threshold, reflections", [("sparse", 1.0, 2), ("householder", 5e-3, 256)])
def test_the_largest_schema_values_are_refused_under_a_memory_cap(comfy_host, base, cond, loras_dir, monkeypatch,
                                                                   adapter_type, threshold, reflections):
    """The schema's maxima (threshold 1.0 trains every weight; 256 reflections) on a device with less free memory
    than the estimate: a refusal with the figures before any training, never a kill (issue 16)."""
    training, budget = comfy_host.module("host.training"), comfy_host.module("host.memory")
    settings = training.TrainSettings(adapter_type, 1, 1e-4, 1, 0, threshold=threshold, reflections=reflections)
    parts = training.memory_parts(base, settings)
    params = sum(p.numel() for p in base.model.diffusion_model.parameters())
    if adapter_type == "sparse":  # nearly every weight is selected: the adapter alone is about 29 bytes a weight
        assert parts["adapter and optimizer state"] > 0.9 * training.SPARSE_ENTRY_BYTES * params
    monkeypatch.setattr(budget, "free_bytes", lambda device: sum(parts.values()) // 2)
    before = sorted(loras_dir.glob("*"))
    latents = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))}
    with pytest.raises(budget.NotEnoughMemory, match=r"needs at least .* GiB on cpu .* lower threshold"):
        comfy_host.node("PyraTrainSparseAdapter").execute(base, latents, cond, adapter_type, 1, 1e-4, 1, 0, threshold,
                                                          5e-4, 0.5, reflections, "loras/pyra_test_capped")
    assert sorted(loras_dir.glob("*")) == before and not base.patches and not base.wrappers


@pytest.mark.parametrize("kind", ["sparse", "hra"])
def test_the_hosts_bypass_loader_applies_the_adapter(comfy_host, base, cond, files, kind):
    """0.33.0's LoraLoaderBypass applies adapters in the forward (h(x), or bypass_forward) and leaves the weights
    alone; the base class's h is zeros, so both adapter types silently did nothing there. Bypass must give the
    weight-patched result (linear and conv layers, strength 0.7). The sparse file has no bias entries here: the
    host's bypass manager hooks modules by weight key and skips (with a warning) a delta on a bias."""
    import nodes

    kind = "sparse_matrices" if kind == "sparse" else kind
    bypass = nodes.NODE_CLASS_MAPPINGS.get("LoraLoaderBypassModelOnly")
    if bypass is None:
        pytest.skip("this host has no bypass LoRA loader (LoraLoaderBypassModelOnly, 0.33.0+)")
    import comfy.model_management

    comfy.model_management.unload_all_models()
    y_base = denoise(base, cond)
    y_patched = denoise(load(base, files[kind], 0.7), cond)
    adapted = bypass().load_lora_model_only(base, files[kind], 0.7)[0]
    assert not adapted.patches, "bypass mode patches no weight"
    y_bypass = denoise(adapted, cond)
    assert (y_patched - y_base).norm() > 1e-3 * y_base.norm()
    assert (y_bypass - y_patched).norm() < 1e-4 * (y_patched - y_base).norm() + 1e-6, \
        float((y_bypass - y_patched).norm() / (y_patched - y_base).norm())
    assert torch.equal(denoise(base, cond), y_base), "the base model is untouched"


def test_bypass_of_a_sparse_delta_on_a_norm_scale_is_refused_with_a_message(core):
    """A 1-D weight (a norm's scale) has no forward-side form of its delta: refused, not zeros."""
    adapter = sparse_adapter(core, (8,))
    with pytest.raises(RuntimeError, match="LoraLoaderModelOnly"):
        adapter.h(torch.randn(2, 8), torch.zeros(2, 8))


def sparse_adapter(core, shape):
    """The pack's sparse adapter type (as the host registered it) with a small delta of `shape`."""
    import comfy.weight_adapter

    cls = next(c for c in comfy.weight_adapter.adapters if c.name == "pyra_sparse")
    delta = core["sparse"].SparseDelta(torch.tensor([1, 3]), torch.tensor([0.5, -0.5]), shape)
    return cls(set(), delta)

@pytest.mark.parametrize("family, shape, adapter_type", [
    ("wan21", (1, 16, 2, 8, 8), "householder"),  # the host's RoPE: comfy-kitchen ops without a gradient on 0.8+
    ("flux", (1, 16, 8, 8), "sparse"),  # the host's Flux blocks add into saved activations in place (`img += ...`)
    ("flux", (1, 16, 8, 8), "householder"),
])
def test_trainer_backpropagates_through_the_hosts_dit_blocks(comfy_host, family, shape, adapter_type):
    """Training must learn through the host's own DiT forward, and the base model (sampled outside training, on the
    host's fast path) keeps its output."""
    demo = comfy_host.module("host.demo_models")
    base = demo.build_tiny_model(family, torch.float32, seed=0)
    demo.init_random_(base.model.diffusion_model, 0, std=0.05)
    cond = comfy_host.module("host.demo_models").demo_conditioning(family, seed=1)
    latents = {"samples": torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(4))}
    y_base = denoise(base, cond, shape)
    out = comfy_host.node("PyraTrainSparseAdapter").execute(base, latents, cond, adapter_type, 6, 3e-4, 2, 0, 5e-2,
                                                            5e-4, 0.5, 2, f"loras/pyra_test_train_{family}")
    model, _, loss, report = out.args
    before, after = (float(x) for x in report.split("fixed-batch loss ")[1].split("\n")[0].split(" -> "))
    assert after < before, report
    assert len(loss["loss"]) == 6 and (denoise(model, cond, shape) - y_base).norm() > 0
    assert torch.equal(denoise(base, cond, shape), y_base)
