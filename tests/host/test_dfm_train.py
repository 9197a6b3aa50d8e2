"""PyraDFMTrain in-process on the tiny demo SD3: the loss falls, the file loads and samples, resume continues."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def setup(comfy_host):
    demo = comfy_host.module("host.demo_models")
    with torch.inference_mode():  # the weights are inference tensors, as in a model the server loaded
        patcher = demo.build_tiny_model("sd3")
        demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
    assert patcher.model.diffusion_model.x_embedder.proj.weight.is_inference()
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd3", 1)
    g = torch.Generator().manual_seed(5)
    fmt = patcher.model.latent_format  # raw VAE-side latents that are unit-variance in the model's space
    latents = {"samples": torch.randn(2, 16, 16, 16, generator=g) / fmt.scale_factor + fmt.shift_factor}
    return comfy_host, patcher, cond, latents


def _train(comfy_host, model, cond, latents, steps, name, resume=False, core="lora", lr=3e-3, rank=4,
           overwrite=False):
    with torch.inference_mode():  # as the server runs nodes
        return comfy_host.node("PyraDFMTrain").execute(model, latents, cond, steps, lr, 2, core, rank, 0, False,
                                                       False, name, resume, overwrite).result


def test_train_lowers_the_loss_saves_loads_and_samples(setup):
    import folder_paths

    comfy_host, patcher, cond, latents = setup
    with torch.inference_mode():
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    runner = comfy_host.module("host.dfm").runner_of(dfm)
    before = {k: v.clone() for k, v in runner.layers.state_dict().items()}
    base_before = {k: v.clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    trained, loss_map, text = _train(comfy_host, dfm, cond, latents, 30, "t-train")
    losses = loss_map["loss"]
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert "0 -> 30" in text
    before_loss, after_loss = (float(x) for x in text.split("fixed-noise loss ")[1].split("\n")[0].split(" -> "))
    assert after_loss < 0.8 * before_loss, text  # the loss at fixed timesteps and noise went down
    # the input model (layers and base weights) is untouched; the output is a new clone with new layers
    assert all(torch.equal(v, runner.layers.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, patcher.model.diffusion_model.state_dict()[k]) for k, v in base_before.items())
    new_runner = comfy_host.module("host.dfm").runner_of(trained)
    assert new_runner is not runner and trained is not dfm
    assert any(not torch.equal(v, new_runner.layers.state_dict()[k]) for k, v in before.items())
    assert trained.patches and not dfm.patches  # the core LoRA is a weight patch on the new clone only

    names = folder_paths.get_filename_list("pyra_dfm")
    assert "t-train.safetensors" in names
    sample = comfy_host.node("PyraDFMSampler")
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    with torch.inference_mode():
        loaded = comfy_host.node("PyraDFMLoader").execute(patcher, "t-train.safetensors").result[0]
        a = sample.execute(trained, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
        b = sample.execute(loaded, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
        c = sample.execute(dfm, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # the file holds what the trained model samples with
    assert not torch.allclose(a, c)  # and training changed what it samples


def test_resume_continues_the_step_count(setup):
    comfy_host, patcher, cond, latents = setup
    with torch.inference_mode():
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    _train(comfy_host, dfm, cond, latents, 3, "t-resume", core="frozen")
    _, loss_map, text = _train(comfy_host, dfm, cond, latents, 2, "t-resume", resume=True, core="frozen")
    assert "3 -> 5" in text and len(loss_map["loss"]) == 2
    with pytest.raises(Exception, match=r"core lora \(saved: frozen\)"):
        _train(comfy_host, dfm, cond, latents, 1, "t-resume", resume=True, core="lora")
    with pytest.raises(Exception, match="nothing to resume"):
        _train(comfy_host, dfm, cond, latents, 1, "t-missing", resume=True)


def test_a_saved_run_is_neither_overwritten_nor_resumed_with_other_settings(setup):
    """Before issue 16 a run without resume replaced a saved one without a word, and a resume with another
    lora_rank or learning_rate kept the saved values silently."""
    import folder_paths

    comfy_host, patcher, cond, latents = setup
    with torch.inference_mode():
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    _train(comfy_host, dfm, cond, latents, 1, "t-guarded")
    saved = Path(folder_paths.get_output_directory()) / "dfm" / "t-guarded.safetensors"
    stamp = saved.stat().st_mtime_ns
    with pytest.raises(Exception, match="exists already: turn resume on"):
        _train(comfy_host, dfm, cond, latents, 1, "t-guarded")
    with pytest.raises(Exception, match=r"lora_rank 8 \(saved: 4\), learning_rate 0.001 \(saved: 0.003\)"):
        _train(comfy_host, dfm, cond, latents, 1, "t-guarded", resume=True, rank=8, lr=1e-3)
    assert saved.stat().st_mtime_ns == stamp  # refused before any work: the file is as it was
    _train(comfy_host, dfm, cond, latents, 1, "t-guarded", overwrite=True)
    assert saved.stat().st_mtime_ns != stamp
    for name in ("", ".", "../t-escape", "sub/t-name", ".hidden"):
        with pytest.raises(Exception, match="not a plain file name"):
            _train(comfy_host, dfm, cond, latents, 1, name)


def test_a_model_with_weight_patches_is_refused(setup, tmp_path):
    comfy_host, patcher, cond, latents = setup
    with torch.inference_mode():
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    trained = _train(comfy_host, dfm, cond, latents, 1, "t-patched")[0]
    with pytest.raises(Exception, match="weight patches"):
        _train(comfy_host, trained, cond, latents, 1, "t-patched-2")


def test_train_on_wan_video_latents_saves_a_lora_that_loads_and_samples(comfy_host):
    demo = comfy_host.module("host.demo_models")
    with torch.inference_mode():
        patcher = demo.build_tiny_model("wan21")
        demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    cond = comfy_host.module("host.demo_models").demo_conditioning("wan21", 1)
    g = torch.Generator().manual_seed(6)
    latents = {"samples": torch.randn(2, 16, 2, 8, 8, generator=g)}
    trained, _, text = _train(comfy_host, dfm, cond, latents, 20, "t-train-wan", lr=5e-3)
    before_loss, after_loss = (float(x) for x in text.split("fixed-noise loss ")[1].split("\n")[0].split(" -> "))
    assert after_loss < 0.9 * before_loss, text
    assert trained.patches and any(".blocks.0." in k for k in trained.patches)  # the core LoRA found Wan's blocks
    sample = comfy_host.node("PyraDFMSampler")
    latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
    with torch.inference_mode():
        loaded = comfy_host.node("PyraDFMLoader").execute(patcher, "t-train-wan.safetensors").result[0]
        a = sample.execute(trained, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
        b = sample.execute(loaded, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
        c = sample.execute(dfm, 3, "3, 2", "0.3", "euler", 2.0, "simple", cond, cond, latent).result[0]["samples"]
    assert a.shape == latent["samples"].shape and torch.equal(a, b) and not torch.equal(a, c)


def test_training_memory_is_estimated_and_refused_under_a_cap(setup, monkeypatch):
    """The estimate counts exactly the values the run trains (16 bytes each with AdamW); over the free memory of
    the device the run is refused before the layers are copied, and nothing is written."""
    import folder_paths

    comfy_host, patcher, cond, latents = setup
    training, budget = comfy_host.module("host.dfm_training"), comfy_host.module("host.memory")
    with torch.inference_mode():
        dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    text = _train(comfy_host, dfm, cond, latents, 1, "t-memory")[2]
    arch = comfy_host.module("core.dfm.arch").adapter_for(patcher.model.diffusion_model)
    config = training.TrainConfig(levels=2, lr=3e-3, core="lora", rank=4)
    parts = training.memory_parts(comfy_host.module("host.dfm").runner_of(dfm).layers, arch, config)
    trained = (parts["per-level layers and their optimizer state"] + parts["core LoRA and its optimizer state"]) // 16
    assert f"{trained} trainable values" in text
    assert "base weights copied for the backward pass" in parts  # inference weights, no checkpointing
    monkeypatch.setattr(budget, "free_bytes", lambda device: 1 << 10)
    with pytest.raises(budget.NotEnoughMemory, match=r"PyraDFMTrain needs at least .* lower lora_rank"):
        _train(comfy_host, dfm, cond, latents, 1, "t-memory-capped")
    assert not (Path(folder_paths.get_output_directory()) / "dfm" / "t-memory-capped.safetensors").exists()
