"""CUDA-graph replay of the diffusion model (host/cuda_graphs.py): signatures, fallbacks, and on a GPU the
graphed pyramid against the eager one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def graphs(comfy_host):
    return comfy_host.module("host.cuda_graphs")


def options_with(graphs, **extra):
    import comfy.patcher_extension

    wrapper = object()
    options = {"wrappers": {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {graphs.WRAPPER_KEY: [wrapper]}}}
    return {**options, **extra}


def test_signature_follows_shapes_and_plain_arguments_not_values(graphs):
    opts = options_with(graphs, cond_or_uncond=[1, 0], sigmas=torch.ones(2))

    def sig(*args, **kwargs):
        tensors = []
        return graphs._signature((args, kwargs), tensors, opts), tensors

    a, ta = sig(torch.zeros(2, 4, 8, 8), torch.ones(2), opts, y=None)
    b, tb = sig(torch.randn(2, 4, 8, 8), torch.zeros(2), opts, y=None)
    assert a == b and len(ta) == len(tb) == 3  # x, timesteps, transformer_options["sigmas"]
    assert sig(torch.zeros(2, 4, 8, 16), torch.ones(2), opts)[0] != a
    assert sig(torch.zeros(2, 4, 8, 8), torch.ones(2), opts, y=3)[0] != a
    other = options_with(graphs, cond_or_uncond=[0], sigmas=torch.ones(2))
    assert graphs._signature(((torch.zeros(2, 4, 8, 8), torch.ones(2), other), {"y": None}), [], other) != a


@pytest.mark.parametrize("blocking", ["patches", "patches_replace"])
def test_patches_and_unknown_objects_are_not_captured(graphs, blocking):
    opts = options_with(graphs, **{blocking: {"attn1": [lambda *a: a]}})
    with pytest.raises(graphs.Uncapturable, match=blocking):
        graphs._signature((torch.zeros(1), opts), [], opts)
    with pytest.raises(graphs.Uncapturable, match="object"):
        graphs._signature((torch.zeros(1), object()), [], None)
    assert graphs._find_options((torch.zeros(1), opts), {}) is opts
    assert graphs._find_options((torch.zeros(1), {"wrappers": {}}), {}) is None


def test_swap_replaces_by_identity_and_rebuilds_containers(comfy_host):
    x, ctx, other = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    sx, sctx = torch.zeros(1), torch.ones(1)
    args = (x, {"c": [ctx, other], "n": 3})
    swapped = comfy_host.module("kernels.cuda_graphs.capture").swap(args, {id(x): sx, id(ctx): sctx})
    assert swapped[0] is sx and swapped[1]["c"][0] is sctx and swapped[1]["c"][1] is other
    assert args[1]["c"][0] is ctx, "the caller's containers are not modified"


def test_cpu_runs_eagerly_with_the_reason(comfy_host, graphs):
    import comfy.patcher_extension

    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    forward = graphs.GraphedForward(patcher)
    opts = options_with(graphs)
    calls = []

    def executor(*args, **kwargs):
        calls.append(args)
        return args[0] * 2

    out = forward(executor, torch.ones(1, 4, 8, 8), torch.ones(1), opts)
    assert torch.equal(out, torch.full((1, 4, 8, 8), 2.0)) and len(calls) == 1
    assert forward.counts == {"eager: not on a CUDA device": 1}
    model_options = {"transformer_options": {}}
    installed = forward.install(model_options)
    assert model_options == {"transformer_options": {}}, "install must not touch the caller's options"
    assert comfy.patcher_extension.get_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                         graphs.WRAPPER_KEY, installed, True) == [forward]


def _pyramid(load, cuda_graphs: bool, steps: int = 6, patcher=None):
    """A tiny SD1.5 pyramid run, CFG 3 with a random context: `load` imports pack modules."""
    import comfy.samplers

    pyr_sampling, pyr = load("host.pyramid"), load("core.samplers.pyramid")
    patcher = patcher or load("host.demo_models").build_tiny_model("sd15")
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=g), {}]]
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, uncond)
    guider.set_cfg(3.0)
    noise = torch.randn(1, 4, 32, 32, generator=g)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", steps).cpu()
    with torch.no_grad():
        return pyr_sampling.pyramid_sample(guider, noise, torch.zeros_like(noise),
                                           comfy.samplers.sampler_object("euler"), sigmas,
                                           pyr.parse_ladder("4:0.3, 2:0.3"), seed=0, cuda_graphs=cuda_graphs)


def test_pyramid_on_cpu_is_unchanged_by_the_option(comfy_host):
    assert torch.equal(_pyramid(comfy_host.module, True), _pyramid(comfy_host.module, False))


def test_a_run_without_graphs_releases_the_kept_ones(comfy_host):
    store = comfy_host.module("kernels.cuda_graphs.store")
    module = torch.nn.Linear(2, 2)
    store.store_for(module).pools.add((0, 1))
    _pyramid(comfy_host.module, False)
    assert store.kept_pool_bytes() == 0 and store._store is None


def _stage_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Pyra pyramid 1/")]


@pytest.mark.gpu
def test_graphed_pyramid_matches_eager_on_the_gpu(gpu_host, caplog):
    """Low-resolution stages captured, then (next run, a new guider: new cond UUIDs) replayed from the kept
    graphs with no warm-up or capture; every result bit-identical to the eager run's."""
    patcher = gpu_host("host.demo_models").build_tiny_model("sd15")
    gpu_host("kernels.cuda_graphs.store").release_kept_graphs()
    with caplog.at_level("INFO", logger="pyra"):
        first = _pyramid(gpu_host, True, steps=12, patcher=patcher)
        caplog.clear()
        kept = _pyramid(gpu_host, True, steps=12, patcher=patcher)
    assert gpu_host("kernels.cuda_graphs.store").kept_pool_bytes() > 0, "the kept graphs' pools are measured"
    eager = _pyramid(gpu_host, False, steps=12, patcher=patcher)
    logs = _stage_logs(caplog)
    assert len(logs) == 2 and all("replayed" in m and "captured" not in m and "warm-up" not in m for m in logs), logs
    assert torch.equal(first, eager) and torch.equal(kept, eager)


@pytest.mark.gpu
def test_moved_weights_are_captured_again_on_the_gpu(gpu_host, caplog):
    """A weight replaced by a new tensor (new address, other values) makes the kept graphs stale: they are
    released and captured again, and the result follows the new weight as the eager run does."""
    patcher = gpu_host("host.demo_models").build_tiny_model("sd15")
    before = _pyramid(gpu_host, True, steps=12, patcher=patcher)
    layer = patcher.model.diffusion_model.out[2]
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 1.5, requires_grad=False)
    with caplog.at_level("INFO", logger="pyra"):
        after = _pyramid(gpu_host, True, steps=12, patcher=patcher)
    eager = _pyramid(gpu_host, False, steps=12, patcher=patcher)
    assert "weights moved" in caplog.text and all("captured" in m for m in _stage_logs(caplog)), caplog.text
    assert not torch.equal(after, before) and torch.equal(after, eager)


def test_a_dynamic_vram_model_runs_eagerly_with_one_log_line(comfy_host, graphs, caplog):
    """Dynamic VRAM (0.16+) streams every layer's weight through cast buffers per call: the check of
    `model_lowvram` alone let such a model be captured. It now runs eagerly, counted, with one warning."""
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    dynamic = patcher.clone()
    dynamic.is_dynamic = lambda: True  # what ModelPatcherDynamic answers (it needs a GPU and comfy-aimdo)
    forward = graphs.GraphedForward(dynamic)
    opts = options_with(graphs)
    with caplog.at_level("WARNING", logger="pyra"):
        for _ in range(3):
            out = forward(lambda *a, **k: a[0] + 1, torch.ones(1, 4, 8, 8), torch.ones(1), opts)
    assert torch.equal(out, torch.full((1, 4, 8, 8), 2.0))
    assert forward.counts == {f"eager: {graphs.DYNAMIC_VRAM}": 3}
    warnings = [r.getMessage() for r in caplog.records if "dynamic VRAM" in r.getMessage()]
    assert len(warnings) == 1 and "--disable-dynamic-vram" in warnings[0]
    assert graphs.GraphedForward(patcher).ineligible([torch.ones(1)]) == "not on a CUDA device"


@pytest.mark.gpu
def test_gpu_dynamic_vram_pyramid_is_not_captured_and_matches_eager(gpu_host, caplog):
    """On the host's default NVIDIA memory mode (ModelPatcherDynamic) no graph is captured and the result is
    the eager one."""
    from _host import model_patcher

    tiny = gpu_host("host.demo_models").build_tiny_model("sd15")
    patcher = model_patcher(tiny.model, tiny.load_device, tiny.offload_device)
    if not gpu_host("host.features").patcher_is_dynamic(patcher):
        pytest.skip("this host or device runs without dynamic VRAM (ModelPatcherDynamic)")
    with caplog.at_level("INFO", logger="pyra"):
        graphed = _pyramid(gpu_host, True, steps=6, patcher=patcher)
    eager = _pyramid(gpu_host, False, steps=6, patcher=patcher)
    logs = _stage_logs(caplog)
    assert logs and all("captured" not in m and "replayed" not in m and "dynamic VRAM" in m for m in logs), logs
    assert torch.equal(graphed, eager)
