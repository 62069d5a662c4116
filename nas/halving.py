"""Multi-objective asynchronous successive halving: which trials earn a longer training.

Why: a short proxy cannot rank bodies (at 300 steps the seed-to-seed spread of Delta is as large as
the spread between architectures), and training every trial long wastes the budget on designs that
are clearly worse. Successive halving spends the long budgets only on the trials that did well short.

Rules (the `[halving]` table of a study, `HalvingSpec`):
- Rung k trains ``min_steps * eta**k`` steps (the stable phase of a warmup-stable-decay schedule,
  `trainers.continuation`); every evaluation branches off a short decay that is evaluated and then
  thrown away, so a promoted trial *continues* its rung k-1 training from a checkpoint instead of
  starting again.
- Asynchronous (ASHA): whenever a worker is free, a trial that is in the top ``1/eta`` of its rung
  and not yet promoted goes up one rung, before any new trial is sampled, as long as fewer than
  ``floor(n / eta)`` of the rung's n trials went up (see `promotable`). No worker waits for a rung to
  fill.
- Multi-objective order within a rung: non-dominated fronts of (gain at that rung: max, latency:
  min), and within a front larger crowding distance first (the extremes of a front first), so the
  promoted set spreads along the latency axis instead of crowding at one end. Latency is measured
  before training and does not change between rungs; only the gain is uncertain.
- Infeasible trials (a broken constraint) are never promoted; neither are duplicates (their original
  is the one that trains).
- The top rung trains `top_seeds` seeds (the continued one plus fresh trainings with the next seeds)
  and records each seed's gain and their spread; its gain is the seeds' mean.

Where the results live: the sampler's own study holds rung 0 (Optuna sees one fidelity only: every
value it learns from is a rung-0 value); rung k >= 1 results are trials of a second Optuna study in
the same storage, named `rung_study_name(main, k)`, with the same params and attributes plus the rung
history. The front shown to the user is the top rung's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search_space.errors import UserError

__all__ = ["HalvingSpec", "crowding_distance", "non_dominated_fronts", "promotion_order", "promotable", "rung_study_name"]


def rung_study_name(main: str, rung: int) -> str:
    """The Optuna study that holds rung `rung` of the run whose sampler study is `main` (rung 0 is `main`)."""
    return main if rung == 0 else f"{main}@rung{rung}"


def _int(key: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"[halving] {key} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class HalvingSpec:
    """The `[halving]` table: rung budgets, promotion rate, decay branch, seeds of the top rung."""

    min_steps: int = 100  # rung 0's steps (--steps overrides it)
    eta: int = 3  # rung k trains min_steps * eta**k steps; the top 1/eta of a rung go up
    rungs: int = 3  # how many rungs (the top one is rungs - 1)
    decay: float = 0.2  # each evaluation branches off a linear decay of ceil(decay * rung steps) steps
    top_seeds: int = 2  # seeds trained at the top rung (their spread is recorded)

    def __post_init__(self) -> None:
        _int("min_steps", self.min_steps, minimum=1)
        _int("eta", self.eta, minimum=2)
        _int("rungs", self.rungs, minimum=1)
        _int("top_seeds", self.top_seeds, minimum=1)
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay <= 1:
            raise UserError(f"[halving] decay is the decay branch's length as a fraction of the rung's steps, in (0, 1]; got {self.decay!r}")
        object.__setattr__(self, "decay", float(self.decay))

    @property
    def top(self) -> int:
        return self.rungs - 1

    def steps(self, rung: int) -> int:
        """Stable-phase steps trained by the end of rung `rung`."""
        return self.min_steps * self.eta**rung

    @property
    def all_steps(self) -> tuple[int, ...]:
        return tuple(self.steps(k) for k in range(self.rungs))

    def decay_steps(self, rung: int) -> int:
        return max(1, math.ceil(self.decay * self.steps(rung)))

    def describe(self) -> str:
        steps = ", ".join(str(s) for s in self.all_steps)
        return (f"successive halving: rungs {steps} steps (eta {self.eta}; each evaluated after a {self.decay:g} x rung decay "
                f"branch), top {self.top_seeds} seed(s)")


# -- the order within a rung ------------------------------------------------------------------------


def non_dominated_fronts(points: Sequence[tuple[float, float]]) -> list[list[int]]:
    """Indices of `points` (gain: max, latency: min) sorted into fronts, best front first.

    A point dominates another when it is no worse in both and better in one; equal points share a
    front. Quadratic, which is fine for the hundreds of trials a rung holds."""
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    while remaining:
        front = [
            i for i in remaining
            if not any(_dominates(points[j], points[i]) for j in remaining if j != i)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def crowding_distance(points: Sequence[tuple[float, float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each index in `front`: the extremes get infinity."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for axis in (0, 1):
        ordered = sorted(front, key=lambda i: (points[i][axis], i))
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[here] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def promotion_order(points: Sequence[tuple[float, float]]) -> list[int]:
    """All indices, best first: by front, then larger crowding distance, then larger gain, then index."""
    order: list[int] = []
    for front in non_dominated_fronts(points):
        crowd = crowding_distance(points, front)
        order += sorted(front, key=lambda i: (-crowd[i], -points[i][0], i))
    return order


def promotable(results: Mapping[int, tuple[float, float]], *, eta: int, taken: set[int]) -> list[int]:
    """Trials of one rung that may go up now, best first: in the top ``floor(n / eta)`` and not in
    `taken`, and only while fewer than ``floor(n / eta)`` have gone up.

    `results` maps a trial number to its (gain, latency) at this rung, for the rung's feasible,
    trained trials only; `taken` holds the trials already promoted from it (done, running or queued).

    Why the cap: plain ASHA promotes whatever is in the top 1/eta *now*, and with a multi-objective
    order the top set churns as points arrive (crowding distances change with every neighbour), so
    early promotions pile up: a CPU run promoted 21 of 32 rung-0 trials and 15 of those 21. Capping
    the count keeps "the top 1/eta continue" true at every moment, still without waiting for a rung
    to fill: a slot opens as soon as eta more trials reached the rung."""
    numbers = sorted(results)
    points = [results[n] for n in numbers]
    quota = len(numbers) // eta
    slots = quota - len(taken & set(numbers))
    if slots <= 0:
        return []
    top = [numbers[i] for i in promotion_order(points)[:quota]]
    return [n for n in top if n not in taken][:slots]
