"""CUDA-graph replay of the diffusion model's forward, for the launch-bound low-resolution pyramid stages.

At the 1/4 level of a 2048² SDXL pyramid the UNet forward is bound by kernel launches, not arithmetic: 48 ms
eager against 16 ms replayed from a CUDA graph (benchmarks/results/sdxl-graph-probe-h200.md), so the pyramid
fell short of its FLOP prediction. `GraphedForward` is a DIFFUSION_MODEL wrapper: for each input signature
the first call in this process runs eagerly on a side stream (the warm-up a capture needs, and a real step),
the next captures the forward into a graph, and later calls copy their tensors into the graph's static inputs
and replay it. Graphs are kept across stages and runs while the model's weights stay in place
(kernels/cuda_graphs/store.py says what that means and when they are released).

Every tensor the forward receives (x, timesteps, context, y, ControlNet residuals, tensors in
transformer_options) is a graph input, copied in at each replay; every other argument is part of the
signature, so a change of any of them means another graph. Cond UUIDs enter the signature by their order of
first appearance: they only name conds, and a new guider draws new ones each run. Calls that a graph cannot
reproduce run eagerly, with the reason counted: not CUDA, gradients on, a low-VRAM (partially loaded) model
whose weights stream in during the forward, a dynamic-VRAM model (ModelPatcherDynamic, 0.16+: every layer casts
its weight into a VRAM buffer per call, and aimdo may evict or move it between calls, so a graph would replay
stale addresses; logged once per run), attention or block patches (their Python runs per call), arguments of
other types.
"""

from __future__ import annotations

import logging
from collections import Counter

import comfy.model_patcher
import comfy.patcher_extension
import torch

from ..kernels.cuda_graphs import store
from ..kernels.cuda_graphs.capture import Uncapturable, capture, clone_tree, signature, unavailable_reason
from . import multigpu
from .features import patcher_is_dynamic

log = logging.getLogger("pyra")
WRAPPER_KEY = "pyra_cuda_graphs"
_IGNORED_OPTIONS = ("wrappers", "callbacks")  # hold functions, our own wrapper among them; not model inputs
_BLOCKING_OPTIONS = ("patches", "patches_replace")  # per-call Python (attention, block patches)
DYNAMIC_VRAM = "dynamic VRAM streams the weights through cast buffers per call"
_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device)


def _model_inputs(options: dict) -> dict:
    """transformer_options as graph inputs: our wrappers and callbacks left out; per-call patches refused."""
    for key in _BLOCKING_OPTIONS:
        if options.get(key):
            raise Uncapturable(f"transformer_options['{key}'] is set")
    return {k: v for k, v in options.items() if k not in _IGNORED_OPTIONS}


def _signature(obj, tensors: list, options: dict | None):
    """The graph key of a call's arguments (kernels/cuda_graphs), its transformer_options read as model inputs."""
    return signature(obj, tensors, lambda d: _model_inputs(d) if d is options else d)


def _find_options(args, kwargs) -> dict | None:
    """The transformer_options dict: the argument that holds our wrapper."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, dict) and WRAPPER_KEY in value.get("wrappers", {}).get(
                comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {}):
            return value
    return None


class GraphedForward:
    """DIFFUSION_MODEL wrapper: eager warm-up (once per process), capture, then replay, per input signature."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.store: store.GraphStore | None = None  # bound at the first eligible call, with the weights in place
        self.counts: Counter = Counter()
        self._warmup_stream: torch.cuda.Stream | None = None

    def ineligible(self, tensors: list[torch.Tensor]) -> str | None:
        if patcher_is_dynamic(self.model_patcher):
            return DYNAMIC_VRAM
        if multigpu.has_split(self.model_patcher):
            return "the MultiGPU CFG split runs the model in threads on several GPUs"
        if getattr(self.model_patcher.model, "model_lowvram", False):
            return "the model is partially loaded (low VRAM): its weights stream in during the forward"
        return unavailable_reason(tensors)

    def __call__(self, executor, *args, **kwargs):
        tensors: list[torch.Tensor] = []
        try:
            key = _signature((args, kwargs), tensors, _find_options(args, kwargs))
            reason = self.ineligible(tensors)
        except Uncapturable as err:
            reason = str(err)
        if reason is not None:
            if reason == DYNAMIC_VRAM and not self.counts[f"eager: {reason}"]:
                log.warning("Pyra CUDA graphs: not captured, %s; the model runs eagerly (start ComfyUI with "
                            "--disable-dynamic-vram to use CUDA graphs)", reason)
            self.counts[f"eager: {reason}"] += 1
            return executor(*args, **kwargs)
        module = self.model_patcher.model.diffusion_model
        if self.store is None:
            self.store = store.store_for(module)
        graph = self.store.graphs.get(key, False)
        if graph:
            self.counts["replayed"] += 1
            return graph.replay(tensors)
        if graph is None:
            self.counts["eager: capture failed"] += 1
            return executor(*args, **kwargs)
        if not store.was_warmed(module, key):
            self.counts["eager: warm-up"] += 1
            out = self._side_stream(executor, args, kwargs)
            store.mark_warmed(module, key)
            return out
        return self._capture(key, executor, args, kwargs, tensors)

    def _side_stream(self, executor, args, kwargs):
        if self._warmup_stream is None:
            self._warmup_stream = torch.cuda.Stream()
        stream = self._warmup_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = executor(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _capture(self, signature, executor, args, kwargs, tensors):
        try:
            captured = capture(executor, args, kwargs, tensors)
        except Exception as err:  # the forward did something a graph cannot hold (a host sync, say)
            log.warning("Pyra CUDA graphs: capture failed (%s: %s); this input runs eagerly",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self.store.graphs[signature] = None
            self.counts["eager: capture failed"] += 1
            return executor(*args, **kwargs)
        self.store.pools.add(tuple(captured.graph.pool()))
        self.store.graphs[signature] = captured
        self.counts["captured"] += 1
        return clone_tree(captured.output)

    def install(self, model_options: dict) -> dict:
        """A clone of `model_options` with this wrapper innermost (the caller's dict is left untouched)."""
        options = comfy.model_patcher.create_model_options_clone(model_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     WRAPPER_KEY, self, options, is_model_options=True)
        return options

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items())) or "no model calls"
