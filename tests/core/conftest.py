"""Fixtures of the host-free tests."""

from __future__ import annotations

import sys

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small FFTs run faster on one thread, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wan_vae():
    """The Wan 2.1 VAE layout the host builds (dim 8 instead of 96), seeded fan-in weights, gammas away from 1."""
    from host import comfyui_dir
    from vae_helpers import seeded_

    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ldm.wan.vae

    model = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                     temperal_downsample=[False, True, True], dropout=0.0)
    return seeded_(model, 0, lambda name: "gamma" in name)
