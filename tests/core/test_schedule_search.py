"""Searched schedules (core): family noise schedules, the analytic band-error proxy, the evolutionary search
and the stored schedules."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
families = importlib.import_module("pyra_pack.core.samplers.schedule_families")
proxy_mod = importlib.import_module("pyra_pack.core.samplers.schedule_proxy")
search_mod = importlib.import_module("pyra_pack.core.samplers.schedule_search")
stored = importlib.import_module("pyra_pack.core.samplers.searched_schedules")
ode = importlib.import_module("pyra_pack.core.samplers.ode_samplers")
analytic = importlib.import_module("pyra_pack.core.analytic")


def test_family_schedules_match_the_host_constants():
    sd = families.get_family("sd15")
    ends = sd.sigma_of(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends[0] == pytest.approx(0.0291671582, rel=1e-6) and ends[1] == pytest.approx(14.6146412293, rel=1e-6)
    sd3 = families.get_family("sd3")
    assert sd3.sigma_of(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(0.75)  # 3·½ / (1 + 2·½)
    assert sd3.grid()[-1] == 1.0 and sd.grid()[0] == 0.0 and len(sd3.grid()) == 1000
    with pytest.raises(ValueError, match="choose one of"):
        families.get_family("sd2")


@pytest.mark.parametrize(("family", "sampler"), [("sd15", "euler"), ("sd3", "dpmpp_2m"), ("flux", "euler")])
def test_gain_proxy_equals_sampling_real_noise(family, sampler):
    """The fast path (sampler run once on per-mode gains) is exactly the sampler run on a batch of noise images
    with the prior's pixel-space denoiser, compared with pf_ode_solution from the same noise."""
    fam, prior = families.get_family(family), analytic.NaturalImagePrior()
    proxy = proxy_mod.BandErrorProxy(fam, sampler, prior, size=32, samples=4, seed=3)
    sigmas = fam.sigmas(fam.grid()[[999, 700, 400, 150, 20]])
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = noise * proxy.start
    images = ode.SAMPLERS[sampler](lambda x, s: prior.denoise(x, s, fam.parametrisation), x, sigmas)
    truth = prior.pf_ode_solution(noise, proxy.sigma_max, fam.parametrisation, proxy.sigma_min)
    reference = analytic.band_ratio(images, prior, 8, reference=truth)
    assert torch.allclose(proxy.band_ratio(sigmas), reference, rtol=1e-9)
    assert (reference - 1).abs().max() > 0.01, "a 5-step schedule must show some error (non-vacuous)"


def test_samplers_converge_to_the_exact_solution():
    """More steps -> smaller proxy error, for both samplers, on a uniform-time schedule.

    (Uniform time is hard on dpmpp_2m: its last steps grow fast in log sigma, and its multistep extrapolation
    overshoots, 2.7x too much power at 20 steps; it only overtakes euler with many steps.)"""
    fam = families.get_family("sd3")
    errors = {}
    for name in ("euler", "dpmpp_2m"):
        proxy = proxy_mod.BandErrorProxy(fam, name, size=32, samples=2)
        errors[name] = [proxy(fam.grid()[list(search_mod.uniform_candidate(n, 1000))].flip(0))
                        for n in (5, 20, 80, 320)]
    for name, err in errors.items():
        assert err[0] > err[1] > err[2] > err[3], name
    assert errors["dpmpp_2m"][3] < errors["euler"][3] < 0.05


def test_a_deliberately_bad_schedule_scores_worse():
    fam = families.get_family("sd15")
    proxy = proxy_mod.BandErrorProxy(fam, "dpmpp_2m", size=32, samples=2)
    uniform = fam.grid()[list(search_mod.uniform_candidate(6, 1000))].flip(0)
    crowded_at_the_top = fam.grid()[[999, 998, 997, 996, 995, 994]]  # the last step jumps from sigma ~14 to 0
    assert proxy(crowded_at_the_top) > 3 * proxy(uniform)


def test_search_improves_on_its_initial_population():
    fam = families.get_family("sd3")
    proxy = proxy_mod.BandErrorProxy(fam, "euler", size=32, samples=2)
    search = search_mod.EvolutionarySearch(proxy, fam.grid(), 4, population=12, select=4, mutations=6,
                                           crossovers=6, seed=0)
    result = search.run(generations=6)
    assert result.score < result.initial_best_score < result.uniform_score
    assert all(a >= b for a, b in zip(result.history, result.history[1:], strict=False)), "elitism: never worse"
    assert len(result.best) == 4 and result.best[-1] == 999 and list(result.best) == sorted(set(result.best))
    assert result.score == pytest.approx(proxy(search.fractions(result.best)))


def test_mutation_and_crossover_keep_valid_candidates():
    search = search_mod.EvolutionarySearch(lambda f: 0.0, torch.arange(1000.0) / 999, 6, seed=1)
    parent, other = search_mod.uniform_candidate(6, 1000), search.random_candidate()
    for _ in range(50):
        for child in (search.mutate(parent, 0.5), search.crossover(parent, other)):
            if child is not None:
                assert len(set(child)) == 6 and child[-1] == 999 and list(child) == sorted(child)


def test_reference_set_target_replaces_the_exact_solution():
    """With a reference set drawn from the prior itself, the target is ~1 in every band (its band power);
    a reference with its high frequencies removed gives a different target and a different score."""
    prior, fam = analytic.NaturalImagePrior(), families.get_family("sd15")
    images = prior.sample(32, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = proxy_mod.reference_band_power(images, 32, prior)  # 2x2 pooling: exactly the prior at 32²
    error = analytic.band_standard_error(prior, 32, 32, 32)
    assert target.shape == (3, 8) and ((target - 1).abs() < 4 * error).all()
    assert proxy_mod.reference_band_power(images[..., :50], 32, prior).shape == (3, 8)  # centre crop
    blurred = torch.nn.functional.avg_pool2d(images, 3, 1, 1)
    sigmas = fam.sigmas(fam.grid()[[999, 500, 100, 0]])
    plain = proxy_mod.BandErrorProxy(fam, "euler", prior, size=32, reference=target)
    blur = proxy_mod.BandErrorProxy(fam, "euler", prior, size=32,
                                    reference=proxy_mod.reference_band_power(blurred, 32, prior))
    assert blur.score_sigmas(sigmas) != pytest.approx(plain.score_sigmas(sigmas), rel=0.05)
    with pytest.raises(ValueError, match="decode"):
        proxy_mod.reference_band_power(torch.zeros(1, 4, 64, 64), 32, prior)


def test_stored_schedules_are_valid():
    store = stored.load_store()
    assert "tools/search_schedule.py" in store["command"]
    assert set(store["schedules"]) == set(families.FAMILIES)
    for name, by_sampler in store["schedules"].items():
        fam = families.get_family(name)
        assert set(by_sampler) >= {"euler", "dpmpp_2m"}
        for sampler, entries in by_sampler.items():
            for steps, entry in entries.items():
                u = torch.tensor(entry["fractions"], dtype=torch.float64)
                sigmas = fam.sigmas(u)
                assert len(u) == int(steps) and u[0] == 1.0 and (u >= 0).all(), (name, sampler, steps)
                assert (sigmas[1:] < sigmas[:-1]).all() and sigmas[-1] == 0, (name, sampler, steps)
                assert entry["score"] <= entry["uniform_score"], "never worse than its uniform start"


def test_missing_step_counts_are_interpolated_and_unknown_samplers_rejected():
    available = stored.stored_steps("sd3", "euler")
    u, interpolated = stored.searched_fractions("sd3", "euler", available[0])
    assert not interpolated and len(u) == available[0]
    for steps in (1, 2, 7, 13, 40):
        u, interpolated = stored.searched_fractions("sd3", "euler", steps)
        assert interpolated == (steps not in available) and len(u) == steps
        assert u[0] == 1.0 and (u[1:] < u[:-1]).all() and (u > 0).all()
    with pytest.raises(stored.ScheduleNotFound, match=r"stored: .*euler"):
        stored.searched_fractions("sd3", "lms", 8)
