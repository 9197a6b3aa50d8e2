"""Shared set-up of the core/dfm tests: the DFM modules and the host's tiny DiTs with weights that matter."""

from __future__ import annotations

import importlib
import sys

import torch
from host import comfyui_dir
from packload import load_pack_package

load_pack_package()
levels = importlib.import_module("pyra_pack.core.dfm.levels")
network = importlib.import_module("pyra_pack.core.dfm.network")
arch_mod = importlib.import_module("pyra_pack.core.dfm.arch")
sampler = importlib.import_module("pyra_pack.core.dfm.sampler")
train = importlib.import_module("pyra_pack.core.dfm.train")
ckpt = importlib.import_module("pyra_pack.core.dfm.checkpoint")
def differentiable_rope():
    """The host glue's training context (PyraDFMTrain passes it): the host's comfy-kitchen RoPE ops get a gradient
    there. Imported when first entered: nodes/ needs the host on sys.path (tiny_model puts it there)."""
    return importlib.import_module("pyra_pack.host.rope").differentiable_rope()


def tiny_model(family: str, seed: int = 0, std: float = 0.05, random_biases: bool = True):
    """ModelPatcher of the host's tiny `family` model (host/demo_models.py) on the CPU, seeded weights of scale
    `std`, and (random_biases) small random biases so that each one matters."""
    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True
    demo = importlib.import_module("pyra_pack.host.demo_models")
    patcher = demo.build_tiny_model(family, seed=seed)
    dit = demo.init_random_(patcher.model.diffusion_model, seed, std=std)
    if random_biases:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in dit.named_parameters():
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * std)
    return patcher


def checkpoint_round_trip(path, dit, record_family: bool):
    """2-level DFM layers of `dit` (perturbed so a load has work to do), saved to `path` and loaded back.

    Returns (layers, fresh, meta, sd, lora): `fresh` are new, not yet loaded layers of the loaded level count."""
    arch = arch_mod.adapter_for(dit)
    layers = network.DFMLayers(arch, 2)
    with torch.no_grad():
        for p in layers.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    meta = {"levels": 2, **({"family": arch.family} if record_family else {}), "base": ckpt.fingerprint(dit)}
    meta, sd, lora = ckpt.load_dfm(ckpt.save_dfm(path, layers, meta))
    return layers, network.DFMLayers(arch, meta["levels"]), meta, sd, lora


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
