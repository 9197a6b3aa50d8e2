"""Installs the step cache on a cloned ModelPatcher: block-replace patches on DiTs (gated layers, by object
patches, where the host's class has no block-replace hook: Z-Image), gated deep blocks on UNets.

The decision logic and the caches are host-free (core/cache/). Here: the UNet gates (object patches, per clone,
restored by the host on unpatch), the block plan of DiTs, and the OUTER_SAMPLE wrapper that turns the window
into sigmas (host/models.py), resets the cache per sampling run and logs what was computed and reused.
"""

from __future__ import annotations

import logging

import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.model_base
import comfy.patcher_extension
import torch

from ..core.cache import PRESETS, CachePreset, DitBlockCache, StepCache, evaluation_time, plan_blocks, row_keys
from .models import SigmaWindow, require_family

log = logging.getLogger("pyra")
WRAPPER_KEY = "pyra_step_cache"


class StepCacheError(ValueError):
    """A model or setting the step cache cannot handle; the message says what to do."""


def detect_family(patcher) -> str:
    """One of PRESETS' keys, from the diffusion model's class."""
    return require_family(patcher, tuple(PRESETS), "the step cache", StepCacheError)


# the block lists of each DiT family, in execution order, with their keys in the host's block-replace table
DIT_BLOCK_LISTS = {
    "sd3": (("double_block", "joint_blocks"),),
    "flux": (("double_block", "double_blocks"), ("single_block", "single_blocks")),
    "chroma": (("double_block", "double_blocks"), ("single_block", "single_blocks")),
    "hunyuan_video": (("double_block", "double_blocks"), ("single_block", "single_blocks")),
    "wan21": (("double_block", "blocks"),),
    "qwen_image": (("double_block", "transformer_blocks"),),
    "ltxv": (("double_block", "transformer_blocks"),),
    "ltx2": (("double_block", "transformer_blocks"),),
    "lumina2": (("double_block", "layers"),),
}
# families whose host class has no block-replace hook: their blocks are gated by object patches (_LayerGate)
GATED_LAYERS = {"lumina2": "layers"}


# blocks a model may be told not to run at all (Chroma's skip lists): they are never planned
SKIPPED_BLOCKS = {"double_block": "skip_mmdit", "single_block": "skip_dit"}


def dit_blocks(dm, family: str) -> list[tuple[str, int]]:
    return [(key, i) for key, attr in DIT_BLOCK_LISTS[family] for i in range(len(getattr(dm, attr)))
            if i not in getattr(dm, SKIPPED_BLOCKS[key], ())]


def _outer_sample_wrapper(cache: StepCache, window: SigmaWindow, family: str):
    def wrapper(executor, *args, **kwargs):
        cache.reset()
        window.prepare(executor.class_obj.model_patcher.get_model_object("model_sampling"))
        try:
            return executor(*args, **kwargs)
        finally:
            log.info("Pyra step cache (%s, threshold %g): %s", family, cache.threshold, cache.stats.summary())
            cache.entries.clear()
    return wrapper


def install(patcher, family: str, threshold: float, start_percent: float, end_percent: float,
            cache_on_cpu: bool, preset: CachePreset | None = None, max_in_a_row: int = 0) -> StepCache:
    """Patch `patcher` (a clone of a `family` model, patched in place) and return its StepCache, whose stats
    describe the last sampling run. `preset` (blocks kept) defaults to the family's."""
    preset = preset or PRESETS[family]
    cache = StepCache(threshold, "cpu" if cache_on_cpu else None, max_in_a_row, preset.extrapolate)
    window = SigmaWindow(start_percent, end_percent)
    dm = patcher.get_model_object("diffusion_model")
    if preset.kind == "dit":
        plan = plan_blocks(dit_blocks(dm, family), preset.head, preset.tail)
        if not plan.middle:
            log.warning("Pyra step cache: this %s model has %d block(s), too few to skip any; it runs uncached",
                        family, len(plan.head) + len(plan.tail))
        hook = DitBlockCache(cache, plan, window)
        for block in plan.head + plan.middle:
            if family in GATED_LAYERS:
                name = f"{GATED_LAYERS[family]}.{block[1]}"
                layer = getattr(dm, GATED_LAYERS[family])[block[1]]
                patcher.add_object_patch(f"diffusion_model.{name}", _LayerGate(layer, hook.patch_for(block)))
            else:
                patcher.set_model_patch_replace(hook.patch_for(block), "dit", block[0], block[1])
    else:
        _install_unet(patcher, dm, cache, window, preset.shallow)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 _outer_sample_wrapper(cache, window, family))
    return cache


class _LayerGate(torch.nn.Module):
    """A DiT block of a class without block-replace hooks (Z-Image's layers), put in place by an object patch: the
    host's block-replace contract around the block's own forward, so DitBlockCache serves it as any other.

    It shares the block's parameters, buffers and submodules (the same dicts), so the model's state dict, weight
    patches (LoRA) and memory management see the same names and tensors while it stands in the block's place."""

    def __init__(self, layer: torch.nn.Module, patch):
        super().__init__()
        layer = layer.original if isinstance(layer, _LayerGate) else layer   # not another clone's gate
        for registry in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(self, registry, getattr(layer, registry))
        object.__setattr__(self, "original", layer)
        object.__setattr__(self, "patch", patch)

    def forward(self, x, *args, **kwargs):
        def original_block(block_args: dict) -> dict:
            return {"img": self.original(block_args["img"], *args, **kwargs)}

        args_ = {"img": x, "transformer_options": kwargs.get("transformer_options", {})}
        return self.patch(args_, {"original_block": original_block})["img"]


def shallow_depth(dm) -> int:
    """Input blocks above the first downsampling: the shallow part that Step Rehash recomputes."""
    for i, block in enumerate(dm.input_blocks):
        layers = list(_original(block)._modules.values())
        if any(isinstance(layer, openaimodel.Downsample) for layer in layers):
            return i
        if any(isinstance(layer, openaimodel.ResBlock) and layer.updown for layer in layers):
            return i
    raise StepCacheError("this UNet never downsamples, so it has no deep part to reuse")


class _UNetState:
    def __init__(self, cache: StepCache, window: SigmaWindow, depth: int, n_out: int):
        self.cache, self.window = cache, window
        self.depth, self.boundary = depth, n_out - depth  # first shallow output block
        self.reuse = False
        self.keys: list = []
        self.at: float | None = None


class _Stub(openaimodel.TimestepBlock):
    """Stands in for a skipped block: zeros of the shape the block gave at the last full computation."""

    def __init__(self, gate: _Gate):
        super().__init__()
        object.__setattr__(self, "gate", gate)

    def forward(self, x, emb):
        return x.new_zeros((x.shape[0], *self.gate.out_shape[1:]))


class _Recorder(torch.nn.Module):
    def __init__(self, gate: _Gate):
        super().__init__()
        object.__setattr__(self, "gate", gate)

    def forward(self, x):
        self.gate.out_shape = tuple(x.shape)
        return x


class _Gate(openaimodel.TimestepEmbedSequential):
    """A deep block: its own layers on computed evaluations, a zero stub on reused ones (the output is unused:
    the cached deep feature replaces it at the first shallow output block)."""

    def __init__(self, block, state: _UNetState):
        block = _original(block)
        super().__init__(*block._modules.values())
        object.__setattr__(self, "original", block)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "out_shape", None)
        object.__setattr__(self, "_extra", (_Stub(self), _Recorder(self)))

    def __iter__(self):
        if self.state.reuse and self.out_shape is not None:
            return iter((self._extra[0],))
        return iter((*self._modules.values(), self._extra[1]))


def _original(block):
    """The block itself, not another clone's gate (the live model holds the gates of the patcher last loaded)."""
    return block.original if isinstance(block, _Gate) else block


def unet_depth(dm, shallow: int) -> int:
    """Input blocks computed on a reused evaluation: `shallow`, or 0 for all those above the first downsampling."""
    if shallow == 0:
        return shallow_depth(dm)
    if not 1 <= shallow < len(dm.input_blocks):
        raise StepCacheError(f"this UNet has {len(dm.input_blocks)} input blocks: the shallow part must keep 1 to "
                             f"{len(dm.input_blocks) - 1} of them (0: up to the first downsampling), not {shallow}")
    return shallow


def _install_unet(patcher, dm, cache: StepCache, window: SigmaWindow, shallow: int) -> None:
    depth = unet_depth(dm, shallow)
    state = _UNetState(cache, window, depth, len(dm.output_blocks))

    def after_input(h, transformer_options):
        if transformer_options["block"][1] == depth - 1:
            state.keys = row_keys(h.shape[0], transformer_options.get("cond_or_uncond"),
                                  transformer_options.get("uuids"))
            sigma = evaluation_time(transformer_options)
            state.reuse = cache.decide(state.keys, h, window(sigma))
            state.at = sigma if cache.extrapolate else None
        return h

    def before_output(h, hsp, transformer_options):
        if transformer_options["block"][1] != state.boundary:
            return h, hsp
        if state.reuse:
            h = cache.get(state.keys, "deep", h, state.at)
        else:
            cache.put(state.keys, "deep", h, state.at)
        return h, hsp

    patcher.set_model_input_block_patch(after_input)
    patcher.set_model_output_block_patch(before_output)
    for i in range(depth, len(dm.input_blocks)):
        patcher.add_object_patch(f"diffusion_model.input_blocks.{i}", _Gate(dm.input_blocks[i], state))
    if dm.middle_block is not None:
        patcher.add_object_patch("diffusion_model.middle_block", _Gate(dm.middle_block, state))
    for j in range(state.boundary):
        patcher.add_object_patch(f"diffusion_model.output_blocks.{j}", _Gate(dm.output_blocks[j], state))
