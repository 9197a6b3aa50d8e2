"""CUDA-graph capture and replay of a forward whose arguments are trees of tensors and plain values.

`signature` turns the arguments into a hashable key (tensor shapes, dtypes, devices; plain values; UUIDs by order
of first appearance) and lists their tensors; `capture` records the forward on private copies of those tensors;
`Graph.replay` copies new tensors into them, replays, and returns a copy of the output. The reference is the
eager forward itself (reference.py). README.md: semantics, constraints, tolerance.
"""

from __future__ import annotations

import uuid

import torch

_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device)


class Uncapturable(Exception):
    """An argument that cannot be a graph input or part of a signature."""


def signature(obj, tensors: list, rewrite=None, uuids: dict | None = None):
    """A hashable structure key for obj, appending its tensors (in order) to `tensors`. `rewrite(dict)` may
    return a dict to flatten in its place (or raise Uncapturable); UUIDs become their index in order of first
    appearance (`uuids` collects them across the recursion)."""
    uuids = {} if uuids is None else uuids
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ("T", tuple(obj.shape), obj.dtype, obj.device, obj.requires_grad)
    if isinstance(obj, dict):
        obj = rewrite(obj) if rewrite is not None else obj
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return ("D", tuple((k, signature(v, tensors, rewrite, uuids)) for k, v in items))
    if isinstance(obj, (list, tuple)):
        return ("L" if isinstance(obj, list) else "U", tuple(signature(v, tensors, rewrite, uuids) for v in obj))
    if isinstance(obj, uuid.UUID):
        return ("uuid", uuids.setdefault(obj, len(uuids)))
    if isinstance(obj, _PLAIN):
        return obj
    raise Uncapturable(f"an argument of type {type(obj).__name__}")


def unavailable_reason(tensors: list[torch.Tensor]) -> str | None:
    """Why a forward over `tensors` cannot be captured here (torch's side), or None."""
    if not tensors or not tensors[0].is_cuda:
        return "not on a CUDA device"
    if torch.is_grad_enabled():
        return "gradients are enabled"
    if torch.cuda.is_current_stream_capturing():
        return "another CUDA graph is being captured"
    return None


def swap(obj, static: dict[int, torch.Tensor]):
    """obj with every tensor found in `static` (by identity) replaced by its static twin (containers rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return static.get(id(obj), obj)
    if isinstance(obj, dict):
        return {k: swap(v, static) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(swap(v, static) for v in obj)
    return obj


def clone_tree(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(v) for v in obj)
    return obj


class Graph:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[torch.Tensor], output):
        self.graph, self.inputs, self.output = graph, inputs, output

    def replay(self, tensors: list[torch.Tensor]):
        for static, new in zip(self.inputs, tensors, strict=True):
            static.copy_(new)
        self.graph.replay()
        return clone_tree(self.output)


def capture(fn, args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> Graph:
    """`fn(*args, **kwargs)` captured into a graph whose inputs are private copies of `tensors` (the caller's
    tensors are never written by a later replay). Raises what the capture raised; on success the graph has run
    once (capturing records the work without running it)."""
    inputs = [t.clone() for t in tensors]
    static_args, static_kwargs = swap((args, kwargs), {id(t): s for t, s in zip(tensors, inputs, strict=True)})
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn(*static_args, **static_kwargs)
    graph.replay()
    return Graph(graph, inputs, output)
