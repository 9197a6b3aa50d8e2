"""Architecture adapters: where a host flow DiT keeps the layers DFM replaces, and how its shared core runs.

Duck-typed on the host's module attributes (core/ never imports the host). `adapter_for(dit)` picks one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint


class UnsupportedModel(TypeError):
    """A diffusion model DFM cannot wrap; the message names what it can."""


class MMDiTArch:
    """SD3's MMDiT (comfy/ldm/modules/diffusionmodules/mmdit.py): x_embedder, t_embedder, final_layer."""

    family = "mmdit"
    head_linear = "linear"

    def __init__(self, dit: nn.Module):
        self.dit = dit
        self.patch = int(dit.x_embedder.patch_size[0])
        self.out_channels = int(dit.out_channels)
        if dit.out_channels != dit.in_channels:
            raise UnsupportedModel("DFM needs a model whose output has as many channels as its input "
                                   f"(this one maps {dit.in_channels} to {dit.out_channels})")

    def base_layers(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.dit.x_embedder.proj, self.dit.t_embedder, self.dit.final_layer

    def embed_time(self, embedder: nn.Module, t: Tensor, dtype: torch.dtype) -> Tensor:
        return embedder(t, dtype=dtype)

    def run_head(self, head: nn.Module, tokens: Tensor, c: Tensor) -> Tensor:
        return head(tokens, c)

    def core(self, tokens: Tensor, c: Tensor, hw: tuple[int, int], context, y, options: dict,
             checkpoint: bool = False) -> tuple[Tensor, Tensor]:
        """The base forward between patch embedding and final layer (MMDiT.forward, forward_core_with_concat).

        Returns the output tokens and the conditioning vector c (the time sum plus the pooled-vector embedding).
        """
        dit = self.dit
        tokens = dit.x_embedder.norm(tokens)
        tokens = tokens + dit.cropped_pos_embed(hw, device=tokens.device).to(tokens)
        if y is not None and dit.y_embedder is not None:
            c = c + dit.y_embedder(y)
        if context is None:
            context = tokens.new_zeros(tokens.shape[0], 1, dit.context_embedder.in_features)
        if dit.context_processor is not None:
            context = dit.context_processor(context)
        context = dit.context_embedder(context)
        if dit.register_length > 0:
            context = torch.cat((dit.register.expand(context.shape[0], -1, -1).to(context), context), 1)
        for block in dit.joint_blocks:
            if checkpoint and torch.is_grad_enabled():
                context, tokens = grad_checkpoint(self._block, block, context, tokens, c, options,
                                                  use_reentrant=False)
            else:
                context, tokens = self._block(block, context, tokens, c, options)
        return tokens, c

    @staticmethod
    def _block(block, context, tokens, c, options):
        return block(context, tokens, c=c, use_checkpoint=False, transformer_options=options)


ADAPTERS = (MMDiTArch,)


def adapter_for(dit: nn.Module):
    """The adapter for a host diffusion model, or UnsupportedModel saying which families work."""
    if hasattr(dit, "joint_blocks") and hasattr(dit, "x_embedder"):
        return MMDiTArch(dit)
    raise UnsupportedModel(f"DFM wraps SD3-family MMDiT models; {type(dit).__name__} is not one: "
                           "load an SD3 model (or the Pyra demo SD3) with UNETLoader")
