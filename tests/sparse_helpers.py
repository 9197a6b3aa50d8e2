"""Test helpers for the sparsity node: a stock-format (kohya) LoRA for a model's attention query layers."""

from __future__ import annotations

import torch


def kohya_lora(unet_keys: dict[str, tuple[int, int]], rank: int = 4, scale: float = 0.1, seed: int = 0,
               suffix: str = "attn1.to_q.weight") -> dict[str, torch.Tensor]:
    """LoRA tensors `lora_unet_<path>.lora_{up,down}.weight` for every UNet key (without 'diffusion_model.')
    ending in `suffix`. unet_keys: key -> (out, in) weight shape."""
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for key, (out_f, in_f) in sorted(unet_keys.items()):
        if not key.endswith(suffix):
            continue
        name = "lora_unet_" + key[: -len(".weight")].replace(".", "_")
        lora[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * scale
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * scale
        lora[f"{name}.alpha"] = torch.tensor(float(rank))
    if not lora:
        raise ValueError(f"no key ends in {suffix!r}")
    return lora
