"""Test helpers for the tiny models of the 2026 families (host/tiny_image_families.py, host/tiny_video_families.py):
one interface over the two builders, skipping where the host lacks a family, and a short sampling run."""

from __future__ import annotations

import pytest
import torch

IMAGE_FAMILIES = ("flux2", "flux2_klein", "chroma", "qwen_image", "z_image")


class TinyFamily:
    def __init__(self, comfy_host, family: str):
        image = family in IMAGE_FAMILIES
        self.family = family
        self.mod = comfy_host.module("host.tiny_image_families" if image else "host.tiny_video_families")
        missing = self.mod.missing_host_class(family) if image else self.mod.missing_host_classes(family)
        if missing:
            pytest.skip(f"this host lacks what {family} needs: {missing}")
        self.shape = self.mod.LATENT_SHAPES[family] if image else self.mod.latent_shape(family)

    def build(self):
        return self.mod.build(self.family)

    def conditioning(self, seed: int):
        return self.mod.conditioning(self.family, seed)

    def sample(self, model, shape=None, steps: int = 3, cfg: float = 2.0, seed: int = 1) -> torch.Tensor:
        """A stock sampling run (euler, simple) from seeded noise with the family's conditioning."""
        import comfy.sample

        shape = shape or self.shape
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", self.conditioning(1),
                                   self.conditioning(2), torch.zeros(shape), seed=seed, disable_pbar=True)
