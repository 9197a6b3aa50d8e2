"""A fixed linear latent space: PCA of non-overlapping f x f RGB patches, the top c components per patch.

encode: (B, 3, H, W) in [-1, 1] -> (B, c, H / f, W / f), each channel standardised to zero mean, unit variance
over the data it was fitted on (the model space a diffusion model sees); decode is the least-squares inverse
(the orthonormal components' transpose), exact for images in the span. f = 8, c = 16 is the geometry of the Flux
VAE's latent (f8, 16 channels), without a trained encoder: deterministic, fitted in seconds, lossy only in the
discarded components (within-patch detail the top components do not hold), and blocky where a latent is off the
data (each latent pixel decodes to its own patch).
"""

from __future__ import annotations

import torch
from torch import Tensor


class PatchPCACodec:
    def __init__(self, components: Tensor, mean: Tensor, std: Tensor, factor: int):
        """components (c, 3 f f) orthonormal rows, mean (3 f f) patch mean, std (c) per-channel std."""
        self.components, self.mean, self.std, self.factor = components, mean, std, factor

    @property
    def channels(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, images: Tensor, factor: int = 8, channels: int = 16) -> PatchPCACodec:
        """Fit on images (B, 3, H, W) (H, W multiples of factor), in float64."""
        patches = cls._patches(images.double(), factor)  # (N, 3 f f)
        mean = patches.mean(0)
        cov = (patches - mean).T @ (patches - mean) / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        comps = evecs[:, evals.argsort(descending=True)[:channels]].T.contiguous()
        comps = comps * torch.sign(comps.sum(1, keepdim=True) + 1e-12)  # a fixed sign: component 0 ~ +brightness
        std = ((patches - mean) @ comps.T).std(0)
        return cls(comps.float(), mean.float(), std.float(), factor)

    @staticmethod
    def _patches(x: Tensor, f: int) -> Tensor:
        b, ch, h, w = x.shape
        return x.reshape(b, ch, h // f, f, w // f, f).permute(0, 2, 4, 1, 3, 5).reshape(-1, ch * f * f)

    def to(self, device) -> PatchPCACodec:
        return PatchPCACodec(*(t.to(device) for t in (self.components, self.mean, self.std)), self.factor)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, c, H / f, W / f) standardised."""
        b, _, h, w = x.shape
        f = self.factor
        z = (self._patches(x.float(), f) - self.mean) @ self.components.T / self.std
        return z.reshape(b, h // f, w // f, -1).permute(0, 3, 1, 2).contiguous()

    def decode(self, z: Tensor) -> Tensor:
        """(B, c, h, w) -> (B, 3, h f, w f)."""
        b, _, h, w = z.shape
        f = self.factor
        p = (z.float().permute(0, 2, 3, 1).reshape(-1, self.channels) * self.std) @ self.components + self.mean
        return p.reshape(b, h, w, 3, f, f).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, h * f, w * f)

    def state_dict(self) -> dict[str, Tensor]:
        return {"components": self.components.contiguous(), "mean": self.mean.contiguous(),
                "std": self.std.contiguous(), "factor": torch.tensor(self.factor)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor]) -> PatchPCACodec:
        return cls(sd["components"].float(), sd["mean"].float(), sd["std"].float(), int(sd["factor"]))
