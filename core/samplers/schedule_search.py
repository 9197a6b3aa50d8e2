"""Evolutionary search over step schedules (AutoDiffusion: Li et al., ICCV 2023, arXiv 2309.10438).

A candidate for N steps is a set of N distinct points of the model's discrete time grid (indices 0 .. G-1 into
`Family.grid()`, G = 1000); the top point G-1 (pure noise) is always in it, since text-to-image starts there,
and the sampler's last step goes from the lowest chosen point to sigma 0. The loop follows the paper's code
(`EvolutionSearcher.search` in lilijiangg/AutoDiffusion, search_ea.py):

1. Initial population of P: the uniform schedule, P/2 random candidates, and P - P/2 - 1 mutations of the
   uniform one (each free point replaced with probability 0.1).
2. Every generation: score the new candidates (a cache keeps every score), keep the `select` best seen so far,
   make `mutations` children (each free point of a random elite parent replaced, with probability `m_prob`,
   by an unused grid point; half of these replacements are local moves, our addition, see `mutate`) and
   `crossovers` children (each position taken from one of two random elite parents with probability 1/2,
   then sorted; children with repeated points are rejected), and refill with random candidates to P.
3. The best scored candidate is the result.

The fitness is any callable of the fractions (N,) descending (e.g. schedule_proxy.BandErrorProxy); the paper
used FID against a reference set, which needs a real model and thousands of images per candidate.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Candidate = tuple[int, ...]  # ascending grid indices, the last is always grid_points - 1


@dataclass
class SearchResult:
    """The best candidate, its score, the best score after each generation and the uniform schedule's score."""

    best: Candidate
    score: float
    uniform_score: float
    initial_best_score: float
    history: list[float] = field(default_factory=list)
    evaluated: int = 0


def uniform_candidate(steps: int, grid_points: int) -> Candidate:
    """N grid points evenly spaced from the lowest to the top one (the DDIM / DPM-Solver 'time uniform' start)."""
    points = torch.linspace(0, grid_points - 1, steps, dtype=torch.float64).round().long().tolist()
    if len(set(points)) != steps:
        raise ValueError(f"{steps} steps do not fit a grid of {grid_points} points")
    return tuple(points)


class EvolutionarySearch:
    """AutoDiffusion's evolutionary search with the paper's defaults (population 50, select 10, m_prob 0.1)."""

    def __init__(self, fitness: Callable[[Tensor], float], grid: Tensor, steps: int, population: int = 50,
                 select: int = 10, mutations: int = 25, crossovers: int = 25, m_prob: float = 0.1, seed: int = 0):
        if steps < 1 or steps > len(grid):
            raise ValueError(f"steps must be in 1 .. {len(grid)}, got {steps}")
        if not 2 <= select <= population:
            raise ValueError(f"need 2 <= select <= population, got select={select}, population={population}")
        self.fitness, self.grid, self.steps = fitness, grid, steps
        self.population, self.select, self.mutations, self.crossovers = population, select, mutations, crossovers
        self.m_prob, self.rng = m_prob, random.Random(seed)
        self.top = len(grid) - 1
        self.local_span = len(grid) // 50
        self.scores: dict[Candidate, float] = {}

    def fractions(self, candidate: Candidate) -> Tensor:
        """(N,) model-time fractions, descending (the stored form of a schedule)."""
        return self.grid[list(candidate)].flip(0)

    def score(self, candidate: Candidate) -> float:
        if candidate not in self.scores:
            self.scores[candidate] = self.fitness(self.fractions(candidate))
        return self.scores[candidate]

    def random_candidate(self) -> Candidate:
        return (*sorted(self.rng.sample(range(self.top), self.steps - 1)), self.top)

    def mutate(self, parent: Candidate, prob: float) -> Candidate:
        """Replace each free point with probability `prob` by a grid point the candidate does not use.

        The paper draws the new point uniformly from the whole grid. Here half of the replacements do that and
        half draw it within `local_span` grid points of the old one (our addition: on a 1000-point grid,
        uniform draws alone rarely refine a good schedule within a few hundred evaluations).
        """
        points = list(parent[:-1])
        for i in range(len(points)):
            if self.rng.random() < prob:
                unused = set(range(self.top)).difference(points)
                if self.rng.random() < 0.5:
                    span = max(1, self.local_span)
                    near = [p for p in range(points[i] - span, points[i] + span + 1) if p in unused]
                    unused = near or unused
                points[i] = self.rng.choice(sorted(unused))
        return (*sorted(points), self.top)

    def crossover(self, a: Candidate, b: Candidate) -> Candidate | None:
        """Each position from a or b with probability 1/2; None if the child repeats a point."""
        child = sorted(x if self.rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))
        return tuple(child) if len(set(child)) == len(child) else None

    def elite(self) -> list[Candidate]:
        return sorted(self.scores, key=self.scores.get)[: self.select]

    def _children(self, make: Callable[[], Candidate | None], count: int, fresh: set[Candidate]) -> None:
        for _ in range(count * 10):  # bounded retries: duplicates and rejected crossovers are skipped
            child = make()
            if child is not None and child not in self.scores and child not in fresh:
                fresh.add(child)
                count -= 1
            if count == 0:
                return

    def initial_population(self) -> list[Candidate]:
        uniform = uniform_candidate(self.steps, len(self.grid))
        out = {uniform}
        if self.steps > 1:
            self._children(self.random_candidate, self.population // 2, out)
            self._children(lambda: self.mutate(uniform, 0.1), self.population - len(out), out)
        return [uniform, *sorted(out - {uniform})]

    def next_population(self) -> list[Candidate]:
        elite, fresh = self.elite(), set()
        self._children(lambda: self.mutate(self.rng.choice(elite), self.m_prob), self.mutations, fresh)
        self._children(lambda: self.crossover(*self.rng.sample(elite, 2)), self.crossovers, fresh)
        self._children(self.random_candidate, max(0, self.population - len(fresh)), fresh)
        return sorted(fresh)

    def run(self, generations: int = 10, log: Callable[[str], None] | None = None) -> SearchResult:
        population = self.initial_population()
        uniform_score = self.score(population[0])
        initial = min(self.score(c) for c in population)
        history = []
        for generation in range(generations):
            if generation:
                for candidate in self.next_population():
                    self.score(candidate)
            best = self.elite()[0]
            history.append(self.scores[best])
            if log:
                log(f"generation {generation + 1}/{generations}: best {self.scores[best]:.5f} "
                    f"({len(self.scores)} evaluated)")
        best = self.elite()[0]
        return SearchResult(best, self.scores[best], uniform_score, initial, history, len(self.scores))
