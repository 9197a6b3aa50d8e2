"""The DFM network around a host flow DiT: per-level patch embeddings, timestep embeddings and output heads.

    tokens = sum_i P_i(M_i * x_i) + pos          c = sum_i E_i(t_i) + y_embed
    out_i  = U_i(core(tokens, c, context))        i = 0 (coarsest) .. S-1

M_i is 1 for active levels and 0 for those not yet started (their t_i is the pure-noise time). The core (the
DiT's blocks, positional embedding, context and pooled-vector embedders) is the base model's, shared and not
copied; only P_i, E_i and U_i are new (`DFMLayers`). Architecture adapters (`arch.py`) say where those layers
live in a host model and how its core runs.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .levels import band_map, check_levels, embed_map, level_patch, level_sizes


def _rows_to_images(rows: Tensor, patch: int, channels: int, order: str) -> Tensor:
    """(p*p*C, ...) head rows in `order` ("pqc" or "cpq") -> (..., C, p, p) images."""
    if order == "pqc":
        img = rows.reshape(patch, patch, channels, -1).permute(3, 2, 0, 1)
    else:
        img = rows.reshape(channels, patch, patch, -1).permute(3, 0, 1, 2)
    return img.reshape(*rows.shape[1:], channels, patch, patch)


def _images_to_rows(img: Tensor, order: str) -> Tensor:
    """Inverse of `_rows_to_images`: (..., C, q, q) -> (q*q*C, ...)."""
    lead = img.shape[:-3]
    flat = img.reshape(-1, *img.shape[-3:])
    rows = flat.permute(2, 3, 1, 0) if order == "pqc" else flat.permute(1, 2, 3, 0)
    return rows.reshape(-1, *lead)


def _linear_rows(linear: nn.Module, fn, patch: int, channels: int, order: str = "pqc") -> nn.Linear:
    """A new Linear whose output rows (`order` layout) are `fn` of the base rows viewed as p x p images."""
    w = linear.weight.detach().float()
    b = linear.bias.detach().float()
    d = w.shape[1]
    new_w = _images_to_rows(fn(_rows_to_images(w, patch, channels, order)), order)
    new_b = _images_to_rows(fn(_rows_to_images(b[:, None], patch, channels, order)), order)[:, 0]
    out = nn.Linear(d, new_w.shape[0], dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        out.weight.copy_(new_w)
        out.bias.copy_(new_b)
    return out


class DFMLayers(nn.Module):
    """The new per-level layers, initialised from the base model's patch embed, time embedder and head."""

    def __init__(self, arch, levels: int):
        super().__init__()
        check_levels(levels, arch.patch)
        self.levels, self.patch, self.channels = levels, arch.patch, arch.out_channels
        _, base_time, base_head = arch.base_layers()
        self.embed = nn.ModuleList(self._embed(arch, i) for i in range(levels))
        self.time = nn.ModuleList(self._time(base_time) for _ in range(levels))
        self.head = nn.ModuleList(self._head(arch, base_head, i) for i in range(levels))
        self.requires_grad_(True)  # new layers: copies of a host model's frozen ones (0.33 freezes them) train too

    def _embed(self, arch, i: int) -> nn.Module:
        w, b = arch.embed_kernel()
        return arch.make_embed(embed_map(w.float(), i, self.levels), b if i == 0 else torch.zeros_like(b), w.dtype)

    def _time(self, embedder: nn.Module) -> nn.Module:
        new = copy.deepcopy(embedder)
        if self.levels > 1:  # S copies summed at one time give the base embedding
            last = [m for m in new.modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                last.weight.div_(self.levels)
                last.bias.div_(self.levels)
        return new

    def _head(self, arch, head: nn.Module, i: int) -> nn.Module:
        new = copy.deepcopy(head)
        if self.levels > 1:
            lin = getattr(new, arch.head_linear)
            setattr(new, arch.head_linear,
                    _linear_rows(lin, lambda img: band_map(img, i, self.levels), self.patch, self.channels,
                                 arch.head_order))
        return new


def unpatchify(tokens: Tensor, grid: tuple[int, ...], q: int, channels: int, order: str = "pqc") -> Tensor:
    """(B, T, q*q*C) in (q, q, C) order (MMDiT, Wan) or (C, q, q) order (Flux) -> (B, C, gh*q, gw*q).

    A (frames, gh, gw) grid (video, tokens in (t, h, w) order, temporal patch 1) gives (B, C, frames, H, W).
    """
    if len(grid) == 3:
        frames, b = grid[0], tokens.shape[0]
        flat = unpatchify(tokens.reshape(b * frames, -1, tokens.shape[-1]), grid[1:], q, channels, order)
        return flat.reshape(b, frames, *flat.shape[1:]).transpose(1, 2)
    gh, gw = grid
    if order == "pqc":
        x = tokens.reshape(tokens.shape[0], gh, gw, q, q, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(tokens.shape[0], channels, gh * q, gw * q)
    x = tokens.reshape(tokens.shape[0], gh, gw, channels, q, q)
    return torch.einsum("nhwcpq->nchpwq", x).reshape(tokens.shape[0], channels, gh * q, gw * q)


def dfm_forward(arch, layers: DFMLayers, parts: list[Tensor], timesteps: Tensor, mask: Tensor, context=None,
                y=None, transformer_options=None, checkpoint: bool = False, guidance: Tensor | None = None,
                autograd_context=None) -> list[Tensor]:
    """Per-level model outputs for levels `parts` (coarse first, (B, C, h_i, w_i), or (B, C, T, h_i, w_i) video).

    timesteps: (B, S) in the host model's timestep units; mask: (B, S), 1 where a level is active;
    guidance: (B,) distilled-guidance strength for models that embed it (Flux-dev), else ignored.
    autograd_context: None, or a zero-argument callable giving a context manager that every host block call runs
    in, its recompute under `checkpoint` included (training: the host glue's differentiable ops).
    """
    dtype = parts[-1].dtype
    level_sizes(*parts[-1].shape[-2:], layers.levels, layers.patch)  # a clear error for sizes off the patch grid
    tokens = sum(arch.patchify(layers.embed[i], p * mask[:, i].reshape(-1, *[1] * (p.ndim - 1)).to(p),
                               level_patch(i, layers.levels, layers.patch)) for i, p in enumerate(parts))
    c = sum(arch.embed_time(layers.time[i], timesteps[:, i], dtype) for i in range(len(parts)))
    size = tuple(parts[-1].shape[2:])  # (H, W), or (T, H, W) for video
    grid = (*size[:-2], size[-2] // layers.patch, size[-1] // layers.patch)
    out, c = arch.core(tokens, c, size, context, y, transformer_options or {}, checkpoint, guidance,
                       autograd_context)
    heads = []
    for i, head in enumerate(layers.head):
        q = level_patch(i, layers.levels, layers.patch)
        heads.append(unpatchify(arch.run_head(head, out, c), grid, q, layers.channels, arch.head_order))
    return heads
