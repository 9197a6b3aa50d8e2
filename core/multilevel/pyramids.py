"""Multi-level decompositions of images and latents with exact reconstruction: Laplacian and wavelet pyramids.

A pyramid of N levels holds N band-pass levels, finest first, and one low-pass residual at 1/2^N size.

- Laplacian: G_0 = x, G_{i+1} = pool2(G_i) (2x2 mean), band_i = G_i - up(G_{i+1}) with bilinear `up` to
  G_i's exact size, low = G_N. Reconstruction G_i = band_i + up(G_{i+1}) is exact by construction, for any
  size (odd sizes pool with a replicated last row/column).
- Wavelet (Haar or db4, core.multilevel.wavelet, periodised without margins): the level's three detail bands are kept as
  they are; `band(i)` shows them as one image (the inverse transform with a zero low band), and `with_band`
  projects an edited image back onto the detail bands, so reconstruction stays exact for unedited levels and
  well defined for edited ones.

Levels act on the last two dims, so images (B, C, H, W), latents and video latents (B, C, T, H, W) work alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .wavelet import Bands, dwt2, idwt2

KINDS = ("laplacian", "haar", "db4")


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return x.reshape(-1, 1, *x.shape[-2:]), tuple(x.shape[:-2])


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 mean of the last two dims; an odd size first repeats its last row or column."""
    y, lead = _flat(x.float())
    y = F.pad(y, (0, y.shape[-1] % 2, 0, y.shape[-2] % 2), mode="replicate")
    y = F.avg_pool2d(y, 2)
    return y.reshape(*lead, *y.shape[-2:])


def upsample(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    y, lead = _flat(x.float())
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    y = F.interpolate(y, size=size, mode=mode, **kwargs)
    return y.reshape(*lead, *size)


@dataclass
class Pyramid:
    """`bands[i]`: Laplacian band images, or wavelet `Bands` (details only matter); `low`: the residual."""

    kind: str
    bands: list
    low: torch.Tensor
    dtype: torch.dtype = torch.float32
    extra: dict = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.bands)

    def band(self, i: int) -> torch.Tensor:
        """Level i as one tensor at that level's size (finest is 0); i == levels gives the low-pass residual."""
        self._check(i)
        if i == self.levels:
            return self.low
        if self.kind == "laplacian":
            return self.bands[i]
        b = self.bands[i]
        return idwt2(Bands(torch.zeros_like(b.ll), b.details, b.size, b.pad), self.kind)

    def with_band(self, i: int, value: torch.Tensor) -> Pyramid:
        """A new pyramid with level i replaced (same size required); wavelet levels keep the detail part."""
        self._check(i)
        current = self.band(i)
        if value.shape[-2:] != current.shape[-2:]:
            raise ValueError(f"level {i} is {tuple(current.shape[-2:])}, the replacement {tuple(value.shape[-2:])}: "
                             "resize it to the level's size first")
        value = value.float().to(current.device).expand_as(current)
        if i == self.levels:
            return replace(self, low=value)
        bands = list(self.bands)
        if self.kind == "laplacian":
            bands[i] = value
        else:
            old = bands[i]
            details = dwt2(value, self.kind, pad=0).details
            bands[i] = Bands(old.ll, details, old.size, old.pad)
        return replace(self, bands=bands)

    def scaled(self, weights: list[float]) -> Pyramid:
        """Each level times its weight (finest first, the residual last; missing weights are 1)."""
        w = list(weights) + [1.0] * (self.levels + 1 - len(weights))
        out = self
        for i in range(self.levels + 1):
            if w[i] != 1.0:
                out = out.with_band(i, out.band(i) * w[i])
        return out

    def _check(self, i: int) -> None:
        if not 0 <= i <= self.levels:
            raise ValueError(f"level {i} does not exist: this pyramid has levels 0..{self.levels - 1} and the "
                             f"low-pass residual {self.levels}")


def max_levels(height: int, width: int, min_size: int = 2) -> int:
    """The most levels whose residual is still at least `min_size` on its shorter side."""
    n, side = 0, min(height, width)
    while (side + 1) // 2 >= min_size:
        side, n = (side + 1) // 2, n + 1
    return n


def decompose(x: torch.Tensor, levels: int, kind: str = "laplacian") -> Pyramid:
    """Split `x` into `levels` band-pass levels and a low-pass residual (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown pyramid kind {kind!r}; choose one of {', '.join(KINDS)}")
    limit = max_levels(*x.shape[-2:])
    if not 1 <= levels <= limit:
        raise ValueError(f"{levels} levels do not fit a {x.shape[-1]}x{x.shape[-2]} input: use 1 to {limit}")
    cur, bands = x.float(), []
    for _ in range(levels):
        if kind == "laplacian":
            low = pool2(cur)
            bands.append(cur - upsample(low, tuple(cur.shape[-2:])))
        else:
            b = dwt2(cur, kind, pad=0)
            bands.append(b)
            low = b.ll
        cur = low
    return Pyramid(kind, bands, cur, x.dtype)


def reconstruct(p: Pyramid) -> torch.Tensor:
    """The tensor whose decomposition `p` is: exact (to float rounding) for an unedited pyramid."""
    cur = p.low
    for b in reversed(p.bands):
        if p.kind == "laplacian":
            cur = b + upsample(cur, tuple(b.shape[-2:]))
        else:
            cur = idwt2(Bands(cur, b.details, b.size, b.pad), p.kind)
    return cur.to(p.dtype)


def mix(a: Pyramid, b: Pyramid, weights: list[float]) -> Pyramid:
    """Per level (finest first, residual last): (1 - w) * a + w * b; missing weights repeat the last one."""
    if a.kind != b.kind or a.levels != b.levels or a.low.shape[-2:] != b.low.shape[-2:]:
        raise ValueError("mix needs two pyramids of the same kind, levels and size")
    if not weights:
        raise ValueError("give at least one weight")
    w = (list(weights) + [weights[-1]] * (a.levels + 1))[: a.levels + 1]
    out = a
    for i in range(a.levels + 1):
        if w[i] != 0.0:
            out = out.with_band(i, (1 - w[i]) * a.band(i) + w[i] * b.band(i).to(a.low.device))
    return out
