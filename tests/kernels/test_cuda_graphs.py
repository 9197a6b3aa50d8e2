"""kernels/cuda_graphs: the signature follows shapes and plain values, not tensor values; capture refuses what it
cannot hold; on the GPU a replay with new inputs equals the eager forward bit for bit."""

from __future__ import annotations

import importlib
import uuid

import pytest
import torch
from packload import load_pack_package

load_pack_package()
capture = importlib.import_module("pyra_pack.kernels.cuda_graphs.capture")
reference = importlib.import_module("pyra_pack.kernels.cuda_graphs.reference")


def _sig(obj, rewrite=None):
    tensors = []
    return capture.signature(obj, tensors, rewrite), tensors


def test_signature_follows_shapes_and_plain_values():
    a, ta = _sig((torch.zeros(2, 3), {"scale": 2, "ids": [uuid.uuid4()]}))
    b, tb = _sig((torch.ones(2, 3), {"scale": 2, "ids": [uuid.uuid4()]}))
    assert a == b and len(ta) == len(tb) == 1
    assert _sig((torch.zeros(2, 4), {"scale": 2, "ids": [uuid.uuid4()]}))[0] != a
    assert _sig((torch.zeros(2, 3), {"scale": 3, "ids": [uuid.uuid4()]}))[0] != a
    with pytest.raises(capture.Uncapturable, match="object"):
        _sig((torch.zeros(1), object()))


def test_rewrite_sees_every_dict():
    seen = []
    _sig(({"a": {"b": 1}},), lambda d: seen.append(sorted(d)) or d)
    assert seen == [["a"], ["b"]]


def test_cpu_tensors_and_gradients_are_not_captured():
    assert capture.unavailable_reason([torch.zeros(1)]) == "not on a CUDA device"
    assert capture.unavailable_reason([]) == "not on a CUDA device"


@pytest.mark.gpu
def test_replay_equals_the_eager_forward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).cuda()
    x = torch.randn(8, 64, device="cuda")
    with torch.no_grad():
        for _ in range(2):   # warm-up: cuBLAS state exists before the capture
            net(x)
        graph = capture.capture(net, (x,), {}, [x])
        for seed in (1, 2):
            new = torch.randn(8, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            assert torch.equal(graph.replay([new]), reference.eager(net, new))
        assert not torch.equal(graph.replay([x]), reference.eager(net, new)), "the check can fail"
