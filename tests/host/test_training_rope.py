"""host/rope.differentiable_rope: the host's RoPE gets a gradient inside the context, the fast path outside.

On 0.8.1+ the host's `comfy.ldm.flux.math.apply_rope` / `apply_rope1` run comfy-kitchen custom ops without an
autograd formula. The reference: RoPE as a rotation of each (even, odd) pair by the 2x2 matrix in freqs_cis, written
here in float64, with its gradient from autograd.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def mods(comfy_host):
    import comfy.ldm.flux.math as host_math

    return comfy_host.module("host.rope"), comfy_host.module("host.features"), host_math


def _inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 12, generator=g, dtype=dtype)  # (B, heads, tokens, head dim), ragged token count
    angle = torch.randn(1, 1, 7, 6, generator=g, dtype=torch.float64)
    cos, sin = angle.cos(), angle.sin()
    freqs = torch.stack([cos, -sin, sin, cos], -1).reshape(1, 1, 7, 6, 2, 2).float()  # the host's rope() layout
    return x, freqs


def _reference(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    pairs = x.double().reshape(*x.shape[:-1], -1, 2)
    f = freqs.double()
    out = torch.stack([f[..., 0, 0] * pairs[..., 0] + f[..., 0, 1] * pairs[..., 1],
                       f[..., 1, 0] * pairs[..., 0] + f[..., 1, 1] * pairs[..., 1]], -1)
    return out.reshape(x.shape)


def _kitchen(features) -> bool:
    return bool(features.kitchen_rope_references())


def test_the_host_rope_has_a_gradient_inside_the_context(mods):
    rope, _, host_math = mods
    x, freqs = _inputs()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ref_x = x.double().requires_grad_(True)
    (_reference(ref_x, freqs) * g.double()).sum().backward()
    for fn in (lambda a: host_math.apply_rope1(a, freqs), lambda a: host_math.apply_rope(a, a * 2, freqs)[0]):
        leaf = x.clone().requires_grad_(True)
        with torch.enable_grad(), rope.differentiable_rope():
            out = fn(leaf)
            (out * g).sum().backward()
        assert torch.allclose(out.double(), _reference(x, freqs), atol=1e-6)
        assert torch.allclose(leaf.grad.double(), ref_x.grad, atol=1e-6) and leaf.grad.abs().max() > 0.1


def test_without_the_context_the_kitchen_rope_has_no_gradient(mods):
    """Why the context exists; on hosts without comfy-kitchen (0.3.76-dev) the host's RoPE is plain torch."""
    _, features, host_math = mods
    x, freqs = _inputs()
    leaf = x.clone().requires_grad_(True)
    if not _kitchen(features):
        with torch.enable_grad():
            host_math.apply_rope1(leaf, freqs).sum().backward()
        assert leaf.grad is not None
        pytest.skip("no comfy-kitchen rope ops on this host: its RoPE is differentiable as it is")
    import comfy.model_management

    if getattr(comfy.model_management, "in_training", False):
        pytest.skip("the host's own training flag is set: its RoPE takes its eager path")
    with torch.enable_grad(), pytest.raises(RuntimeError, match="autograd"):
        host_math.apply_rope1(leaf, freqs).sum().backward()


def test_float64_and_no_grad_calls_take_the_eager_path_inside_and_the_host_op_outside(mods):
    rope, features, host_math = mods
    if not _kitchen(features):
        pytest.skip("no comfy-kitchen rope ops on this host")
    x, freqs = _inputs(dtype=torch.float64)
    with rope.differentiable_rope():  # a gradient check's finite differences run float64 without grad
        out = host_math.apply_rope1(x, freqs)
    assert torch.allclose(out, _reference(x, freqs), atol=1e-6)
    x32 = x.float()
    with rope.differentiable_rope():
        inside = host_math.apply_rope1(x32, freqs)
    assert torch.equal(inside, host_math.apply_rope1(x32, freqs))  # CPU: the kitchen's eager backend, same code
    with pytest.raises(Exception, match="float64"):  # outside, the host's own dispatch (which refuses float64) runs
        host_math.apply_rope1(x, freqs)
    assert not torch._C._is_torch_function_mode_enabled()
