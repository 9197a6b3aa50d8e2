"""PyraSearchedSigmas in-process: sigmas on the demo models, the family check, the host mapping, and the
host-free samplers and proxy against the host's own samplers on the analytic model."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def mods(comfy_host):
    return (comfy_host.module("host.schedules"), comfy_host.module("core.samplers.schedule_families"),
            comfy_host.module("core.samplers.searched_schedules"), comfy_host.module("host.demo_models"))


def node_sigmas(comfy_host, model, family="auto", sampler="dpmpp_2m", steps=8, denoise=1.0):
    return comfy_host.node("PyraSearchedSigmas").execute(model, family, sampler, steps, denoise)[0]


@pytest.mark.parametrize("family", ["sd15", "sd3"])
@pytest.mark.parametrize(("steps", "denoise"), [(4, 1.0), (8, 1.0), (7, 1.0), (5, 0.5)])
def test_sigmas_on_the_demo_models(comfy_host, mods, family, steps, denoise):
    model = mods[3].build_tiny_model(family)
    sigmas = node_sigmas(comfy_host, model, "auto", "euler", steps, denoise)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()
    ms = model.get_model_object("model_sampling")
    if denoise == 1.0:
        assert sigmas[0] == pytest.approx(float(ms.sigma_max))
    else:
        assert sigmas[0] < float(ms.sigma_max) / (2 if family == "sd15" else 1.2)


def test_the_family_check_errors_clearly(comfy_host, mods):
    schedules, _, _, demo = mods
    sd3 = demo.build_tiny_model("sd3")
    with pytest.raises(schedules.FamilyMismatch, match="set family to auto or to one of sd3, flux, wan21"):
        node_sigmas(comfy_host, sd3, "sd15")
    with pytest.raises(schedules.FamilyMismatch, match="sd15, sdxl"):
        node_sigmas(comfy_host, demo.build_tiny_model("sd15"), "flux")
    analytic = comfy_host.module("host.analytic")
    eps = analytic.analytic_model_patcher(analytic.NaturalImagePrior(), "eps")
    with pytest.raises(schedules.FamilyMismatch, match="cannot tell the family"):
        node_sigmas(comfy_host, eps, "auto")
    assert node_sigmas(comfy_host, eps, "sdxl").shape == (9,)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux", "wan21"])
def test_host_mapping_equals_the_search_schedule(comfy_host, mods, family):
    """The node maps stored fractions through the model's own model_sampling to the sigmas the search scored."""
    schedules, families, stored, demo = mods
    model = demo.build_tiny_model(family)
    assert schedules.detect_family(model) == family
    fractions, _ = stored.searched_fractions(family, "dpmpp_2m", 8)
    expected = families.get_family(family).sigmas(fractions).float()
    assert torch.allclose(node_sigmas(comfy_host, model), expected, rtol=2e-5)


def test_a_user_shift_is_honoured(comfy_host, mods):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    _, families, stored, demo = mods
    shifted = ModelSamplingSD3().patch(demo.build_tiny_model("sd3"), shift=6.0)[0]
    fractions, _ = stored.searched_fractions("sd3", "dpmpp_2m", 8)
    expected = families.Family("x", "flow", 6.0, 64).sigmas(fractions).float()
    sigmas = node_sigmas(comfy_host, shifted)
    assert torch.allclose(sigmas, expected, rtol=2e-5)
    assert not torch.allclose(sigmas, node_sigmas(comfy_host, demo.build_tiny_model("sd3")), rtol=1e-3)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_host_free_samplers_match_the_host(comfy_host, name):
    """Our euler / dpmpp_2m and comfy.k_diffusion's on the same sigmas and a linear denoiser: identical."""
    import comfy.k_diffusion.sampling as kds

    ours = comfy_host.module("core.samplers.ode_samplers").SAMPLERS[name]
    gains = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def model(x, sigma):
        return x * gains / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    sigmas = torch.tensor([14.6, 7.0, 3.1, 1.2, 0.5, 0.13, 0.03, 0.0], dtype=torch.float64)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    host = getattr(kds, f"sample_{name}")(model, x, sigmas, disable=True)
    assert torch.allclose(ours(model, x, sigmas), host, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(host, x), "non-vacuous: the sampler moved x"


@pytest.mark.parametrize(("family", "sampler"), [("sd15", "dpmpp_2m"), ("sd3", "euler"), ("flux", "dpmpp_2m")])
def test_proxy_equals_the_host_sampling_the_analytic_model(comfy_host, mods, family, sampler):
    """The search's proxy (host-free, per-mode gains) gives the band ratios of the host's full sampling path
    (CFGGuider.sample, KSAMPLER noise scaling, the host sampler) on the analytic MODEL with the same noise."""
    import comfy.samplers

    fam = mods[1].get_family(family)
    analytic, core = comfy_host.module("host.analytic"), comfy_host.module("core.analytic")
    proxy_mod = comfy_host.module("core.samplers.schedule_proxy")
    bench = _benchmark_module(comfy_host)
    prior, patcher = bench.family_model(analytic, fam)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds([[torch.zeros(1, 1, 8), {}]], [[torch.zeros(1, 1, 8), {}]])
    guider.set_cfg(1.0)
    sigmas = node_sigmas(comfy_host, patcher, family, sampler, 6)
    proxy = proxy_mod.BandErrorProxy(fam, sampler, prior, size=32, samples=4, seed=7)
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = guider.sample(noise.float(), torch.zeros(4, 3, 32, 32), comfy.samplers.sampler_object(sampler), sigmas,
                        seed=7, disable_pbar=True)
    truth = prior.pf_ode_solution(noise, proxy.sigma_max, fam.parametrisation, proxy.sigma_min)
    host_ratio = core.band_ratio(out.double(), prior, 8, reference=truth)
    assert torch.allclose(proxy.band_ratio(sigmas.double()), host_ratio, rtol=2e-3)
    assert (host_ratio - 1).abs().max() > 0.01, "non-vacuous: 6 steps leave a visible error"


def _benchmark_module(comfy_host):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "schedule_quality.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("pyra_schedule_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flux_model_sampling_matches_the_family(comfy_host, mods):
    fam = mods[1].get_family("flux")
    _, patcher = _benchmark_module(comfy_host).family_model(comfy_host.module("host.analytic"), fam)
    ms = patcher.get_model_object("model_sampling")
    u = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    host = torch.tensor([ms.percent_to_sigma(1 - float(x)) for x in u], dtype=torch.float64)
    assert torch.allclose(host, fam.sigma_of(u), rtol=1e-6)
    assert math.isclose(math.log(fam.shift), 1.15)
