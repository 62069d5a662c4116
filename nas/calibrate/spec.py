"""What one calibration trains: panel x budgets x seeds, and the identity a rerun must match.

Budgets: the study's halving rungs (`HalvingSpec.all_steps`; a study without `[halving]` has its
`[proxy] steps` as the one rung) and a long budget, by default 10 x the rung that decides the last
promotion (rung top-1; the only rung without halving). Each arch trains ONE warmup-stable-decay
trajectory (seed = the study's seed) whose plan's horizon is the long budget, evaluated at every
budget by continuing from the previous budget's stable checkpoint. The `noise` archs also train the
long budget from scratch with seed + 1: the two long seeds give the noise ceiling.

Note: the plan's horizon is the long budget, not the search's top rung, so the patch sampler (told
the horizon) draws other batches than a search does at the same step; lr schedule and decay
branches are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search_space.configio import content_hash
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from nas.calibrate.panel import PanelArch
    from nas.study import Study
    from trainers.continuation import WSDPlan
    from trainers.recipe import Recipe

__all__ = ["FORMAT", "LONG_FACTOR", "CalibrationSpec", "Task", "budget_label", "default_rungs", "noise_subset"]

FORMAT = "rtsr-nas calibrate v1"
#: The long budget's default: this many times the rung that decides the last promotion.
LONG_FACTOR = 10
DEFAULT_DECAY = 0.2  # a study without [halving]: the decay branch of HalvingSpec's default


@dataclass(frozen=True)
class Task:
    """One training: `name` at `steps` with `seed`, continuing the checkpoint of `after` steps (or from scratch)."""

    name: str
    steps: int
    seed: int
    after: int | None  # stable steps of the checkpoint this continues; None: from scratch

    @property
    def key(self) -> str:
        return f"{self.name}/s{self.seed}-{self.steps}"


def default_rungs(study: Study) -> tuple[tuple[int, ...], float]:
    """(rung steps, decay fraction) of the study: its [halving] rungs, else [proxy] steps alone."""
    if study.halving is None:
        return (study.proxy.steps,), DEFAULT_DECAY
    return study.halving.all_steps, study.halving.decay


def noise_subset(panel: Sequence[PanelArch], k: int) -> tuple[str, ...]:
    """`k` archs spread evenly over MACs: the sampled ones (the headline group) when there are k of
    them, else the whole panel (sampled archs first, then presets)."""
    if k < 0:
        raise UserError(f"--noise-subset must be >= 0, got {k}")
    if k > len(panel):
        raise UserError(f"--noise-subset {k} is larger than the panel ({len(panel)} archs); pass at most {len(panel)}")
    sampled = [p for p in panel if p.source == "sampled"]
    ordered = sorted(sampled if len(sampled) >= k else panel, key=lambda p: (p.source != "sampled", p.macs, p.name))
    if k == 0:
        return ()
    picks = [ordered[round(i * (len(ordered) - 1) / max(k - 1, 1))] for i in range(k)] if k > 1 else [ordered[len(ordered) // 2]]
    names = list(dict.fromkeys(p.name for p in picks))
    for p in ordered:  # rounding may repeat an index on small panels: fill up in order
        if len(names) >= k:
            break
        if p.name not in names:
            names.append(p.name)
    return tuple(sorted(names, key=[p.name for p in panel].index))


@dataclass(frozen=True)
class CalibrationSpec:
    """Panel, budgets and seeds of one calibration (see the module docstring)."""

    study: Study
    panel: tuple[PanelArch, ...]
    rungs: tuple[int, ...]
    long_steps: int
    decay: float
    noise: tuple[str, ...]
    device_kind: str
    panel_seed: int

    def __post_init__(self) -> None:
        decider = self.rungs[self.decider]
        if self.long_steps <= self.rungs[-1]:
            raise UserError(f"--long-steps {self.long_steps} must be above the top rung ({self.rungs[-1]} steps); "
                            f"the default is {LONG_FACTOR} x {decider}")
        unknown = [n for n in self.noise if n not in self.names]
        if unknown:
            raise UserError(f"noise subset names {unknown} are not in the panel")

    @classmethod
    def build(cls, study: Study, *, panel: Sequence[PanelArch], long_steps: int | None, noise: int, device_kind: str,
              panel_seed: int) -> CalibrationSpec:
        rungs, decay = default_rungs(study)
        decider = rungs[max(0, len(rungs) - 2)]
        return cls(study=study, panel=tuple(panel), rungs=rungs, long_steps=long_steps or LONG_FACTOR * decider, decay=decay,
                   noise=noise_subset(panel, noise), device_kind=device_kind, panel_seed=panel_seed)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.panel)

    @property
    def budgets(self) -> tuple[int, ...]:
        """Every evaluated budget in stable steps: the rungs, then the long one."""
        return (*self.rungs, self.long_steps)

    @property
    def decider(self) -> int:
        """Index of the rung that decides the last promotion (top-1; 0 with one rung)."""
        return max(0, len(self.rungs) - 2)

    @property
    def seed(self) -> int:
        return self.study.seed

    def arch(self, name: str) -> PanelArch:
        return self.panel[self.names.index(name)]

    def plan(self, recipe: Recipe) -> WSDPlan:
        """The warmup-stable-decay plan of every training: warm-up from rung 0, horizon at the long budget."""
        from trainers.continuation import WSDPlan

        return WSDPlan.for_rungs(recipe, min_steps=self.rungs[0], top_steps=self.long_steps, decay=self.decay)

    def tasks(self) -> list[Task]:
        """Every training, chains in budget order, then the noise seeds."""
        out = []
        for name in self.names:
            previous = None
            for steps in self.budgets:
                out.append(Task(name, steps, self.seed, previous))
                previous = steps
        out += [Task(name, self.long_steps, self.seed + 1, None) for name in self.noise]
        return out

    def identity(self) -> JSONDict:
        """Everything a resumed run must share (not workers, executor or where results go)."""
        return {
            "format": FORMAT,
            "study": self.study.identity_dict(),
            "rungs": list(self.rungs),
            "long_steps": self.long_steps,
            "decay": self.decay,
            "seeds": [self.seed, self.seed + 1],
            "noise": list(self.noise),
            "panel_seed": self.panel_seed,
            "panel": [{"name": p.name, "source": p.source, "arch_hash": p.arch.arch_hash} for p in self.panel],
            "device_kind": self.device_kind,
        }

    @property
    def identity_hash(self) -> str:
        return content_hash(self.identity())

    def describe(self) -> str:
        labels = ", ".join(budget_label(self, i) for i in range(len(self.budgets)))
        return (f"budgets: {labels} (stable steps, each evaluated after a {self.decay:g} x budget decay branch); "
                f"seed {self.seed}; long budget also with seed {self.seed + 1} on {len(self.noise)} archs "
                f"({', '.join(self.noise) or 'none'})")


def budget_label(spec: CalibrationSpec, index: int) -> str:
    """'rung 1 (300 steps)' or 'long (3000 steps)'."""
    if index >= len(spec.rungs):
        return f"long ({spec.long_steps} steps)"
    return f"rung {index} ({spec.rungs[index]} steps)"
