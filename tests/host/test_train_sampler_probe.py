"""host/features.train_sampler_missing: PyraTrainSparseAdapter refuses, with the host version and what to update, on
a ComfyUI whose TrainSampler lacks what it calls (fwd_bwd came in 0.3.76), instead of failing inside the host."""

from __future__ import annotations

import types

import pytest


@pytest.fixture(scope="module")
def features(comfy_host):
    return comfy_host.module("host.features")


def _host_like_0_3_75():
    """comfy_extras.nodes_train as 0.3.75 had it, as far as the probe looks: this host's TrainSampler without
    fwd_bwd (0.3.75's sample() did the forward and backward inline)."""
    import comfy_extras.nodes_train as real

    cls = real.TrainSampler
    old = type("TrainSampler", (), {"__init__": cls.__init__, "sample": cls.sample})
    return types.SimpleNamespace(TrainSampler=old, process_cond_list=real.process_cond_list)


def test_this_host_has_what_the_trainer_calls(features):
    assert features.train_sampler_missing() == []
    assert features.train_sampler_refusal("PyraTrainSparseAdapter") is None


def test_an_older_train_sampler_is_named_with_the_version_and_the_upgrade(features):
    old = _host_like_0_3_75()
    assert features.train_sampler_missing(old) == ["TrainSampler.fwd_bwd"]
    with pytest.raises(features.HostFeatureMissing) as err:
        features.require_train_sampler("PyraTrainSparseAdapter", old)
    msg = str(err.value)
    assert f"({features.comfyui_version()})" in msg and "TrainSampler.fwd_bwd" in msg and "0.3.76 or newer" in msg
    no_bwd = types.SimpleNamespace(TrainSampler=type("TrainSampler", (old.TrainSampler,), {
        "fwd_bwd": lambda self, model_wrap, batch_sigmas, batch_noise, batch_latent, cond, indicies, extra_args,
        dataset_size: None}), process_cond_list=old.process_cond_list)
    assert features.train_sampler_missing(no_bwd) == ["TrainSampler.fwd_bwd(bwd)"]
    assert features.train_sampler_missing(types.SimpleNamespace()) == ["comfy_extras.nodes_train.TrainSampler"]


def test_the_node_refuses_at_validation_and_before_any_work(comfy_host, features, monkeypatch):
    node = comfy_host.node("PyraTrainSparseAdapter")
    assert node.validate_inputs(reflections=8) is True
    monkeypatch.setattr(features, "train_sampler_missing", lambda nodes_train=None: ["TrainSampler.fwd_bwd"])
    msg = node.validate_inputs(reflections=8)
    assert isinstance(msg, str) and "update ComfyUI to 0.3.76 or newer" in msg
    training = comfy_host.module("host.training")
    settings = training.TrainSettings("sparse", 1, 1e-3, 1, 0)
    with pytest.raises(features.HostFeatureMissing, match="fwd_bwd"):  # model None: nothing else was touched
        training.train(None, None, [None], settings)
