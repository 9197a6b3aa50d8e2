"""core/slicing/tokens.py: a token-sliced module equals the whole call and shares the original's parameters."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package
from torch import nn

load_pack_package()
slicing = importlib.import_module("pyra_pack.core.slicing.tokens")


def ffn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))


@pytest.mark.parametrize("tokens", [1, 7, 32, 100, 1000])
def test_sliced_equals_whole(tokens):
    module = ffn()
    x = torch.randn(2, 100, 16)
    twin = slicing.token_sliced(module, tokens)
    assert torch.allclose(twin(x), module(x), atol=1e-6)


def test_twin_shares_parameters_and_names_and_leaves_the_original_alone():
    module = ffn()
    twin = slicing.token_sliced(module, 8)
    assert dict(twin.named_parameters()).keys() == dict(module.named_parameters()).keys()
    assert all(a is b for a, b in zip(twin.parameters(), module.parameters(), strict=True))
    assert type(module) is nn.Sequential and type(twin) is not nn.Sequential
    assert type(slicing.token_sliced(twin, 4)) is type(twin), "re-slicing does not stack classes"
    with torch.no_grad():
        module[0].weight.add_(1.0)  # a weight patch on the original reaches the twin
    x = torch.randn(1, 20, 16)
    assert torch.allclose(twin(x), module(x), atol=1e-6)


def test_a_token_mixing_module_is_not_sliceable():
    """The check can fail: slicing a module that mixes tokens changes its result."""
    class Mix(nn.Module):
        def forward(self, x):
            return x - x.mean(-2, keepdim=True)

    x = torch.randn(1, 10, 4)
    assert not torch.allclose(slicing.token_sliced(Mix(), 3)(x), Mix()(x), atol=1e-3)
    with pytest.raises(ValueError, match="at least 1"):
        slicing.token_sliced(ffn(), 0)
