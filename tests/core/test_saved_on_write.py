"""core/saved_on_write: backward through in-place writes into saved tensors equals the out-of-place code's."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
cow = importlib.import_module("pyra_pack.core.saved_on_write")


def block(x: torch.Tensor, w: torch.Tensor, inplace: bool) -> torch.Tensor:
    """A Flux-style block: norms save their input, then the code writes into it, a slice of it and an
    activation (relu with inplace=True)."""
    y = x * 1.5
    h = torch.nn.functional.layer_norm(y, (y.shape[-1],)) @ w
    if inplace:
        y += torch.tanh(h)  # layer_norm saved y
        y[:, :2] *= torch.sigmoid(h[:, :2])  # mul saved y's slice, sigmoid saved its output
        z = torch.nn.functional.silu(y * y)
        z.mul_(2.0)  # silu saved its input, not z
        torch.nn.functional.relu(y, inplace=True)
        return (y * z).sum()
    y = y + torch.tanh(h)
    y = torch.cat((y[:, :2] * torch.sigmoid(h[:, :2]), y[:, 2:]), 1)
    z = torch.nn.functional.silu(y * y) * 2.0
    y = torch.relu(y)
    return (y * z).sum()


def grads(fn, x, w):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    fn(x, w).backward()
    return x.grad, w.grad


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 8, generator=g, dtype=torch.float64), torch.randn(8, 8, generator=g, dtype=torch.float64)


def test_the_in_place_block_fails_backward_without_the_context(inputs):
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        grads(lambda x, w: block(x, w, inplace=True), *inputs)


def test_gradients_equal_the_out_of_place_code(inputs):
    want = grads(lambda x, w: block(x, w, inplace=False), *inputs)
    with cow.copy_saved_on_write() as registry:
        got = grads(lambda x, w: block(x, w, inplace=True), *inputs)
    assert registry.copies >= 1
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_forward_values_are_unchanged_and_nothing_is_copied_without_grad(inputs):
    x, w = inputs
    with cow.copy_saved_on_write() as registry, torch.no_grad():
        inside = block(x, w, inplace=True)
    assert registry.copies == 0
    assert torch.equal(inside, block(x, w, inplace=True))


def test_the_registry_lets_go_of_a_freed_graph(inputs):
    x, w = (t.clone().requires_grad_() for t in inputs)
    with cow.copy_saved_on_write() as registry:
        for _ in range(3):
            block(x, w, inplace=True).backward()
        assert not registry.by_storage  # the graphs were freed by backward: no holder outlives them
