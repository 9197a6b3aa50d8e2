"""Architecture adapters: where a host flow DiT keeps the layers DFM replaces, and how its shared core runs.

Duck-typed on the host's module attributes (core/ never imports the host). `adapter_for(dit)` picks one.
Each adapter says how a level's patch embedding is built from a (D, C, [1,] q, q) kernel and applied, the layout
of the output head's rows (`head_order`: "pqc" for MMDiT and Wan, "cpq" for Flux), which core layers a LoRA
adapts, and runs the core between patch embedding and output head.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from ..saved_on_write import copy_saved_on_write


class UnsupportedModel(TypeError):
    """A diffusion model DFM cannot wrap; the message names what it can."""


def _module_function(dit: nn.Module, name: str):
    """A function of the host module that defines `dit`'s class (e.g. its timestep embedding)."""
    fn = getattr(sys.modules[type(dit).__module__], name, None)
    if fn is None:
        raise UnsupportedModel(f"{type(dit).__module__} has no {name}; supported: {SUPPORTED}")
    return fn


SUPPORTED = "SD3-family MMDiT, Flux.1 (dev / schnell) and Wan 2.1 text-to-video"


def _loaded(layer: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    """`layer` with its weight and bias copied from `weight` and `bias` (a new per-level layer from a base one)."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class MMDiTArch:
    """SD3's MMDiT (comfy/ldm/modules/diffusionmodules/mmdit.py): x_embedder, t_embedder, final_layer."""

    family = "mmdit"
    head_linear = "linear"
    head_order = "pqc"
    lora_scopes = ("joint_blocks",)
    guidance_default = None
    embed_dtype = None  # the patch embeddings run in the model's dtype

    def __init__(self, dit: nn.Module):
        self.dit = dit
        self.patch = int(dit.x_embedder.patch_size[0])
        self.out_channels = int(dit.out_channels)
        if dit.out_channels != dit.in_channels:
            raise UnsupportedModel("DFM needs a model whose output has as many channels as its input "
                                   f"(this one maps {dit.in_channels} to {dit.out_channels})")

    def base_layers(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.dit.x_embedder.proj, self.dit.t_embedder, self.dit.final_layer

    def embed_kernel(self) -> tuple[Tensor, Tensor]:
        """The base patch embedding as a (D, C, p, p) kernel and its bias."""
        conv = self.dit.x_embedder.proj
        return conv.weight.detach(), conv.bias.detach()

    @staticmethod
    def make_embed(kernel: Tensor, bias: Tensor, dtype: torch.dtype) -> nn.Module:
        q = kernel.shape[-1]
        return _loaded(nn.Conv2d(kernel.shape[1], kernel.shape[0], q, stride=q, dtype=dtype, device=kernel.device),
                       kernel, bias)

    @staticmethod
    def patchify(embed: nn.Module, x: Tensor, q: int) -> Tensor:
        """(B, C, h, w) -> (B, T, D) tokens with a stride-q Conv2d."""
        return embed(x).flatten(2).transpose(1, 2)

    def embed_time(self, embedder: nn.Module, t: Tensor, dtype: torch.dtype) -> Tensor:
        return embedder(t, dtype=dtype)

    def run_head(self, head: nn.Module, tokens: Tensor, c: Tensor) -> Tensor:
        return head(tokens, c)

    def core(self, tokens: Tensor, c: Tensor, hw: tuple[int, int], context, y, options: dict,
             checkpoint: bool = False, guidance: Tensor | None = None, autograd_context=None
             ) -> tuple[Tensor, Tensor]:
        """The base forward between patch embedding and final layer (MMDiT.forward, forward_core_with_concat).

        Returns the output tokens and the conditioning vector c (the time sum plus the pooled-vector embedding).
        MMDiT has no guidance embedding; `guidance` is ignored.
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
        run = _within(autograd_context, self._block)
        for block in dit.joint_blocks:
            if checkpoint and torch.is_grad_enabled():
                context, tokens = grad_checkpoint(run, block, context, tokens, c, options, use_reentrant=False)
            else:
                context, tokens = run(block, context, tokens, c, options)
        return tokens, c

    @staticmethod
    def _block(block, context, tokens, c, options):
        return block(context, tokens, c=c, use_checkpoint=False, transformer_options=options)


class FluxArch:
    """Flux.1 (comfy/ldm/flux/model.py): img_in on packed (c, ph, pw) patches, time_in, final_layer.

    The guidance embedding (guidance_in) and the pooled vector (vector_in) add to the summed time embeddings as
    in Flux.forward_orig; RoPE ids come from the host's process_img on the full-size token grid, which every
    level shares.
    """

    family = "flux"
    head_linear = "linear"
    head_order = "cpq"
    lora_scopes = ("double_blocks", "single_blocks")
    guidance_default = 3.5  # the host's Flux.extra_conds default when a conditioning carries none
    embed_dtype = None

    def __init__(self, dit: nn.Module):
        self.dit = dit
        params = dit.params
        if params.global_modulation or len(params.axes_dim) != 3:
            raise UnsupportedModel(f"DFM wraps Flux.1 models, not Flux 2 (supported: {SUPPORTED}): load a Flux.1 "
                                   "model for DFM, or sample this one with the stock nodes")
        if params.in_channels != params.out_channels:
            raise UnsupportedModel("DFM needs a model whose output has as many channels as its input (this Flux "
                                   f"maps {params.in_channels} to {params.out_channels}: a Fill or Kontext variant?)")
        if dit.img_in.bias is None:
            raise UnsupportedModel(f"DFM needs a Flux patch embedding with a bias; supported: {SUPPORTED}")
        self.patch = int(dit.patch_size)
        self.out_channels = int(params.out_channels)
        self._timestep_embedding = _module_function(dit, "timestep_embedding")

    def base_layers(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.dit.img_in, self.dit.time_in, self.dit.final_layer

    def embed_kernel(self) -> tuple[Tensor, Tensor]:
        lin, p = self.dit.img_in, self.patch
        return lin.weight.detach().reshape(lin.out_features, self.out_channels, p, p), lin.bias.detach()

    @staticmethod
    def make_embed(kernel: Tensor, bias: Tensor, dtype: torch.dtype) -> nn.Module:
        return _loaded(nn.Linear(kernel[0].numel(), kernel.shape[0], dtype=dtype, device=kernel.device),
                       kernel.reshape(kernel.shape[0], -1), bias)

    @staticmethod
    def patchify(embed: nn.Module, x: Tensor, q: int) -> Tensor:
        """(B, C, h, w) -> (B, T, D): q x q patches packed (c, ph, pw) as Flux.process_img, then the Linear."""
        b, ch, h, w = x.shape
        packed = x.reshape(b, ch, h // q, q, w // q, q).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, ch * q * q)
        return embed(packed)

    def embed_time(self, embedder: nn.Module, t: Tensor, dtype: torch.dtype) -> Tensor:
        return embedder(self._timestep_embedding(t, 256).to(dtype))

    def run_head(self, head: nn.Module, tokens: Tensor, c: Tensor) -> Tensor:
        return head(tokens, c)

    def core(self, tokens: Tensor, c: Tensor, hw: tuple[int, int], context, y, options: dict,
             checkpoint: bool = False, guidance: Tensor | None = None, autograd_context=None
             ) -> tuple[Tensor, Tensor]:
        """Flux.forward_orig between img_in and final_layer (no ControlNet, no block replacement patches).

        Returns the image tokens and vec (time sum + guidance + pooled-vector embeddings).
        """
        dit, params = self.dit, self.dit.params
        b, dtype = tokens.shape[0], tokens.dtype
        if params.guidance_embed and guidance is not None:
            c = c + dit.guidance_in(self._timestep_embedding(guidance.to(tokens.device), 256).to(dtype))
        if dit.vector_in is not None:
            if y is None:
                y = tokens.new_zeros(b, params.vec_in_dim)
            c = c + dit.vector_in(y[:, :params.vec_in_dim])
        if context is None:
            context = tokens.new_zeros(b, 1, params.context_in_dim)
        txt = dit.txt_in(context)
        _, img_ids = dit.process_img(tokens.new_zeros(b, 1, *hw), transformer_options=options)
        txt_ids = torch.zeros(b, txt.shape[1], 3, device=tokens.device, dtype=torch.float32)
        pe = dit.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        img = tokens
        ckpt = checkpoint and torch.is_grad_enabled()
        double, single = _within(autograd_context, self._double), _within(autograd_context, self._single)
        for i, block in enumerate(dit.double_blocks):
            options.update(total_blocks=len(dit.double_blocks), block_type="double", block_index=i)
            if ckpt:  # reentrant: its recompute is plain autograd, where copy_saved_on_write applies
                img, txt = grad_checkpoint(double, block, img, txt, c, pe, options, use_reentrant=True)
            else:
                img, txt = double(block, img, txt, c, pe, options)
        if img.dtype == torch.float16:
            img = torch.nan_to_num(img, nan=0.0, posinf=65504, neginf=-65504)
        img = torch.cat((txt, img), 1)
        for i, block in enumerate(dit.single_blocks):
            options.update(total_blocks=len(dit.single_blocks), block_type="single", block_index=i)
            if ckpt:
                img = grad_checkpoint(single, block, img, c, pe, options, use_reentrant=True)
            else:
                img = single(block, img, c, pe, options)
        return img[:, txt.shape[1]:, ...], c

    @staticmethod
    def _double(block, img, txt, vec, pe, options):
        img, txt = _own(img), _own(txt)
        with copy_saved_on_write():
            return block(img=img, txt=txt, vec=vec, pe=pe, attn_mask=None, transformer_options=options)

    @staticmethod
    def _single(block, img, vec, pe, options):
        img = _own(img)
        with copy_saved_on_write():
            return block(img, vec=vec, pe=pe, attn_mask=None, transformer_options=options)


def _within(context, fn):
    """`fn`, run inside `context()` when a context is given (a checkpoint's recompute runs the wrapper too)."""
    if context is None:
        return fn

    def run(*args):
        with context():
            return fn(*args)
    return run


def _own(x: Tensor) -> Tensor:
    """A block's own copy of its input when training: the in-place adds must not reach a checkpoint's saved
    input or a leaf. Sampling passes the tensor through, as the host does."""
    return x.clone() if x.requires_grad or torch.is_grad_enabled() else x


class WanArch:
    """Wan 2.1 text-to-video (comfy/ldm/wan/model.py WanModel): patch_embedding, time_embedding, head.

    Video latents are (B, C, T, H, W) and Wan's patch is 1 x 2 x 2, so the DFM levels are spatial only: every
    level keeps all T frames (a temporal pyramid would change the temporal token count, which a 1-frame patch
    cannot absorb). A level's patch embedding is a Conv3d with a 1 x q x q kernel, run in float32 as the host
    runs its own; its tokens come in the base (t, h, w) order, so RoPE (from the full-size grid) is shared.

    Timesteps: the per-level copies of `time_embedding` (sinusoid -> Linear, SiLU, Linear) are summed into one
    vector e BEFORE the shared `time_projection` (SiLU, Linear -> the blocks' 6-way modulation e0), as the
    paper sums E_s(t_s) into the single adaLN input. The head's own modulation reads the same summed e, as
    Head(x, e) reads e in the base. With one level the sum is the base e itself, so S = 1 is exact; summing
    after the projection would instead need per-level copies of time_projection and would leave the head
    reading a different vector than the blocks.
    """

    family = "wan21"
    head_linear = "head"
    head_order = "pqc"
    lora_scopes = ("blocks",)
    guidance_default = None
    embed_dtype = torch.float32  # WanModel keeps patch_embedding in float32 whatever the model's dtype

    def __init__(self, dit: nn.Module):
        if type(dit).__name__ != "WanModel" or getattr(dit, "model_type", None) != "t2v":
            raise UnsupportedModel(f"DFM wraps the Wan 2.1 text-to-video model only, not {type(dit).__name__} "
                                   f"({getattr(dit, 'model_type', '?')}: image-to-video, VACE, camera, ... variants "
                                   f"are not supported); supported: {SUPPORTED}")
        if getattr(dit, "ref_conv", None) is not None or dit.in_dim != dit.out_dim or dit.out_dim != 16:
            raise UnsupportedModel(f"DFM needs Wan 2.1 text-to-video with a 16-channel latent in and out (this one "
                                   f"maps {dit.in_dim} to {dit.out_dim} channels: a Fun, Wan 2.2 5B or reference "
                                   f"variant?): load a Wan 2.1 (or Wan 2.2 14B) text-to-video model; supported: "
                                   f"{SUPPORTED}")
        pt, ph, pw = (int(v) for v in dit.patch_size)
        if pt != 1 or ph != pw:
            raise UnsupportedModel(f"DFM needs Wan's 1 x p x p patch, not {dit.patch_size}; supported: {SUPPORTED}")
        self.dit = dit
        self.patch = ph
        self.out_channels = int(dit.out_dim)
        self._sinusoid = _module_function(dit, "sinusoidal_embedding_1d")

    def base_layers(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.dit.patch_embedding, self.dit.time_embedding, self.dit.head

    def embed_kernel(self) -> tuple[Tensor, Tensor]:
        """The base patch embedding as a (D, C, 1, p, p) kernel and its bias."""
        conv = self.dit.patch_embedding
        return conv.weight.detach(), conv.bias.detach()

    @staticmethod
    def make_embed(kernel: Tensor, bias: Tensor, dtype: torch.dtype) -> nn.Module:
        q = kernel.shape[-1]
        conv = nn.Conv3d(kernel.shape[1], kernel.shape[0], (1, q, q), stride=(1, q, q), dtype=torch.float32,
                         device=kernel.device)
        return _loaded(conv, kernel, bias)

    @staticmethod
    def patchify(embed: nn.Module, x: Tensor, q: int) -> Tensor:
        """(B, C, T, h, w) -> (B, T * h/q * w/q, D): the stride-(1, q, q) Conv3d in its own dtype (float32 unless
        cast), tokens in (t, h, w) order as WanModel.forward_orig."""
        return embed(x.to(embed.weight.dtype)).to(x.dtype).flatten(2).transpose(1, 2)

    def embed_time(self, embedder: nn.Module, t: Tensor, dtype: torch.dtype) -> Tensor:
        """(B,) timesteps -> (B, 1, dim), the shape WanModel.forward_orig gives e for one timestep per sample."""
        e = embedder(self._sinusoid(self.dit.freq_dim, t.flatten()).to(dtype=dtype))
        return e.reshape(t.shape[0], -1, e.shape[-1])

    def run_head(self, head: nn.Module, tokens: Tensor, c: Tensor) -> Tensor:
        return head(tokens, c)

    def core(self, tokens: Tensor, c: Tensor, size: tuple[int, int, int], context, y, options: dict,
             checkpoint: bool = False, guidance: Tensor | None = None, autograd_context=None
             ) -> tuple[Tensor, Tensor]:
        """WanModel._forward / forward_orig between patch_embedding and head (no block replacement patches).

        size: the full latent's (T, H, W). Returns the output tokens and the summed time embedding e (the head's
        modulation input). Wan t2v has no pooled vector and no guidance embedding: `y` and `guidance` are ignored.
        """
        dit = self.dit
        frames, h, w = size
        freqs = dit.rope_encode(frames, h, w, device=tokens.device, dtype=tokens.dtype, transformer_options=options)
        e0 = dit.time_projection(c).unflatten(2, (6, dit.dim))
        if context is None:
            context = tokens.new_zeros(tokens.shape[0], 1, dit.text_dim)
        context = dit.text_embedding(context)
        run = _within(autograd_context, self._block)
        for block in dit.blocks:
            if checkpoint and torch.is_grad_enabled():
                tokens = grad_checkpoint(run, block, tokens, e0, freqs, context, options, use_reentrant=False)
            else:
                tokens = run(block, tokens, e0, freqs, context, options)
        return tokens, c

    @staticmethod
    def _block(block, tokens, e0, freqs, context, options):
        return block(tokens, e=e0, freqs=freqs, context=context, context_img_len=None, transformer_options=options)


ADAPTERS = (MMDiTArch, FluxArch, WanArch)


def adapter_for(dit: nn.Module):
    """The adapter for a host diffusion model, or UnsupportedModel saying which families work."""
    if hasattr(dit, "joint_blocks") and hasattr(dit, "x_embedder"):
        return MMDiTArch(dit)
    if all(hasattr(dit, a) for a in ("double_blocks", "img_in", "time_in", "final_layer", "process_img")):
        return FluxArch(dit)
    if all(hasattr(dit, a) for a in ("patch_embedding", "time_embedding", "time_projection", "head", "blocks")):
        return WanArch(dit)
    raise UnsupportedModel(f"DFM wraps {SUPPORTED} models; {type(dit).__name__} is not one: load an SD3, "
                           "Flux.1 or Wan 2.1 text-to-video model (or the Pyra demo SD3) with UNETLoader")
