"""host/models.py, the one vocabulary: families of the demo models (by class and exactly), the refusal that
names the supported families, the parametrisation, and a step window that follows a later shift."""

from __future__ import annotations

import pytest

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "wan21")


@pytest.fixture(scope="module")
def models(comfy_host):
    return comfy_host.module("host.models")


@pytest.fixture(scope="module")
def demo(comfy_host):
    return comfy_host.module("host.demo_models")


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_models_have_their_family(models, demo, family):
    patcher = demo.build_tiny_model(family)
    assert models.family_of(patcher) == family
    assert models.family_of(patcher, exact=True) == family
    assert models.parametrisation(patcher, "test") == ("ve" if family in ("sd15", "sdxl") else "flow")


def test_refusal_names_the_supported_families(models, demo):
    with pytest.raises(KeyError, match=r"supports SD3 and Flux models, not UNetModel"):
        models.require_family(demo.build_tiny_model("sd15"), ("sd3", "flux"), "the feature", KeyError)
    assert models.require_family(demo.build_tiny_model("flux"), ("sd3", "flux"), "the feature") == "flux"


def test_a_model_of_none_of_our_families(comfy_host, models):
    analytic = comfy_host.module("host.analytic")
    patcher = analytic.analytic_model_patcher(analytic.NaturalImagePrior(), "flow")
    assert models.family_of(patcher) is None and models.family_of(patcher, exact=True) is None
    assert models.parametrisation(patcher, "test") == "flow"


def test_the_window_is_resolved_from_the_sampling_it_runs_with(comfy_host, models):
    """The same percents give other sigmas after a shift change (a ModelSampling node after the Pyra node)."""
    analytic = comfy_host.module("host.analytic")
    patcher = analytic.analytic_model_patcher(analytic.NaturalImagePrior(), "flow")
    sampling = patcher.get_model_object("model_sampling")
    window = models.SigmaWindow(0.2, 0.8)
    assert window(0.5), "before sampling starts every step is inside"
    sampling.set_parameters(shift=1.0)
    window.prepare(sampling)
    low = (window.start_sigma, window.end_sigma)
    sampling.set_parameters(shift=6.0)
    window.prepare(sampling)
    assert window.start_sigma > low[0] and window.end_sigma > low[1]
    mid = float(sampling.percent_to_sigma(0.5))
    assert window(mid) and not window(float(sampling.percent_to_sigma(0.9)))


def test_a_window_in_sigmas_stays(models):
    window = models.SigmaWindow.between(0.5, 0.1)
    window.prepare(None)
    assert window(0.3) and not window(0.6) and not window(0.1)


@pytest.mark.parametrize(("family", "grid"), [("wan21", (1, 2, 2)), ("flux", (2, 2)), ("sd3", (2, 2))])
def test_patch_grid(models, demo, family, grid):
    assert models.patch_size(demo.build_tiny_model(family)) == grid


@pytest.mark.parametrize(("family", "grid"), [("ltxv", (1, 1, 1)), ("wan22_ti2v_5b", (1, 2, 2))])
def test_patch_grid_of_video_families(comfy_host, models, family, grid):
    video = comfy_host.module("host.tiny_video_families")
    if video.missing_host_classes(family):
        pytest.skip(f"this host lacks {video.missing_host_classes(family)}")
    assert models.patch_size(video.build(family)) == grid
