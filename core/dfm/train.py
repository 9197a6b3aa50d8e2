"""DFM training: the per-level timestep distribution and flow-matching loss, and a trainer for the new layers.

Timesteps (ALGORITHMS.md section 1, "Training timestep sampling"; the distributions' parameters are not
published, so these are [inferred] choices), in noise levels sigma (1 = noise):
  * a current stage s* ~ Categorical(stage_probs);
  * level s*: sigma ~ logit-normal(loc, scale), as SD3 trains;
  * earlier levels k < s*: sigma = thr_k * logit-normal(early_loc, scale), nearly clean and below the level's
    hand-over threshold (where the sampler keeps them once the next stage runs);
  * later levels: sigma = 1, masked in the input and left out of the loss.
Per level: x_t = (1 - sigma) x0 + sigma n with n ~ N(0, I) at the level's own size, target v = n - x0 (the
host's flow velocity), loss = sum over levels of the masked mean squared error.

Per-step cost: timesteps and noise are drawn on the training device with the trainer's generator there (no
host-to-device copies; a CUDA generator gives another random stream than the CPU one for the same seed, each
deterministic), the current stage by inverse CDF (torch.multinomial can sync with the host), AdamW runs its
fused kernel where torch has one for the parameters (TrainConfig.optimizer = "loop": torch's per-parameter
reference), and `step` returns the losses as device tensors: nothing waits for the device until a caller reads one.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .levels import split
from .lora import CoreLoRA
from .network import DFMLayers, dfm_forward


@dataclass(frozen=True)
class TimeDistribution:
    stage_probs: tuple[float, ...]
    thresholds: tuple[float, ...]
    loc: float = 0.0
    scale: float = 1.0
    early_loc: float = -1.0

    @classmethod
    def default(cls, levels: int, threshold: float = 0.3) -> TimeDistribution:
        return cls(tuple([1.0 / levels] * levels), tuple([threshold] * (levels - 1)))


def sample_times(batch: int, dist: TimeDistribution, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(sigmas (B, S), mask (B, S) bool) on the generator's device."""
    levels = len(dist.stage_probs)
    cdf, thr = _dist_tensors(dist, generator.device)
    u = torch.rand(batch, generator=generator, device=generator.device)
    stage = torch.searchsorted(cdf, u, right=True).clamp_max(levels - 1)
    z = torch.randn(batch, levels, generator=generator, device=generator.device) * dist.scale
    current = torch.sigmoid(z + dist.loc)
    early = thr * torch.sigmoid(z + dist.early_loc)
    idx = torch.arange(levels, device=generator.device)[None]
    sigmas = torch.where(idx < stage[:, None], early, torch.where(idx == stage[:, None], current, torch.ones_like(z)))
    return sigmas, idx <= stage[:, None]


@functools.lru_cache(maxsize=16)
def _dist_tensors(dist: TimeDistribution, device: torch.device) -> tuple[Tensor, Tensor]:
    """(cumulative stage probabilities, per-level thresholds with 1 for the last) on `device`, made once."""
    probs = torch.tensor(dist.stage_probs, dtype=torch.float64)
    return ((probs.cumsum(0) / probs.sum()).float().to(device), torch.tensor([*dist.thresholds, 1.0], device=device))


def level_noise(parts: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Standard normal noise shaped like each level, drawn on the generator's device."""
    return [torch.randn(p.shape, generator=generator, device=generator.device).to(p) for p in parts]


def dfm_loss(velocity, x0: list[Tensor], noise: list[Tensor], sigmas: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(total loss, per-level losses (S,)): masked flow-matching MSE; velocity(parts, sigmas, mask) -> list."""
    xt = []
    for i, (x, n) in enumerate(zip(x0, noise, strict=True)):
        s = sigmas[:, i].reshape(-1, *[1] * (x.ndim - 1)).to(x)  # (B, 1, 1, 1), or (B, 1, 1, 1, 1) for video
        xt.append((1 - s) * x + s * n)
    pred = velocity(xt, sigmas, mask)
    m = mask.to(x0[0].device, torch.float32)
    per = []
    for i, (p, x, n) in enumerate(zip(pred, x0, noise, strict=True)):
        err = (p.float() - (n - x).float()).square().flatten(1).mean(1)
        per.append((err * m[:, i]).sum() / m[:, i].sum().clamp_min(1))
    per = torch.stack(per)
    return per.sum(), per.detach()


@dataclass
class TrainConfig:
    levels: int = 2
    lr: float = 1e-4
    core: str = "lora"  # "lora", "frozen" or "full" (from scratch)
    rank: int = 8
    checkpointing: bool = False
    bf16: bool = False
    threshold: float = 0.3
    seed: int = 0
    optimizer: str = "auto"  # AdamW: "auto" (fused where torch has it, else foreach) or "loop" (per parameter)


class DFMTrainer:
    """Trains DFMLayers (fully) and the core (LoRA, frozen or full) of a host flow DiT adapter `arch`.

    timestep(sigmas) converts noise levels to the model's timestep units (host: model_sampling.timestep).
    autograd_context() is entered around every host block call of a training forward, and of its recompute under
    gradient checkpointing: the host glue's way to make the host's ops differentiable there
    (host/rope.py differentiable_rope); default none.
    """

    def __init__(self, arch, layers: DFMLayers, config: TrainConfig, timestep, lora: CoreLoRA | None = None,
                 autograd_context=None):
        self.arch, self.layers, self.config, self.timestep = arch, layers, config, timestep
        self.autograd_context = autograd_context
        self.dist = TimeDistribution.default(layers.levels, config.threshold)
        self.device = next(layers.parameters()).device
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        if lora is None and config.core == "lora":
            lora = CoreLoRA(arch.dit, config.rank, scopes=arch.lora_scopes, seed=config.seed)
        self.lora = lora.to(self.device) if lora is not None else None
        params = list(layers.parameters())
        if self.lora is not None:
            params += list(self.lora.parameters())
        if config.core == "full":
            params += list(arch.dit.parameters())
        self.params = params
        self.optimizer = make_adamw(params, config)
        self.step_count = 0

    def load_optimizer_state(self, state: dict) -> None:
        """Resume the optimizer; the implementation flags stay this trainer's (a file may come from another device)."""
        impl = {k: self.optimizer.param_groups[0][k] for k in ("foreach", "fused")}
        self.optimizer.load_state_dict(state)
        for group in self.optimizer.param_groups:
            group.update(impl)

    @contextlib.contextmanager
    def _trainable(self):
        """Grad only where it trains; the base model's flags come back as they were."""
        flags = [(p, p.requires_grad) for p in self.arch.dit.parameters()]
        for p, _ in flags:
            p.requires_grad_(self.config.core == "full")
        for p in self.params:
            p.requires_grad_(True)
        if self.lora is not None:
            self.lora.attach()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            if self.lora is not None:
                self.lora.detach()
            for p, flag in flags:
                with torch.inference_mode(p.is_inference()):  # an inference tensor's flag is only set back there
                    p.requires_grad_(flag)

    def velocity(self, context, y, guidance: Tensor | None = None):
        device = self.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.config.bf16 else contextlib.nullcontext()

        def fn(parts, sigmas, mask):
            t = self.timestep(sigmas.to(device)).float()
            with autocast:
                return dfm_forward(self.arch, self.layers, parts, t, mask.to(device), context, y,
                                   checkpoint=self.config.checkpointing, guidance=guidance,
                                   autograd_context=self.autograd_context)
        return fn

    def loss(self, latents: Tensor, context=None, y=None, guidance: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x0 = split(latents.float(), self.layers.levels)
        sigmas, mask = sample_times(latents.shape[0], self.dist, self.generator)
        return dfm_loss(self.velocity(context, y, guidance), x0, level_noise(x0, self.generator), sigmas, mask)

    def fixed_loss(self, latents: Tensor, context=None, y=None, seed: int = 0, guidance: Tensor | None = None
                   ) -> float:
        """The loss at seeded timesteps and noise, without an update: comparable before and after training."""
        g = torch.Generator(self.device).manual_seed(seed)
        x0 = split(latents.float(), self.layers.levels)
        sigmas, mask = sample_times(latents.shape[0], self.dist, g)
        with self._trainable(), torch.no_grad():
            return float(dfm_loss(self.velocity(context, y, guidance), x0, level_noise(x0, g), sigmas, mask)[0])

    def step(self, latents: Tensor, context=None, y=None, guidance: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One optimiser step on a batch of clean latents (B, C, H, W); returns (loss (), per-level losses (S,)).

        Both are detached tensors on the training device: reading them (float, tolist) waits for the device, so
        read them only when they are shown. guidance: (B,) distilled-guidance strength for models that embed one
        (Flux-dev), else None."""
        with self._trainable():
            self.optimizer.zero_grad(set_to_none=True)
            loss, per = self.loss(latents, context, y, guidance)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
        self.step_count += 1
        return loss.detach(), per

    def trainable_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"layers": self.layers, **({"lora": self.lora} if self.lora is not None else {})})


def make_adamw(params: list[Tensor], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it takes these parameters (CUDA; the CPU since torch 2.4: 3x the
    per-parameter loop there, where foreach only loops in C++), else foreach; "loop": the per-parameter reference."""
    if config.optimizer not in ("auto", "loop"):
        raise ValueError(f"TrainConfig.optimizer is {config.optimizer!r}: use 'auto' or 'loop'")
    if config.optimizer == "loop":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, foreach=False)
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, foreach=True)
