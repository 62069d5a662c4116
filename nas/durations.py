"""How long the next training will take: what lets a run plan around its time limit and its latency batches.

Two decisions of the scheduler need a duration before a training starts:

- a run with `[budget] minutes` starts a training only if it is expected to end within the limit,
  so the limit bounds the run's wall time instead of only the moment nothing new starts (the default
  study's 26-minute limit once let 2700-step promotions started at minute 25 run to minute 30.5);
- while a latency batch waits for the running trainings to end (timing is exclusive), a free worker
  may start a training that is expected to end before the last running one does: that core would
  otherwise sit idle for the rest of the drain (one drain behind a long promotion took 6 minutes).

The estimates are deliberately simple and measured in this run:

- a promotion: its own rung-0 training's seconds per step times the steps it adds (continuing from
  the checkpoint, plus its decay branch), plus one evaluation as long as rung 0's;
- a rung-0 training: the median over this run's finished rung-0 trainings of seconds per
  (deploy GMACs + 1), times the new trial's (GMACs + 1). Training runs the deploy form (online
  re-parameterization), so its cost grows with the deploy MACs; the `+ 1` stands for what every
  trial pays whatever its size (data, evaluation, fusion). No estimate before the first one ends.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["RungZeroDurations", "drain_seconds", "ends_in_time", "promotion_seconds"]

#: GMACs-equivalent of the fixed cost of a trial (see the module docstring).
FIXED_GMACS = 1.0


@dataclass
class RungZeroDurations:
    """The rung-0 (or single-fidelity) trainings finished in this run: wall seconds and deploy GMACs."""

    seconds: list[float] = field(default_factory=list)
    per_size: list[float] = field(default_factory=list)  # seconds / (GMACs + FIXED_GMACS)

    def note(self, *, seconds: float, macs_g: float) -> None:
        """One finished training: its seconds (training and evaluation) and its deploy GMACs."""
        if math.isfinite(seconds) and seconds > 0 and math.isfinite(macs_g) and macs_g >= 0:
            self.seconds.append(seconds)
            self.per_size.append(seconds / (macs_g + FIXED_GMACS))

    def estimate(self, macs_g: float | None = None) -> float | None:
        """Expected seconds of a training of a `macs_g` network (None: the median training so far);
        None before any training finished."""
        if not self.seconds:
            return None
        if macs_g is None:
            return statistics.median(self.seconds)
        return statistics.median(self.per_size) * (macs_g + FIXED_GMACS)


def promotion_seconds(*, train_seconds: float, eval_seconds: float, rung0_steps: int, rung0_decay_steps: int,
                      from_steps: int, to_steps: int, decay_steps: int) -> float:
    """Expected seconds of a promotion that trains from stable step `from_steps` (0: from scratch) to
    `to_steps` and then its `decay_steps` branch, given its rung-0 training (`rung0_steps` stable plus
    `rung0_decay_steps` decay in `train_seconds`, evaluated in `eval_seconds`)."""
    per_step = train_seconds / max(1, rung0_steps + rung0_decay_steps)
    return per_step * (to_steps - from_steps + decay_steps) + eval_seconds


def ends_in_time(expected: float | None, *, left: float | None, drain: float | None = None) -> bool:
    """Whether a training expected to take `expected` seconds (None: unknown) may start now.

    `left`: seconds to the time limit (None: no limit); an unknown duration is given the benefit of
    the doubt, since the first trainings of a run have nothing to be estimated from. `drain`: seconds
    until the running trainings should have ended while a latency batch waits for them (None: no
    batch waits); an unknown duration never fills a drain, which would delay the batch."""
    if drain is not None and (expected is None or expected > drain):
        return False
    return left is None or expected is None or expected <= left


def drain_seconds(expected_ends: Iterable[float | None], *, now: float) -> float:
    """Seconds until the last running training should end (`expected_ends`: their expected end
    times; 0 when one of them has no estimate, so nothing is started beside it)."""
    ends = list(expected_ends)
    if not ends or any(end is None for end in ends):
        return 0.0
    return max(end for end in ends if end is not None) - now
