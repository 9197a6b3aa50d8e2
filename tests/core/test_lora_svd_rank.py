"""core/adapters/svd.py and rank.py: randomized SVD against the exact reference and its bound; rank rules."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
svd = importlib.import_module("pyra_pack.core.adapters.svd")
rank = importlib.import_module("pyra_pack.core.adapters.rank")


def known_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T with Haar-random orthonormal U (m, k), V (n, k), in fp64."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(m, s.numel(), generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, s.numel(), generator=g, dtype=torch.float64)).Q
    return u * s.double() @ v.mT


def decaying(m: int, n: int, seed: int = 0, noise: float = 0.05, power: float = 1.0) -> torch.Tensor:
    """Power-law spectrum plus Gaussian noise: the shape of a fine-tuning difference."""
    g = torch.Generator().manual_seed(seed + 1)
    k = min(m, n)
    a = known_spectrum(m, n, torch.arange(1, k + 1, dtype=torch.float64) ** -power, seed)
    return a + noise * torch.randn(m, n, generator=g, dtype=torch.float64) / (m * n) ** 0.25


def test_exact_reference_reconstructs():
    a = decaying(60, 40)
    spec = svd.exact_svd(a, 40)
    assert torch.allclose(spec.U * spec.S @ spec.Vh, a, atol=1e-10)
    assert spec.relative_error(40) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(("shape", "power"), [((300, 200), 1.0), ((97, 411), 1.0), ((300, 200), 2.0)])
def test_randomized_error_within_hmt_bound_and_near_exact(shape, power):
    a = decaying(*shape, power=power)
    full = torch.linalg.svdvals(a)
    k, p = 20, 5
    # q = 0: the range-finder error sits under the HMT Theorem 10.5 expectation bound (with slack for one draw)
    q0 = svd.randomized_svd(a, k, oversample=p, power_iters=0, seed=3)
    proj_err = torch.linalg.matrix_norm(a - q0.U @ (q0.U.mT @ a))  # U spans Q's top-k part: error >= ||(I-QQ^T)A||
    assert proj_err <= 1.5 * svd.hmt_frobenius_bound(full, k, p)
    # with power iterations the rank-k error is within 5% of the exact truncated SVD's (the goal)
    q2 = svd.randomized_svd(a, k, oversample=10, power_iters=2, seed=3)
    exact = svd.exact_svd(a, k)
    err = torch.linalg.matrix_norm(a - q2.U * q2.S @ q2.Vh)
    best = torch.linalg.matrix_norm(a - exact.U * exact.S @ exact.Vh)
    assert best <= err <= 1.05 * best
    # the analytic relative error equals the measured one (the truncation is an orthogonal projection)
    assert q2.relative_error(k) == pytest.approx(float(err / torch.linalg.matrix_norm(a)), rel=1e-6)


def test_bound_check_can_fail():
    a = decaying(300, 200, noise=0.0, power=2.0)
    full = torch.linalg.svdvals(a)
    # a bad basis (random, not a range finder) is far outside the bound
    q = torch.linalg.qr(torch.randn(300, 20, dtype=torch.float64)).Q
    assert torch.linalg.matrix_norm(a - q @ (q.mT @ a)) > 1.5 * svd.hmt_frobenius_bound(full, 20, 5)


def test_randomized_falls_back_to_exact_when_wide():
    a = decaying(30, 20)
    r = svd.randomized_svd(a, 15, oversample=10)
    assert torch.allclose(r.S, svd.exact_svd(a, 15).S)


def test_energy_rule_picks_known_rank():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.5])  # energies 16, 4, 1, 1, 0.25: total 22.25
    a = known_spectrum(50, 40, s)
    spec = svd.exact_svd(a, 40)
    assert rank.energy_rank(spec.S, spec.energy, 0.7) == 1  # 16 / 22.25 = 0.719
    assert rank.energy_rank(spec.S, spec.energy, 0.89) == 2  # 20 / 22.25 = 0.899
    assert rank.energy_rank(spec.S, spec.energy, 0.9) == 3
    assert rank.energy_rank(spec.S, spec.energy, 0.95) == 4  # 21 / 22.25 = 0.944
    assert rank.energy_rank(spec.S, spec.energy, 1.0) == 5
    # only the top two triplets computed: the rule is capped at what it has
    assert rank.energy_rank(spec.S[:2], spec.energy, 0.99) == 2


def test_threshold_rule():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])
    assert rank.threshold_rank(s, 0.05) == 3
    assert rank.threshold_rank(s, 0.5) == 2
    assert rank.threshold_rank(torch.zeros(3), 0.1) == 0


def test_budget_prefers_layers_with_slow_decay_and_respects_budget():
    slow = (torch.linspace(1, 0.5, 16), 16.0 * 0.6, 100)
    fast = (torch.tensor([1.0] + [1e-3] * 15), 1.0, 100)
    ranks = rank.budget_ranks([slow, fast], 1000)
    assert sum(ranks) * 100 <= 1000 and ranks[1] == 1 and ranks[0] == 9
    # the budget is exact optimum of sum err^2 for this cost structure: compare with brute force
    def total_sq_error(r):
        return sum(1 - float(x[0][:ri].square().sum()) / x[1] for x, ri in zip((slow, fast), r, strict=True))

    best = min(((r0, r1) for r0 in range(17) for r1 in range(17) if (r0 + r1) * 100 <= 1000), key=total_sq_error)
    assert tuple(ranks) == best


def test_rules_validate():
    with pytest.raises(ValueError, match="energy must be"):
        rank.RankRule("energy", 1.5)
    with pytest.raises(ValueError, match="unknown rank mode"):
        rank.RankRule("magic", 1)
