"""host/multigpu.py: every Pyra node that patches a model refuses the host's MultiGPU CFG split with its message,
whether the split comes before the node or after it, and a model without the split samples as before.

The split is faked the way the host marks it (a clone listed under the "multigpu" additional models; the host's
MultiGPU Work Units node needs a second GPU), so the test runs on every host of the matrix."""

from __future__ import annotations

import pytest
import torch

PATCHES = {  # node -> how the test applies it to a model
    "PyraStepCache": lambda node, m: node.execute(m, "auto", -1.0, 0.0, 1.0, False),
    "PyraSparseAttention": lambda node, m: node.execute(m, 1.0, 0.0, "64", 0.0, 1.0, -1, True),
    "PyraSparsify": lambda node, m: node.execute(m, "mlp", "", "magnitude", 1, 0, 0),
    "PyraFeatureSlicing": lambda node, m: node.execute(m, 8),
    "PyraDFMConvert": lambda node, m: node.execute(m, 2),
}
SHAPE = (1, 16, 16, 16)


@pytest.fixture(scope="module")
def host(comfy_host):
    demo, cond = comfy_host.module("host.demo_models"), comfy_host.module("host.demo_models")
    base = demo.build_tiny_model("sd3", torch.float32, seed=0)
    demo.init_random_(base.model.diffusion_model, 0, std=0.05)
    return comfy_host.module("host.multigpu"), base, cond.demo_conditioning("sd3", seed=1)


def with_split(model):
    out = model.clone()
    out.set_additional_models("multigpu", [model.clone()])
    return out


def sample(comfy_host, name, model, cond):
    """A 2-step sample with the stock sampling path; a DFM model with the DFM sampler (it refuses stock ones)."""
    import comfy.sample

    if name == "PyraDFMConvert":
        node = comfy_host.node("PyraDFMSampler")
        latent = {"samples": torch.zeros(SHAPE)}
        return node.execute(model, 3, "1, 1", "0.3", "euler", 1.0, "simple", cond, cond, latent).result[0]["samples"]
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    return comfy.sample.sample(model, noise, 2, 1.0, "euler", "simple", cond, cond, torch.zeros(SHAPE),
                               disable_pbar=True, seed=3)


@pytest.mark.parametrize("name", list(PATCHES))
def test_a_model_that_carries_the_split_is_refused_by_the_node(comfy_host, host, name):
    guard, base, _ = host
    with pytest.raises(guard.MultiGPUSplitUnsupported, match="MultiGPU CFG split") as err:
        PATCHES[name](comfy_host.node(name), with_split(base))
    assert name in str(err.value)


@pytest.mark.parametrize("name", list(PATCHES))
def test_a_split_added_after_the_node_is_refused_when_sampling(comfy_host, host, name):
    guard, base, cond = host
    patched = PATCHES[name](comfy_host.node(name), base).result[0]
    assert torch.isfinite(sample(comfy_host, name, patched, cond)).all()  # without the split it samples
    with pytest.raises(guard.MultiGPUSplitUnsupported, match=name):
        sample(comfy_host, name, with_split(patched), cond)


def test_the_stock_model_with_the_split_is_left_to_the_host(host):
    """The guard is only on Pyra's patched models: the split on a stock model reaches the host unchanged."""
    guard, base, _ = host
    assert guard.has_split(with_split(base)) and not guard.has_split(base)
    assert not any(key.startswith(guard.WRAPPER_KEY) for wrappers in base.wrappers.values() for key in wrappers)
