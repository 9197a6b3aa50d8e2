"""Host glue for training sparse (SaRA) and Householder (HRA) adapters with the host's training machinery.

What is reused from the host (comfy_extras/nodes_train.py): weight wrappers on a clone (`add_weight_wrapper`, as
TrainLoraNode does), `TrainSampler` run through `Guider_Basic` (timesteps drawn with the model's
`percent_to_sigma`, seeded noise, the x0-prediction loss, the progress bar) and `process_cond_list`.
What is not, and why: TrainLoraNode itself saves only `named_parameters()` cast to one float dtype, which loses
a sparse adapter's integer indices (HOST.md 4), has no nuclear-norm term or mask reselection, and fails on a single
LATENT input (`multi_res`, Comfy-Org/ComfyUI#11124). SaRA's extra terms live in `SaraOptimizer.step()`, the hook
TrainSampler calls, exactly where SaRA's own optimizer puts them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import comfy.model_management
import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import torch

from ..core.adapters import householder, sparse
from ..core.adapters.train import HouseholderTrainable, SaraOptimizer, SparseTrainable
from ..core.saved_on_write import copy_saved_on_write
from . import features, memory
from .rope import differentiable_rope

NODE = "PyraTrainSparseAdapter"

PROBE_PERCENTS = (0.2, 0.4, 0.6, 0.8)  # fixed noise levels of the before/after loss (percent of the schedule)


@dataclass
class TrainSettings:
    adapter_type: str  # "sparse" or "householder"
    steps: int
    learning_rate: float
    batch_size: int
    seed: int
    threshold: float = 2e-3
    lambda_rank: float = 5e-4
    reselect_at: float = 0.5
    reflections: int = 8


@dataclass
class TrainResult:
    tensors: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    probe_before: float = 0.0
    probe_after: float = 0.0
    trainable: int = 0
    modules: int = 0
    frozen_fraction: float = 0.0


def autograd_copy(weight: torch.Tensor) -> torch.Tensor:
    """A weight or bias the backward pass may save. The server runs nodes in inference mode, so a model it loaded
    holds inference tensors, which autograd refuses to save (norms and convolutions save theirs)."""
    return weight.clone() if weight.is_inference() else weight


def autograd_conds(value):
    """Conditioning with every tensor copied out of inference mode (the host's trainer does the same)."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, dict):
        return {k: autograd_conds(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(autograd_conds(v) for v in value)
    return value


def _adaptable(mp):
    """(key, parameter name, fp32 weight) of every diffusion-model weight and bias of a comfy op, one at a time."""
    raw = mp.get_key_patches("diffusion_model.")  # unpatched weights, even if the model is loaded
    for name, module in mp.model.named_modules():
        if not name.startswith("diffusion_model.") or not hasattr(module, "weight_function"):
            continue
        for pname in ("weight", "bias"):
            key = f"{name}.{pname}"
            if getattr(module, pname, None) is not None and key in raw:
                weight, convert = raw[key][0]
                yield key, pname, convert(weight.float(), inplace=False), weight.element_size()


SPARSE_ENTRY_BYTES = 29  # index 8, base value 4, frozen flag 1, delta 4, its gradient 4, two AdamW states 8
HRA_VALUE_BYTES = 16  # a reflection vector entry, its gradient and two AdamW states, fp32


@torch.no_grad()  # counting only (a loaded model's weights require grad; the server runs outside no_grad)
def memory_parts(mp, s: TrainSettings) -> dict[str, int]:
    """What training allocates, by what needs it (bytes), activations left out: on the demo SD1.5 at the schema's
    maxima 1.01x (sparse) and 0.61x (householder) of the measured peak (benchmarks/train_memory.py)."""
    adapter = copies = 0
    for _, pname, p, element in _adaptable(mp):
        if s.adapter_type == "sparse":
            entries = int((p.abs() < s.threshold).sum())
            adapter += entries * SPARSE_ENTRY_BYTES
            copies += p.numel() * element if entries else 0  # the adapted weight is a new tensor per forward
        elif pname == "weight" and p.ndim >= 2:
            adapter += s.reflections * (p[0].numel() * HRA_VALUE_BYTES + p.shape[0] * 8)  # + (out, r) WY terms
            copies += p.numel() * element
    return {"adapter and optimizer state": adapter, "adapted weights kept for the backward pass": copies}


def _attach(mp, s: TrainSettings) -> dict[str, torch.nn.Module]:
    """One trainable adapter per diffusion-model weight (and bias, for sparse) of a comfy op, as weight wrappers."""
    g = torch.Generator().manual_seed(s.seed)
    adapters = {}
    for key, pname, p, _ in _adaptable(mp):
        if s.adapter_type == "sparse":
            adapter = SparseTrainable(p, s.threshold)
            if adapter.idx.numel() == 0:
                continue
        elif pname == "weight" and p.ndim >= 2:
            adapter = HouseholderTrainable(p, s.reflections, g)
        else:
            continue
        mp.add_weight_wrapper(key, adapter)
        adapters[key] = adapter
    for name, module in mp.model.named_modules():
        for pname in ("weight", "bias"):
            key = f"{name}.{pname}"
            if hasattr(module, "weight_function") and getattr(module, pname, None) is not None and key not in adapters:
                mp.add_weight_wrapper(key, autograd_copy)
    if not adapters:
        raise ValueError(f"no weight has entries with |w| < {s.threshold}: raise the threshold"
                         if s.adapter_type == "sparse" else "the model has no matrix weights to adapt")
    return adapters


def _probe_sampler(seed: int):
    """A TrainSampler that evaluates the training loss at fixed noise levels and fixed noise (no update): the
    before/after figure. Built on call: the host's TrainSampler is probed first (require_train_sampler)."""
    from comfy_extras.nodes_train import TrainSampler, process_cond_list

    class _ProbeSampler(TrainSampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            model_wrap.conds = process_cond_list(model_wrap.conds)
            self.loss = _probe_loss(self, model_wrap, sigmas, extra_args, latent_image)
            return torch.zeros_like(latent_image)

    sampler = _ProbeSampler(torch.nn.MSELoss(), None, training_dtype=torch.float32)
    sampler.seed, sampler.loss = seed, float("nan")
    return sampler


def _probe_loss(sampler, model_wrap, sigmas, extra_args, latent_image) -> float:
    """The mean x0-prediction loss over PROBE_PERCENTS of the schedule, seeded noise, no backward."""
    n, g = sigmas.size(0), torch.Generator().manual_seed(sampler.seed)
    total = 0.0
    with torch.no_grad():
        for p in PROBE_PERCENTS:
            sigma = model_wrap.inner_model.model_sampling.percent_to_sigma(p)
            batch_sigmas = torch.full((n,), float(sigma), device=latent_image.device)
            batch_noise = torch.randn(latent_image.shape, generator=g).to(latent_image)
            total += float(sampler.fwd_bwd(model_wrap, batch_sigmas, batch_noise, latent_image,
                                           model_wrap.conds["positive"], list(range(n)), extra_args, n, bwd=False))
    return total / len(PROBE_PERCENTS)


def _run(mp, positive, latents: torch.Tensor, sampler) -> None:
    guider = custom_sampler.Guider_Basic(mp)
    guider.set_conds(positive)
    sigmas = torch.arange(latents.shape[0])  # TrainSampler reads the dataset size from here
    noise = torch.zeros_like(latents)
    # The host's comfy-kitchen RoPE (0.8+) has no gradient, and its Flux-type blocks add into saved activations in
    # place; no checkpointing here.
    with differentiable_rope(), copy_saved_on_write():
        guider.sample(noise, latents, sampler, sigmas, seed=0)


def train(model, latents: torch.Tensor, positive: list, s: TrainSettings) -> TrainResult:
    """Train an adapter on a clone of `model`; returns the file tensors (our format) and the loss figures."""
    features.require_train_sampler(NODE)  # before any work: a clear message on hosts older than 0.3.76
    from comfy_extras.nodes_train import TrainSampler
    if len(positive) == 1 and latents.shape[0] > 1:
        positive = positive * latents.shape[0]
    elif len(positive) != latents.shape[0]:
        raise ValueError(f"{len(positive)} conditionings for {latents.shape[0]} latents: connect one conditioning, "
                         "or one per latent")
    with torch.inference_mode(False):
        mp = model.clone()
        memory.refuse_over(memory_parts(mp, s), mp.load_device, NODE,
                                  "lower threshold (sparse) or reflections (householder)")
        latents = latents.float().clone()
        positive = autograd_conds(positive)
        adapters = _attach(mp, s)
        params = [p for a in adapters.values() for p in a.parameters()]
        if s.adapter_type == "sparse":
            optimizer = SaraOptimizer(list(adapters.values()), s.threshold, s.learning_rate, s.lambda_rank,
                                      max(1, round(s.reselect_at * s.steps)), seed=s.seed)
        else:
            optimizer = torch.optim.AdamW(params, lr=s.learning_rate)
        result = TrainResult({}, trainable=sum(p.numel() for p in params), modules=len(adapters))

        def on_loss(loss: float) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            result.losses.append(loss)

        comfy.model_management.load_models_gpu([mp], memory_required=1e20, force_full_load=True)
        probe = _probe_sampler(s.seed + 1)
        _run(mp, positive, latents, probe)
        result.probe_before = probe.loss
        random.seed(s.seed)
        torch.manual_seed(s.seed)  # TrainSampler draws timesteps and batches from torch's global generator
        trainer = TrainSampler(torch.nn.MSELoss(), optimizer, loss_callback=on_loss, batch_size=s.batch_size,
                               total_steps=s.steps, seed=s.seed, training_dtype=torch.float32)
        _run(mp, positive, latents, trainer)
        _run(mp, positive, latents, probe)
        result.probe_after = probe.loss
        if isinstance(optimizer, SaraOptimizer):
            result.frozen_fraction = optimizer.frozen_fraction()
        result.tensors = _file_tensors(adapters)
    return result


def _file_tensors(adapters: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    out = {}
    for key, adapter in adapters.items():
        base = sparse.module_key(key)
        if isinstance(adapter, SparseTrainable):
            out.update(sparse.to_tensors(base, adapter.result()))
        else:
            out[base + householder.U] = adapter.hra_u.detach().float().contiguous().cpu()
    return out
