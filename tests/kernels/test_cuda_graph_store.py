"""Where CUDA graphs live between stages and runs (kernels/cuda_graphs/store.py): the fingerprint that says when a
kept graph is still valid, the store's release rules, the once-per-process warm-up, cond UUIDs in signatures."""

from __future__ import annotations

import gc
import uuid

import pytest
import torch


@pytest.fixture(scope="module")
def store(comfy_host):
    return comfy_host.module("kernels.cuda_graphs.store")


@pytest.fixture
def unet(comfy_host):
    return comfy_host.module("host.demo_models").build_tiny_model("sd15").model.diffusion_model


def test_fingerprint_holds_for_values_written_in_place(store, unet):
    before = store.weights_fingerprint(unet)
    with torch.no_grad():
        next(unet.parameters()).mul_(2)  # a replay reads the new values at the same address, as eager does
    assert store.weights_fingerprint(unet) == before


def test_fingerprint_sees_moved_weights_functions_and_tensor_attributes(store, unet):
    before = store.weights_fingerprint(unet)
    layer = unet.out[2]
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone(), requires_grad=False)  # same values, new place
    moved = store.weights_fingerprint(unet)
    assert moved != before
    layer.weight_function = [lambda w: w * 2]
    with_function = store.weights_fingerprint(unet)
    assert with_function != moved
    layer.cached = torch.zeros(3)
    assert store.weights_fingerprint(unet) != with_function


def test_store_is_kept_while_the_fingerprint_holds(store, comfy_host, unet):
    store.release_kept_graphs()
    kept = store.store_for(unet)
    kept.graphs["sig"] = "graph"
    assert store.store_for(unet) is kept and kept.graphs == {"sig": "graph"}
    layer = unet.out[2]
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
    fresh = store.store_for(unet)
    assert fresh is not kept and fresh.graphs == {} and kept.graphs == {}, "stale graphs are released"
    fresh.graphs["sig"] = "graph"
    other = comfy_host.module("host.demo_models").build_tiny_model("sd15").model.diffusion_model
    assert store.store_for(other) is not fresh and fresh.graphs == {}, "one model's graphs at a time"
    store.release_kept_graphs()


def test_kept_graphs_do_not_keep_the_model_alive(store, comfy_host):
    module = comfy_host.module("host.demo_models").build_tiny_model("sd15").model.diffusion_model
    store.store_for(module)
    store.mark_warmed(module, ("sig",))
    assert store.was_warmed(module, ("sig",)) and not store.was_warmed(module, ("other",))
    ref = __import__("weakref").ref(module)
    del module
    gc.collect()
    assert ref() is None
    store.release_kept_graphs()


@pytest.mark.parametrize(("free", "needed", "pool", "total", "release"), [
    (10e9, 4e9, 0, 80e9, False),      # nothing kept
    (10e9, 4e9, 2e9, 80e9, False),    # fits beside the pools
    (10e9, 9e9, 2e9, 80e9, True),     # the pools' own free blocks are not free for the stage
    (60e9, 4e9, 11e9, 80e9, True),    # more than 1/8 of the device
    (60e9, 4e9, None, 80e9, True),    # size unknown: release
])
def test_release_rule(store, free, needed, pool, total, release):
    assert store.must_release(free, needed, pool, total) is release


def test_make_room_leaves_cpu_alone(store, unet):
    kept = store.store_for(unet)
    kept.pools.add((0, 1))
    assert not store.make_room(torch.device("cpu"), 1e30, 0)
    assert store.store_for(unet) is kept
    store.release_kept_graphs()


def test_pool_bytes_counts_only_the_kept_pools(store):
    segments = [{"total_size": 2 << 20, "segment_pool_id": (0, 0)},      # the default pool
                {"total_size": 4 << 20, "segment_pool_id": (1, 7)},      # a kept graph's pool
                {"total_size": 8 << 20, "segment_pool_id": [1, 9]},      # another graph's, as a list
                {"total_size": 16 << 20, "segment_pool_id": (2, 3)}]     # not ours
    assert store.pool_bytes(segments, {(1, 7), (1, 9)}) == 12 << 20
    assert store.pool_bytes(segments, set()) == 0


def test_cond_uuids_enter_the_signature_by_order_of_appearance(comfy_host):
    graphs = comfy_host.module("host.cuda_graphs")
    a, b, c, d = (uuid.uuid4() for _ in range(4))

    def sig(uuids):
        return graphs._signature(({"uuids": uuids},), [], None)

    assert sig([a, b]) == sig([c, d]), "a new guider's UUIDs give the same signature"
    assert sig([a, a]) != sig([a, b]), "which conds are the same still counts"
