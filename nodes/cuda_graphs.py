"""CUDA-graph replay of the diffusion model's forward, for the launch-bound low-resolution pyramid stages.

At the 1/4 level of a 2048² SDXL pyramid the UNet forward is bound by kernel launches, not arithmetic: 48 ms
eager against 16 ms replayed from a CUDA graph (benchmarks/results/sdxl-graph-probe-h200.md), so the pyramid
fell short of its FLOP prediction. `GraphedForward` is a DIFFUSION_MODEL wrapper: for each input signature
the first call in this process runs eagerly on a side stream (the warm-up a capture needs, and a real step),
the next captures the forward into a graph, and later calls copy their tensors into the graph's static inputs
and replay it. Graphs are kept across stages and runs while the model's weights stay in place
(nodes/cuda_graph_store.py says what that means and when they are released).

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
import uuid
from collections import Counter

import comfy.model_patcher
import comfy.patcher_extension
import torch

from . import cuda_graph_store as store
from . import multigpu_guard
from .host_features import patcher_is_dynamic

log = logging.getLogger("pyra")
WRAPPER_KEY = "pyra_cuda_graphs"
_IGNORED_OPTIONS = ("wrappers", "callbacks")  # hold functions, our own wrapper among them; not model inputs
_BLOCKING_OPTIONS = ("patches", "patches_replace")  # per-call Python (attention, block patches)
DYNAMIC_VRAM = "dynamic VRAM streams the weights through cast buffers per call"
_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device)


class _Uncapturable(Exception):
    """An argument that cannot be a graph input or part of a signature."""


def _flatten(obj, tensors: list, options: dict | None, uuids: dict | None = None):
    """A hashable structure key for obj, appending its tensors (in order) to `tensors`.

    UUIDs become their index in order of first appearance (`uuids` collects them across the recursion)."""
    uuids = {} if uuids is None else uuids
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ("T", tuple(obj.shape), obj.dtype, obj.device, obj.requires_grad)
    if obj is options:
        for key in _BLOCKING_OPTIONS:
            if obj.get(key):
                raise _Uncapturable(f"transformer_options['{key}'] is set")
        obj = {k: v for k, v in obj.items() if k not in _IGNORED_OPTIONS}
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return ("D", tuple((k, _flatten(v, tensors, options, uuids)) for k, v in items))
    if isinstance(obj, (list, tuple)):
        return ("L" if isinstance(obj, list) else "U", tuple(_flatten(v, tensors, options, uuids) for v in obj))
    if isinstance(obj, uuid.UUID):
        return ("uuid", uuids.setdefault(obj, len(uuids)))
    if isinstance(obj, _PLAIN):
        return obj
    raise _Uncapturable(f"an argument of type {type(obj).__name__}")


def _find_options(args, kwargs) -> dict | None:
    """The transformer_options dict: the argument that holds our wrapper."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, dict) and WRAPPER_KEY in value.get("wrappers", {}).get(
                comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {}):
            return value
    return None


def _swap(obj, static: dict[int, torch.Tensor]):
    """obj with every tensor found in `static` (by identity) replaced by its static twin (containers rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return static.get(id(obj), obj)
    if isinstance(obj, dict):
        return {k: _swap(v, static) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_swap(v, static) for v in obj)
    return obj


def _clone_tree(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_tree(v) for v in obj)
    return obj


class _Graph:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[torch.Tensor], output):
        self.graph, self.inputs, self.output = graph, inputs, output

    def replay(self, tensors: list[torch.Tensor]):
        for static, new in zip(self.inputs, tensors, strict=True):
            static.copy_(new)
        self.graph.replay()
        return _clone_tree(self.output)


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
        if multigpu_guard.has_split(self.model_patcher):
            return "the MultiGPU CFG split runs the model in threads on several GPUs"
        if not tensors or not tensors[0].is_cuda:
            return "not on a CUDA device"
        if torch.is_grad_enabled():
            return "gradients are enabled"
        if getattr(self.model_patcher.model, "model_lowvram", False):
            return "the model is partially loaded (low VRAM): its weights stream in during the forward"
        if torch.cuda.is_current_stream_capturing():
            return "another CUDA graph is being captured"
        return None

    def __call__(self, executor, *args, **kwargs):
        tensors: list[torch.Tensor] = []
        try:
            signature = _flatten((args, kwargs), tensors, _find_options(args, kwargs))
            reason = self.ineligible(tensors)
        except _Uncapturable as err:
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
        graph = self.store.graphs.get(signature, False)
        if graph:
            self.counts["replayed"] += 1
            return graph.replay(tensors)
        if graph is None:
            self.counts["eager: capture failed"] += 1
            return executor(*args, **kwargs)
        if not store.was_warmed(module, signature):
            self.counts["eager: warm-up"] += 1
            out = self._side_stream(executor, args, kwargs)
            store.mark_warmed(module, signature)
            return out
        return self._capture(signature, executor, args, kwargs, tensors)

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
        # The graph reads its inputs from private copies: the caller's tensors (a cond's context, say) are
        # never written by a later replay.
        inputs = [t.clone() for t in tensors]
        static_args, static_kwargs = _swap((args, kwargs), {id(t): s for t, s in zip(tensors, inputs, strict=True)})
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                output = executor(*static_args, **static_kwargs)
        except Exception as err:  # the forward did something a graph cannot hold (a host sync, say)
            log.warning("Pyra CUDA graphs: capture failed (%s: %s); this input runs eagerly",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self.store.graphs[signature] = None
            self.counts["eager: capture failed"] += 1
            return executor(*args, **kwargs)
        self.store.pools.add(tuple(graph.pool()))
        self.store.graphs[signature] = captured = _Graph(graph, inputs, output)
        self.counts["captured"] += 1
        graph.replay()  # capturing records the work without running it
        return _clone_tree(captured.output)

    def install(self, model_options: dict) -> dict:
        """A clone of `model_options` with this wrapper innermost (the caller's dict is left untouched)."""
        options = comfy.model_patcher.create_model_options_clone(model_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     WRAPPER_KEY, self, options, is_model_options=True)
        return options

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items())) or "no model calls"
