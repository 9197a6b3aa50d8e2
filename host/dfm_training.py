"""Host glue for finetuning a DFM model (PyraDFMTrain and tools/train_dfm.py share it).

The core trainer is core/dfm/train.py's DFMTrainer. Here: a clone of the model whose comfy-op weights pass
through `autograd_copy` at every forward (the server runs nodes in inference mode, so a model it loaded holds
inference tensors that autograd refuses to save for backward; the clone copies them per call and the user's
weights are never written), a copy of the per-level layers (the input model keeps its own), batches of latents
with their conditioning, the checkpoint plus a resumable optimizer file.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import comfy.model_management
import torch

from ..core.dfm.arch import adapter_for
from ..core.dfm.checkpoint import load_dfm, load_optimizer, read_meta, save_optimizer
from ..core.dfm.lora import CoreLoRA
from ..core.dfm.train import DFMTrainer, TrainConfig
from . import dfm as dfm_model
from . import memory
from .rope import differentiable_rope
from .training import autograd_conds, autograd_copy

CORE_MODES = ("lora", "frozen")
PROBE_SIZE = 8  # samples (the first latents, repeated) of the fixed-noise loss in the report
PROBE_SEED = 1234


@dataclass
class DFMTrainResult:
    model: object  # the trained DFM MODEL (a new clone)
    path: Path
    losses: list[float] = field(default_factory=list)
    level_losses: list[list[float]] = field(default_factory=list)
    probe_before: float = 0.0  # the loss at fixed timesteps and noise (PROBE_SIZE samples), before and after
    probe_after: float = 0.0
    start_step: int = 0
    step: int = 0
    trainable: int = 0
    seconds: float = 0.0


def optimizer_path(path: Path) -> Path:
    """The resumable optimizer state beside a checkpoint: <name>.optimizer.pt."""
    return path.with_name(path.name.removesuffix(".safetensors") + ".optimizer.pt")


def split_conditioning(positive: list, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Per-latent (context (1, T, D), pooled (1, P) or None) from one conditioning or one per latent."""
    if len(positive) == 1:
        positive = positive * count
    if len(positive) != count:
        raise ValueError(f"{len(positive)} conditionings for {count} latents: connect one conditioning, or one "
                         "per latent (Conditioning Combine / a batch of prompts)")
    contexts = [c[0][:1].float() for c in positive]
    pooled = [c[1]["pooled_output"][:1].float() if c[1].get("pooled_output") is not None else None
              for c in positive]
    if len({tuple(c.shape) for c in contexts}) > 1:
        raise ValueError("the conditionings have different token counts; make them the same length (same "
                         "text encoder and prompt length) or train with one conditioning")
    return contexts, pooled


def guidance_of(positive: list, arch) -> float | None:
    """Flux-dev's distilled-guidance strength: the first conditioning's (FluxGuidance), else the host's default."""
    if arch.guidance_default is None:
        return None
    return float(positive[0][1].get("guidance", arch.guidance_default))


def _training_patcher(model):
    """A clone whose every comfy-op weight and bias is copied out of inference mode at each forward."""
    if model.patches:
        raise dfm_model.DFMError("PyraDFMTrain trains against the base model's own weights, but this MODEL carries "
                                 "weight patches (a LoRA, or a DFM checkpoint's core LoRA): connect UNETLoader -> "
                                 "PyraDFMConvert; to continue a saved run, set resume with its save name")
    mp = model.clone()
    for name, module in mp.model.named_modules():
        if hasattr(module, "weight_function"):
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is not None:
                    mp.add_weight_wrapper(f"{name}.{pname}", autograd_copy)
    return mp


def check_resume(path: Path, levels: int, config: TrainConfig) -> None:
    """Before any work: the saved run exists and has this run's settings (a resume that changed one would keep
    the saved value without a word: the LoRA its rank, the optimizer state its learning rate)."""
    opt = optimizer_path(path)
    if not path.is_file() or not opt.is_file():
        raise dfm_model.DFMError(f"nothing to resume: dfm/{path.name} and dfm/{opt.name} must both exist; turn resume "
                                 "off to start a new run under this name")
    meta = read_meta(path)
    if meta["levels"] != levels:
        raise dfm_model.DFMError(f"{path.name} has {meta['levels']} levels, the model {levels}: convert the base with "
                                 "the saved level count")
    saved = {"core": meta.get("core"), "lora_rank": meta.get("rank"), "learning_rate": meta.get("learning_rate")}
    given = {"core": config.core, "lora_rank": config.rank, "learning_rate": config.lr}
    checked = [k for k in given if saved[k] is not None and (k != "lora_rank" or config.core == "lora")]
    changed = [f"{k} {given[k]} (saved: {saved[k]})" for k in checked if saved[k] != given[k]]
    if changed:
        raise dfm_model.DFMError(f"resume changes the settings of the run saved as {path.name}: {', '.join(changed)}. "
                                 "Resume with the saved values, or turn resume off to start a new run")


TRAINED_VALUE_BYTES = 16  # fp32 value, its gradient and two AdamW states


def memory_parts(layers, arch, config: TrainConfig) -> dict[str, int]:
    """What training allocates beyond the loaded model (bytes by what needs it), activations left out."""
    parts = {"per-level layers and their optimizer state": sum(p.numel() for p in layers.parameters())
             * TRAINED_VALUE_BYTES}
    if config.core == "lora":
        parts["core LoRA and its optimizer state"] = (CoreLoRA.parameter_count(arch.dit, config.rank, arch.lora_scopes)
                                                      * TRAINED_VALUE_BYTES)
    weights = list(arch.dit.parameters())
    if not config.checkpointing and any(p.is_inference() for p in weights):  # each forward copies them (above)
        parts["base weights copied for the backward pass"] = sum(p.numel() * p.element_size() for p in weights)
    return parts


def _resume(path: Path, layers, arch, config: TrainConfig):
    """(lora, optimizer state) of a saved run (checked by check_resume); its layers replace the input model's."""
    meta, layer_sd, lora_sd = load_dfm(path)
    dfm_model.refuse_unfit_layers(path.name, meta, arch, layers.state_dict(), layer_sd)
    layers.load_state_dict(layer_sd)
    if bool(lora_sd) != (config.core == "lora"):
        raise dfm_model.DFMError(f"{path.name} was trained with core mode {meta.get('core')!r}: resume with the same")
    lora = None
    if lora_sd:
        rank = next(v for k, v in lora_sd.items() if k.endswith(".lora_down.weight")).shape[0]  # = config.rank
        lora = CoreLoRA(arch.dit, rank, scopes=arch.lora_scopes, seed=config.seed)
        lora.load_host_tensors(lora_sd)
    return lora, load_optimizer(optimizer_path(path))


def train_dfm(model, latents: torch.Tensor, positive: list, config: TrainConfig, steps: int, batch_size: int,
              path: Path, resume: bool = False, on_step=None) -> DFMTrainResult:
    """Finetune the DFM `model` on clean `latents` (N, C, H, W) as a LATENT holds them (VAE output, before the
    model's process_latent_in); save to `path` (+ optimizer state).

    on_step(step_done, total, loss) is called after every step (progress, interruption); loss is a 0-d device
    tensor, so a callback that only shows progress does not wait for the device.
    """
    runner = dfm_model.runner_of(model)
    if resume:
        check_resume(Path(path), runner.levels, config)
    contexts, pooled = split_conditioning(positive, latents.shape[0])
    start = time.perf_counter()
    with torch.inference_mode(False):
        mp = _training_patcher(model)
        comfy.model_management.load_models_gpu([mp], force_full_load=True)
        device = mp.load_device
        arch = adapter_for(mp.model.diffusion_model)
        memory.refuse_over(memory_parts(runner.layers, arch, config), device, "PyraDFMTrain",
                                  "lower lora_rank, turn gradient_checkpointing on, or train with core frozen")
        layers = copy.deepcopy(runner.layers).float().to(device)  # the input model keeps its own layers
        latents = mp.model.process_latent_in(latents.float().clone()).to(device)  # the model's latent space
        contexts = [autograd_conds(c).to(device) for c in contexts]
        pooled = [autograd_conds(p).to(device) if p is not None else None for p in pooled]
        lora, state = None, None
        if resume:
            lora, state = _resume(Path(path), layers, arch, config)
        timestep = mp.get_model_object("model_sampling").timestep
        strength = guidance_of(positive, arch)

        def guidance(n: int):
            return torch.full((n,), strength, device=device) if strength is not None else None
        trainer = DFMTrainer(arch, layers, config, timestep, lora=lora, autograd_context=differentiable_rope)
        if state is not None:
            trainer.load_optimizer_state(state["optimizer"])
            trainer.step_count = int(state["step"])
        result = DFMTrainResult(None, Path(path), start_step=trainer.step_count,
                                trainable=sum(p.numel() for p in trainer.params))
        probe_idx = [i % latents.shape[0] for i in range(PROBE_SIZE)]
        probe = (latents[probe_idx], torch.cat([contexts[j] for j in probe_idx]),
                 torch.cat([pooled[j] for j in probe_idx]) if pooled[0] is not None else None)
        result.probe_before = trainer.fixed_loss(*probe, seed=PROBE_SEED, guidance=guidance(PROBE_SIZE))
        batches = torch.Generator().manual_seed(config.seed + trainer.step_count)
        n = latents.shape[0]
        losses, level_losses = [], []
        for i in range(steps):
            idx = torch.randperm(n, generator=batches)[: min(batch_size, n)].tolist()
            y = torch.cat([pooled[j] for j in idx]) if pooled[0] is not None else None
            loss, per = trainer.step(latents[idx], torch.cat([contexts[j] for j in idx]), y, guidance(len(idx)))
            losses.append(loss)
            level_losses.append(per)
            if on_step is not None:
                on_step(i + 1, steps, loss)  # a device tensor: formatting it waits for the step
        if losses:  # read back once, not once per step
            result.losses, result.level_losses = torch.stack(losses).tolist(), torch.stack(level_losses).tolist()
        result.step = trainer.step_count
        result.probe_after = trainer.fixed_loss(*probe, seed=PROBE_SEED, guidance=guidance(PROBE_SIZE))
        lora_tensors = trainer.lora.host_tensors() if trainer.lora is not None else None
        trained = copy.deepcopy(layers).float().cpu().requires_grad_(False)
        result.model = dfm_model.make_dfm_model(model, trained, lora_tensors)
        settings = {"step": trainer.step_count, "core": config.core, "rank": config.rank, "learning_rate": config.lr}
        dfm_model.save(result.model, path, lora_tensors, settings)
        save_optimizer(optimizer_path(Path(path)), trainer.optimizer, trainer.step_count)
    result.seconds = time.perf_counter() - start
    return result
