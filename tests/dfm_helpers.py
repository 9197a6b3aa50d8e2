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


def tiny_model(family: str, seed: int = 0, std: float = 0.05, random_biases: bool = True):
    """ModelPatcher of the host's tiny `family` model (nodes/demo_models) on the CPU, seeded weights of scale
    `std`, and (random_biases) small random biases so that each one matters."""
    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True
    demo = importlib.import_module("pyra_pack.nodes.demo_models")
    patcher = demo.build_tiny_model(family, seed=seed)
    dit = demo.init_random_(patcher.model.diffusion_model, seed, std=std)
    if random_biases:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in dit.named_parameters():
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * std)
    return patcher
