"""Orthogonal 2-D discrete wavelet transforms (Haar, Daubechies-4) with exact reconstruction.

One level splits an (..., H, W) tensor into a low-low band LL of size (H/2, W/2) and three detail bands
(LH, HL, HH). We use the periodised transform: with an orthogonal filter pair (h, g), g[n] = (-1)^n h[L-1-n],

    lo[k] = sum_n h[n] x[(2k + n) mod N],      hi[k] = sum_n g[n] x[(2k + n) mod N],

which is an orthogonal matrix on R^N, so its transpose inverts it exactly (up to float rounding) and the bands
keep their energy. Periodisation wraps the signal at the border; `dwt2(..., pad=p)` first reflects p pixels on
each side so that the wrap happens inside the reflected margin, and `idwt2(..., crop=...)` removes it again. Odd
sizes are padded by one reflected row or column the same way. All arithmetic is in float32.

The filter taps are the standard Daubechies coefficients (the values PyWavelets lists as 'haar' and 'db4').
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_DB4 = (-0.010597401784997278, 0.032883011666982945, 0.030841381835986965, -0.18703481171888114,
        -0.02798376941698385, 0.6308807679295904, 0.7148465705525415, 0.23037781330885523)
WAVELETS = {"haar": (1 / math.sqrt(2), 1 / math.sqrt(2)), "db4": _DB4}


def filters(wave: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-pass h, high-pass g) analysis filters, float64."""
    if wave not in WAVELETS:
        raise ValueError(f"unknown wavelet {wave!r}; choose one of {', '.join(WAVELETS)}")
    h = torch.tensor(WAVELETS[wave], dtype=torch.float64)
    n = torch.arange(len(h))
    g = (-1.0) ** n * h.flip(0)
    return h, g


def _analyse(x: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodised analysis along the last dim (even length N): two (..., N/2) tensors."""
    shape, n, taps = x.shape, x.shape[-1], len(h)
    flat = x.reshape(-1, 1, n)
    wrapped = flat[..., torch.arange(n + taps - 2, device=x.device) % n]
    bank = torch.stack([h, g]).to(x).unsqueeze(1)
    out = F.conv1d(wrapped, bank, stride=2)
    return out[:, 0].reshape(*shape[:-1], n // 2), out[:, 1].reshape(*shape[:-1], n // 2)


def _synthesise(lo: torch.Tensor, hi: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The transpose of `_analyse`: exact inverse for orthogonal filters."""
    shape, m = lo.shape, lo.shape[-1]
    bands = torch.stack([lo.reshape(-1, m), hi.reshape(-1, m)], dim=1)
    bank = torch.stack([h, g]).to(lo).unsqueeze(1)
    full = F.conv_transpose1d(bands, bank, stride=2)[:, 0]
    n = 2 * m
    index = torch.arange(full.shape[-1], device=full.device) % n
    out = full.new_zeros(full.shape[0], n).index_add_(1, index, full)
    return out.reshape(*shape[:-1], n)


@dataclass
class Bands:
    """One level of a 2-D transform. `size` is the (H, W) to crop back to, `pad` the reflected margin."""

    ll: torch.Tensor
    details: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    size: tuple[int, int]
    pad: tuple[int, int]


def _reflect(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    if not (top or bottom or left or right):
        return x
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, *x.shape[-2:])
    mode = "reflect" if min(x.shape[-2:]) > max(top, bottom, left, right) else "replicate"
    y = F.pad(y, (left, right, top, bottom), mode=mode)
    return y.reshape(*lead, *y.shape[-2:])


def dwt2(x: torch.Tensor, wave: str = "db4", pad: int | None = None) -> Bands:
    """One level of the 2-D transform of the last two dims. `pad` defaults to the filter length."""
    h, g = filters(wave)
    pad = len(h) if pad is None else pad
    height, width = x.shape[-2:]
    y = _reflect(x.float(), pad, pad + height % 2, pad, pad + width % 2)
    lo, hi = _analyse(y, h, g)
    ll, lh = (t.transpose(-1, -2) for t in _analyse(lo.transpose(-1, -2), h, g))
    hl, hh = (t.transpose(-1, -2) for t in _analyse(hi.transpose(-1, -2), h, g))
    return Bands(ll, (lh, hl, hh), (height, width), (pad, pad))


def idwt2(bands: Bands, wave: str = "db4") -> torch.Tensor:
    """Inverse of `dwt2`: the (..., H, W) float32 tensor, margins cropped."""
    h, g = filters(wave)
    lh, hl, hh = bands.details
    lo = _synthesise(bands.ll.transpose(-1, -2), lh.transpose(-1, -2), h, g).transpose(-1, -2)
    hi = _synthesise(hl.transpose(-1, -2), hh.transpose(-1, -2), h, g).transpose(-1, -2)
    y = _synthesise(lo, hi, h, g)
    (height, width), (top, left) = bands.size, bands.pad
    return y[..., top: top + height, left: left + width]


def decompose(x: torch.Tensor, levels: int, wave: str = "db4", pad: int | None = None) -> list[Bands]:
    """`levels` nested transforms: element i holds level i+1's details; the last one's `ll` is the coarsest."""
    out, cur = [], x
    for _ in range(levels):
        bands = dwt2(cur, wave, pad)
        out.append(bands)
        cur = bands.ll
    return out


def reconstruct(pyramid: list[Bands], wave: str = "db4", ll: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of `decompose`; `ll` replaces the coarsest low band when given."""
    cur = pyramid[-1].ll if ll is None else ll
    for bands in reversed(pyramid):
        cur = idwt2(Bands(cur, bands.details, bands.size, bands.pad), wave)
    return cur


def low_band(x: torch.Tensor, levels: int = 1, wave: str = "db4") -> torch.Tensor:
    """The coarsest low band of `levels` nested transforms."""
    return decompose(x, levels, wave)[-1].ll


def replace_low_band(x: torch.Tensor, reference: torch.Tensor, levels: int = 1, wave: str = "db4",
                     strength: float = 1.0, reference_ll: torch.Tensor | None = None) -> torch.Tensor:
    """`x` with its coarsest low band moved toward `reference`'s (fully at strength 1); details kept from `x`.

    This is the structure guidance of DiffuseHigh: the composition comes from the reference, the detail from `x`.
    `reference_ll`, the reference's `low_band` computed once, saves redoing it when the reference is fixed.
    """
    if x.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"reference is {tuple(reference.shape[-2:])}, the tensor {tuple(x.shape[-2:])}")
    px = decompose(x, levels, wave)
    ref_ll = low_band(reference, levels, wave) if reference_ll is None else reference_ll
    ll = px[-1].ll + strength * (ref_ll.to(x.device) - px[-1].ll)
    return reconstruct(px, wave, ll).to(x.dtype)
