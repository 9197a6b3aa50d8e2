"""Block caching for DiTs through the host's block-replace contract: compute the first and last blocks, skip the
middle ones on reused evaluations and add their cached residual.

The contract (the same for Flux, SD3 and Wan in the host): each block is replaced by `patch(args, extra)`, where
`args` holds the block's inputs ("img", and for dual-stream blocks "txt") plus "transformer_options", and
`extra["original_block"](args)` runs the block and returns {"img": ..., "txt": ...} ("txt" absent or None where
the block does not produce it). Flux concatenates (txt, img) on the token axis between its double and single
blocks; a residual spanning both is kept in that concatenated layout. LTX-2 passes its video and audio streams
as one tuple, ("img": (video, audio)); each part is a stream of its own here ("img.0", "img.1"), and the video
part is the decision feature.

On a computed evaluation every middle block adds out - in to the running residual, so whatever the host adds
between blocks (ControlNet residuals, in place) is not baked into the cache: on a reused evaluation the middle
blocks pass their input through (the host's additions of this evaluation still apply) and the last one adds
the cached sum of the block deltas.

The host's Flux blocks update their input in place (`img += ...`, layers.py), so the input is copied before a
block runs: out - in taken after the call would be zero (a zero decision feature that always reuses, and a zero
cached residual).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .decision import StepCache, row_keys

BlockId = tuple[str, int]


def _parts(name: str, value) -> dict[str, torch.Tensor]:
    """A block's stream as named tensors: a tensor is itself, a tuple (LTX-2's video and audio) one per part."""
    if isinstance(value, (tuple, list)):
        return {f"{name}.{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)}
    return {name: value} if isinstance(value, torch.Tensor) else {}


def _streams(d: dict) -> dict[str, torch.Tensor]:
    return {**_parts("img", d.get("img")), **_parts("txt", d.get("txt"))}


def _first_part(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def evaluation_time(transformer_options: dict) -> float | None:
    """The sigma of this model evaluation (the host puts the batch's sigmas in transformer_options)."""
    sigmas = transformer_options.get("sigmas")
    return None if sigmas is None else float(sigmas.max())


@dataclass(frozen=True)
class BlockPlan:
    head: tuple[BlockId, ...]
    middle: tuple[BlockId, ...]
    tail: tuple[BlockId, ...]


def plan_blocks(blocks: list[BlockId], head: int, tail: int) -> BlockPlan:
    """Split the blocks (in execution order) into computed head, skippable middle and computed tail.

    The tail shrinks first when the model is too shallow, so at least one block can be skipped; a model of a
    single block has nothing to skip (its middle is empty).
    """
    if head < 1 or tail < 0:
        raise ValueError(f"need head >= 1 and tail >= 0, got {head}, {tail}")
    head = min(head, len(blocks))
    tail = max(0, min(tail, len(blocks) - head - 1))
    return BlockPlan(tuple(blocks[:head]), tuple(blocks[head:len(blocks) - tail]),
                     tuple(blocks[len(blocks) - tail:]))


class DitBlockCache:
    """The replace patches of one DiT. `active(sigma)` says whether reuse is allowed at this evaluation's sigma
    (None where the host passed none)."""

    def __init__(self, cache: StepCache, plan: BlockPlan, active: Callable[[float | None], bool]):
        self.cache, self.plan, self.active = cache, plan, active
        self.first, self.last = plan.head[0], (plan.middle[-1] if plan.middle else None)
        self.middle = set(plan.middle)
        self.keys: list = []
        self.reuse = False
        self.at: float | None = None  # this evaluation's sigma, kept only when the cache extrapolates
        self.delta: dict[str, torch.Tensor] = {}
        self.names: tuple[str, ...] = ("img", "txt")  # the streams cached, set from the first block's inputs

    def patch_for(self, block: BlockId) -> Callable[[dict, dict], dict]:
        """A closure for the host's block-replace table (closures survive the host's deepcopy of options)."""
        def patch(args: dict, extra: dict) -> dict:
            return self(block, args, extra)
        return patch

    def __call__(self, block: BlockId, args: dict, extra: dict) -> dict:
        if block == self.first:
            return self._first(args, extra)
        if block in self.middle:
            return self._skipped(block, args) if self.reuse else self._tracked(block, args, extra)
        return extra["original_block"](args)

    def _first(self, args: dict, extra: dict) -> dict:
        img = _first_part(args["img"]).clone()  # the block may update it in place
        self.names = (*_parts("img", args["img"]), "txt")
        out = extra["original_block"](args)
        opts = args.get("transformer_options", {})
        self.keys = row_keys(img.shape[0], opts.get("cond_or_uncond"), opts.get("uuids"))
        sigma = evaluation_time(opts)
        self.at = sigma if self.cache.extrapolate else None
        self.delta = {}
        if self.last is None:
            self.reuse = False
            return out
        self.reuse = self.cache.decide(self.keys, _first_part(out["img"]) - img, self.active(sigma))
        return out

    def _tracked(self, block: BlockId, args: dict, extra: dict) -> dict:
        if block[0] == "single_block" and "txt" in self.delta:
            self.delta = {"img": torch.cat((self.delta.pop("txt"), self.delta["img"]), 1)}
        before = {s: t.clone() for s, t in _streams(args).items()}  # the block may update them in place
        out = extra["original_block"](args)
        after = _streams(out)
        for stream, old in before.items():
            new = after.get(stream)
            if new is not None:
                d = new - old
                self.delta[stream] = d if stream not in self.delta else self.delta[stream].add_(d)
        if block == self.last:
            for stream in self.names:
                self.cache.put(self.keys, stream, self.delta.get(stream), self.at)
            self.delta = {}
        return out

    def _skipped(self, block: BlockId, args: dict) -> dict:
        out = {"img": args["img"], "txt": args.get("txt")}
        if block != self.last:
            return out
        img = args["img"]
        if isinstance(img, (tuple, list)):
            parts = list(img)
            for stream, part in _parts("img", img).items():
                res = self.cache.get(self.keys, stream, part, self.at)
                if res is not None:
                    parts[int(stream.split(".")[1])] = part + res
            out["img"] = type(img)(parts)
            return out
        res_img = self.cache.get(self.keys, "img", img, self.at)
        res_txt = self.cache.get(self.keys, "txt", img, self.at)
        if block[0] == "single_block" and res_txt is not None:
            res_img, res_txt = torch.cat((res_txt, res_img), 1), None
        out["img"] = img + res_img
        if res_txt is not None and out["txt"] is not None:
            out["txt"] = out["txt"] + res_txt
        return out
