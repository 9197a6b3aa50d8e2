"""Demo models: deterministic tiny models that the host's stock loaders detect, run and decode."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# diffusion-model file key -> (host model-config class, conditioning family, latent shape)
FILE_MODELS = {
    "sd15": ("SD15", "sd15", (1, 4, 8, 8)),
    "sd3": ("SD3", "sd3", (1, 16, 8, 8)),
    "wan21": ("WAN21_T2V", "wan21", (1, 16, 1, 8, 8)),
}
# tiny family -> (conditioning family, latent shape)
FAMILIES = {
    "sd15": ("sd15", (1, 4, 8, 8)),
    "sd15_detectable": ("sd15", (1, 4, 8, 8)),
    "sdxl": ("sdxl", (1, 4, 8, 8)),
    "sd3": ("sd3", (1, 16, 8, 8)),
    "flux": ("flux", (1, 16, 8, 8)),
    "wan21": ("wan21", (1, 16, 1, 8, 8)),
}
# VAE file key -> (first_stage_model class, latent shape, decoded pixel shape BTHWC / BHWC)
FILE_VAES = {
    "taesd": ("TAESD", (1, 4, 8, 8), (1, 64, 64, 3)),
    "taesd3": ("TAESD", (1, 16, 8, 8), (1, 64, 64, 3)),
    "wan21_vae": ("WanVAE", (1, 16, 2, 8, 8), (1, 5, 64, 64, 3)),
}


@pytest.fixture(scope="module")
def demo(comfy_host):
    return comfy_host.module("host.demo_models")


@pytest.fixture(scope="module")
def conditioning(comfy_host):
    return comfy_host.module("host.demo_models").demo_conditioning


@pytest.fixture(scope="module")
def models_dir(demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    demo.write_demo_models(root)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_step(patcher, cond: list, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of the host's sampler from fixed noise: (model input x, denoised x0), both of `shape`."""
    import comfy.sample

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    seen = {}

    def callback(step, x0, x, total):
        seen.update(x0=x0.clone(), x=x.clone())

    comfy.sample.sample(patcher, noise, 1, 1.0, "euler", "simple", cond, cond, torch.zeros(shape),
                        callback=callback, disable_pbar=True)
    return seen["x"], seen["x0"]


def assert_runs_and_listens(patcher, conditioning, family: str, shape: tuple[int, ...]) -> None:
    """Finite, non-constant model prediction of the latent's shape that changes with the conditioning."""
    x, x0_a = one_step(patcher, conditioning(family, seed=1), shape)
    _, x0_b = one_step(patcher, conditioning(family, seed=2), shape)
    assert x0_a.shape == shape and torch.isfinite(x0_a).all()
    prediction = (x - x0_a).float()
    assert prediction.std() > 1e-3 * x.float().std(), "model prediction is (nearly) constant"
    assert (x0_a - x0_b).abs().max() > 1e-3 * prediction.std(), "model output ignores the conditioning"


def test_write_is_complete_idempotent_and_deterministic(demo, models_dir, tmp_path):
    from safetensors import safe_open

    paths = [models_dir / sub / name for sub, name in demo.DEMO_FILES.values()]
    assert all(p.is_file() and "pyra-demo" in p.name for p in paths)
    assert sum(p.stat().st_size for p in paths) < 120e6
    assert not list(models_dir.rglob("*.tmp"))
    assert demo.write_demo_models(models_dir) == []
    with safe_open(paths[0], "pt") as f:
        assert f.metadata() == {"pyra_demo": "1", "family": "sd15_detectable", "seed": str(demo.DEMO_SEED)}
        assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    fresh = demo.write_demo_models(tmp_path)
    assert sorted(fresh) == sorted(tmp_path / sub / name for sub, name in demo.DEMO_FILES.values())
    assert [sha256(p) for p in fresh] == [sha256(models_dir / p.relative_to(tmp_path)) for p in fresh]
    fresh[0].unlink()
    assert demo.write_demo_models(tmp_path) == [fresh[0]]


@pytest.mark.parametrize("key", FILE_MODELS)
def test_diffusion_file_is_detected_loaded_and_runs(demo, conditioning, models_dir, key):
    import comfy.sd
    import comfy.utils

    config_class, family, shape = FILE_MODELS[key]
    path = models_dir.joinpath(*demo.DEMO_FILES[key])
    patcher = comfy.sd.load_diffusion_model(str(path))
    assert type(patcher.model.model_config).__name__ == config_class
    saved = comfy.utils.load_torch_file(str(path))
    loaded = patcher.model.diffusion_model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k].to(torch.float16), saved[k]) for k in saved), "weights differ from the file"
    assert_runs_and_listens(patcher, conditioning, family, shape)


@pytest.mark.parametrize("key", FILE_VAES)
def test_vae_file_is_detected_and_round_trips(demo, models_dir, key):
    import comfy.sd
    import comfy.utils

    model_class, latent_shape, pixel_shape = FILE_VAES[key]
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(models_dir.joinpath(*demo.DEMO_FILES[key]))))
    assert type(vae.first_stage_model).__name__ == model_class
    assert vae.latent_channels == latent_shape[1]
    latent = torch.randn(latent_shape, generator=torch.Generator().manual_seed(3))
    pixels = vae.decode(latent)
    assert pixels.shape == pixel_shape and torch.isfinite(pixels).all()
    assert pixels.min() >= 0 and pixels.max() <= 1 and pixels.std() > 0.01
    # video VAEs encode IMAGE-style frames (T, H, W, C), not decode's (B, T, H, W, C)
    encoded = vae.encode(pixels[0] if pixels.ndim == 5 else pixels)
    assert encoded.shape == latent_shape and torch.isfinite(encoded).all() and encoded.std() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_build_tiny_model_is_seeded_and_runs(demo, conditioning, family):
    cond_family, shape = FAMILIES[family]
    patcher = demo.build_tiny_model(family, seed=0)
    weights = patcher.model.diffusion_model.state_dict()
    again = demo.build_tiny_model(family, seed=0).model.diffusion_model.state_dict()
    other = demo.build_tiny_model(family, seed=1).model.diffusion_model.state_dict()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert any(not torch.equal(weights[k], other[k]) for k in weights)
    assert_runs_and_listens(patcher, conditioning, cond_family, shape)


def test_builder_matches_file_dtype_and_unknown_family(demo):
    fp16 = demo.build_tiny_model("sd3", dtype=torch.float16).model.diffusion_model.state_dict()
    fp32 = demo.build_tiny_model("sd3").model.diffusion_model.state_dict()
    assert all(fp16[k].dtype == torch.float16 and torch.equal(fp16[k], fp32[k].half()) for k in fp32)
    with pytest.raises(ValueError, match="unknown tiny model family"):
        demo.build_tiny_model("sd9")


def test_installer_loads_the_module_without_the_pack(demo):
    from host import comfyui_dir

    spec = importlib.util.spec_from_file_location("_pyra_demo_models_tool", REPO / "tools" / "demo_models.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    standalone = tool.load_demo_models(comfyui_dir())
    assert standalone.__name__ == "_pyra_demo_models" and standalone is not demo
    assert standalone.DEMO_FILES == demo.DEMO_FILES and standalone.TINY_CONFIGS == demo.TINY_CONFIGS
    # it builds models on its own (with its own copy of host/features.py): what `make host` runs first
    flux = standalone.build_tiny_model("flux")
    assert type(flux.model.diffusion_model).__name__ == "Flux"


def test_controlnet_file_is_detected_and_changes_the_output(demo, conditioning, models_dir):
    import comfy.controlnet
    import comfy.sd

    control = comfy.controlnet.load_controlnet(str(models_dir.joinpath(*demo.DEMO_FILES["sd15_controlnet"])))
    assert type(control.control_model).__name__ == "ControlNet"
    patcher = comfy.sd.load_diffusion_model(str(models_dir.joinpath(*demo.DEMO_FILES["sd15"])))
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cond = conditioning("sd15", 1)
    controlled = [[cond[0][0], {**cond[0][1], "control": control.copy().set_cond_hint(hint, 1.0)}]]
    _, plain = one_step(patcher, cond, (1, 4, 8, 8))
    _, with_control = one_step(patcher, controlled, (1, 4, 8, 8))
    assert torch.isfinite(with_control).all()
    assert (with_control - plain).abs().max() > 1e-3 * plain.std(), "the ControlNet does not reach the model"


def test_lora_file_loads_with_the_stock_loader_and_changes_the_output(demo, conditioning, models_dir):
    import comfy.sd
    import comfy.utils

    patcher = comfy.sd.load_diffusion_model(str(models_dir.joinpath(*demo.DEMO_FILES["sd15"])))
    lora = comfy.utils.load_torch_file(str(models_dir.joinpath(*demo.DEMO_FILES["sd15_lora"])))
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0)
    assert len(patched.patches) == len(lora) // 3, "every LoRA layer must find its weight"
    cond = conditioning("sd15", 1)
    _, plain = one_step(patcher, cond, (1, 4, 8, 8))
    _, adapted = one_step(patched, cond, (1, 4, 8, 8))
    assert (adapted - plain).abs().max() > 1e-3 * plain.abs().max()


def test_real_format_files_load_with_the_stock_loaders(demo):
    """The SD1.5-format checkpoint and the 16-channel VAE on the host (written at install): detected as SD1.5 with
    a real-size KL VAE and a CLIP-L whose every weight is in the file, a text encoding that depends on the text, and
    an SD3/Flux-format VAE the host wraps in an AutoencodingEngine. (Their bytes come from the same seeded builders
    as DEMO_FILES; writing them here would cost 600 MB per test run.)"""
    import comfy.sd
    import comfy.utils
    from host import comfyui_dir

    models = comfyui_dir() / "models"
    paths = {key: models.joinpath(*sub_name) for key, sub_name in demo.REAL_FORMAT_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.fail(f"missing {missing}: run `python tools/demo_models.py --comfyui {comfyui_dir()}` with the host's "
                    "python (or `make host`)")
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(paths["sd15_checkpoint"]))
        assert type(model.model.model_config).__name__ == "SD15"
        assert type(vae.first_stage_model).__name__ == "AutoencoderKL" and vae.latent_channels == 4
        assert sum(p.numel() for p in vae.first_stage_model.parameters()) == 83_653_863   # the SD1.5 VAE's size
        file_keys = set(comfy.utils.load_torch_file(str(paths["sd15_checkpoint"])))
        clip_keys = {k for k in clip.get_sd() if "text_projection" not in k and "logit_scale" not in k}
        assert {"cond_stage_model." + k.removeprefix("clip_l.") for k in clip_keys} <= file_keys
        a, b = (clip.encode_from_tokens(clip.tokenize(text)) for text in ("a red fox", "a blue car"))
        assert a.shape == (1, 77, 768) and torch.isfinite(a).all() and (a - b).abs().max() > 1e-2
        vae16 = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(paths["kl16_vae"])))
        assert type(vae16.first_stage_model).__name__ == "AutoencodingEngine" and vae16.latent_channels == 16
        pixels = vae16.decode(torch.randn((1, 16, 4, 4), generator=torch.Generator().manual_seed(0)))
        assert pixels.shape == (1, 32, 32, 3) and pixels.std() > 0.05
