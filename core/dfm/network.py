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

from .levels import band_map, check_levels, embed_map, level_patch


def _linear_rows(linear: nn.Module, fn, patch: int, channels: int) -> nn.Linear:
    """A new Linear whose output rows (p, p, C layout) are `fn` of the base rows viewed as p x p images."""
    w = linear.weight.detach().float()
    b = linear.bias.detach().float()
    d = w.shape[1]
    img_w = w.reshape(patch, patch, channels, d).permute(3, 2, 0, 1)
    img_b = b.reshape(patch, patch, channels).permute(2, 0, 1)[None]
    new_w, new_b = fn(img_w), fn(img_b)[0]
    q = new_w.shape[-1]
    out = nn.Linear(d, q * q * channels, dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        out.weight.copy_(new_w.permute(2, 3, 1, 0).reshape(q * q * channels, d))
        out.bias.copy_(new_b.permute(1, 2, 0).reshape(q * q * channels))
    return out


class DFMLayers(nn.Module):
    """The new per-level layers, initialised from the base model's patch embed, time embedder and head."""

    def __init__(self, arch, levels: int):
        super().__init__()
        check_levels(levels, arch.patch)
        self.levels, self.patch, self.channels = levels, arch.patch, arch.out_channels
        base_embed, base_time, base_head = arch.base_layers()
        self.embed = nn.ModuleList(self._embed(base_embed, i) for i in range(levels))
        self.time = nn.ModuleList(self._time(base_time) for _ in range(levels))
        self.head = nn.ModuleList(self._head(arch, base_head, i) for i in range(levels))

    def _embed(self, conv: nn.Module, i: int) -> nn.Conv2d:
        q = level_patch(i, self.levels, self.patch)
        w = conv.weight.detach()
        out = nn.Conv2d(w.shape[1], w.shape[0], q, stride=q, dtype=w.dtype, device=w.device)
        with torch.no_grad():
            out.weight.copy_(embed_map(w.float(), i, self.levels))
            out.bias.copy_(conv.bias.detach() if i == 0 else torch.zeros_like(conv.bias))
        return out

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
                    _linear_rows(lin, lambda img: band_map(img, i, self.levels), self.patch, self.channels))
        return new


def patchify(x: Tensor, conv: nn.Module) -> Tensor:
    """(B, C, h, w) -> (B, T, D) tokens with a stride-q Conv2d."""
    return conv(x).flatten(2).transpose(1, 2)


def unpatchify(tokens: Tensor, grid: tuple[int, int], q: int, channels: int) -> Tensor:
    """(B, T, q*q*C) in (q, q, C) order -> (B, C, gh*q, gw*q), the host MMDiT/Flux layout."""
    gh, gw = grid
    x = tokens.reshape(tokens.shape[0], gh, gw, q, q, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(tokens.shape[0], channels, gh * q, gw * q)


def dfm_forward(arch, layers: DFMLayers, parts: list[Tensor], timesteps: Tensor, mask: Tensor, context=None,
                y=None, transformer_options=None, checkpoint: bool = False) -> list[Tensor]:
    """Per-level model outputs for levels `parts` (coarse first, (B, C, h_i, w_i)).

    timesteps: (B, S) in the host model's timestep units; mask: (B, S), 1 where a level is active.
    """
    dtype = parts[-1].dtype
    tokens = sum(patchify(p * mask[:, i, None, None, None].to(p), layers.embed[i])
                 for i, p in enumerate(parts))
    c = sum(arch.embed_time(layers.time[i], timesteps[:, i], dtype) for i in range(len(parts)))
    full_hw = tuple(parts[-1].shape[-2:])
    grid = (full_hw[0] // layers.patch, full_hw[1] // layers.patch)
    out, c = arch.core(tokens, c, full_hw, context, y, transformer_options or {}, checkpoint)
    heads = []
    for i, head in enumerate(layers.head):
        q = level_patch(i, layers.levels, layers.patch)
        heads.append(unpatchify(arch.run_head(head, out, c), grid, q, layers.channels))
    return heads
