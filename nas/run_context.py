"""What the scheduler and its helpers share during a run: the run's context and the trials in hand.

Why a module of its own: `nas.scheduler`, `nas.promotion`, `nas.trial_endings` and `nas.progress`
all read these two records; defined in the scheduler they made each of those modules import the
scheduler back (an import circle that existed only for types). This module imports nothing of
theirs, so every one of them can import it.

Words: `spec` is our study file (`nas.study.Study`), `optuna_study` the Optuna study it runs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import optuna

    from nas.device import DeviceKind
    from nas.executor import Executor, Opaque
    from nas.latency import LatencyCache, LatencyProtocol
    from nas.trial_record import TrialStatus
    from nas.study import Study
    from nas.task import JSONDict
    from search_space.arch import ArchConfig
    from trainers.proxy import ProxyData
    from trainers.recipe import Recipe

__all__ = ["PendingTrial", "RunContext", "RunLog"]


class RunLog(Protocol):
    """What a run shows while it works (`nas.progress.TrialLog`), as the scheduler uses it.

    A protocol rather than the class: `nas.progress` prints `PendingTrial`s, so naming its class
    here would make the two modules import each other."""

    def print(self, text: str) -> None: ...
    def note_best(self, gain: float) -> None: ...
    def open_bar(self, *, done: int, total: int) -> None: ...
    def trial(self, p: PendingTrial, *, status: TrialStatus | str, gain: float | None, extra: JSONDict, done: int) -> None: ...


@dataclass
class RunContext:
    """What the scheduler works with, opened by the driver: the study, the data, the device."""

    spec: Study
    run_dir: Path
    optuna_study: optuna.Study
    executor: Executor
    data: ProxyData  # the driver's own copy (eval-time ablation arms are evaluated here)
    data_ref: Opaque  # the executor's handle of the same data
    recipes: dict[str, Recipe]  # recipe name/path -> Recipe ([proxy] recipe, plus each ablation arm's)
    kind: DeviceKind
    device_name: str
    protocol: LatencyProtocol
    cache: LatencyCache
    slot: Opaque  # the executor's latency slot
    budget_ms: float | None
    log: RunLog  # nas.progress.TrialLog


@dataclass
class PendingTrial:
    """A trial the scheduler asked and has not told yet."""

    trial: optuna.Trial
    arch: ArchConfig  # what is trained
    started: float
    recipe: Recipe
    seed: int = 0
    eval_dtype: str = "float32"
    deploy_arch: ArchConfig | None = None  # what is deployed, counted and timed (bias removal may differ from `arch`)
    attrs: JSONDict = field(default_factory=dict)  # the trial's record so far

    def __post_init__(self) -> None:
        if self.deploy_arch is None:
            self.deploy_arch = self.arch

    @property
    def deployed(self) -> ArchConfig:
        """`deploy_arch`, never None (set from `arch` when not given)."""
        return self.arch if self.deploy_arch is None else self.deploy_arch
