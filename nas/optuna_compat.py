"""Optuna glue that works the same on Optuna 4.x and 5.x: samplers, constraints, the journal lock.

Why a module of its own: these are the places where Optuna's versions differ (native
`Trial.set_constraint` arrived in 5; the multi-objective default sampler changed), where we build on
one of its classes (the journal lock), or where we reach past its public API (a study's storage, a
trial's storage id: `storage_of`, `frozen_trial`, `set_frozen_user_attr`). Keeping them together means
an Optuna upgrade is checked in one file: `tests/nas/test_optuna_compat.py` runs each on the installed
Optuna, and a test greps the project for Optuna private names anywhere else.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nas.trial_record import Key

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.storages.journal import JournalFileOpenLock
    from optuna.trial import FrozenTrial

    from nas.study import Study

__all__ = ["constraints_from_attrs", "flock_lock", "frozen_trial", "make_sampler", "native_constraints", "set_constraints",
           "set_frozen_user_attr", "storage_of"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study lives in (to open the rung studies beside it). Optuna has no public accessor."""
    return study._storage


def frozen_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The stored record of a live trial, read once by its storage id (`study.get_trials()[n]`
    would copy the whole trial list, once per trial: quadratic in a run)."""
    return study._storage.get_trial(trial._trial_id)


def set_frozen_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: object) -> None:
    """Set a user attribute of a stored trial that is still RUNNING but has no live `Trial` object in
    this process (a trial a killed driver left behind: its reason is written before it is failed)."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def native_constraints() -> bool:
    """True on Optuna versions with `Trial.set_constraint` (5.x)."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraints_from_attrs(trial: FrozenTrial) -> list[float]:
    """The 4.x `constraints_func`: the vector the driver stored in user attrs (feasible when <= 0)."""
    return list(trial.user_attrs.get(Key.CONSTRAINTS, [0.0]))


def set_constraints(trial: optuna.Trial, named: dict[str, float]) -> None:
    """Record constraints both ways: Optuna 5's `set_constraint` and the 4.x user-attr vector."""
    trial.set_user_attr(Key.CONSTRAINT_NAMES, list(named))
    trial.set_user_attr(Key.CONSTRAINTS, [float(v) for v in named.values()])
    if native_constraints():
        for key, value in named.items():
            trial.set_constraint(key, float(value))  # type: ignore[attr-defined,unused-ignore]  # Optuna >= 5


def make_sampler(spec: Study, *, seed: int, constrained: bool) -> optuna.samplers.BaseSampler:
    """The study's sampler, always explicit and seeded (Optuna 5 changed the multi-objective default)."""
    import optuna

    extra: dict[str, Any] = {}
    if constrained and not native_constraints():
        extra["constraints_func"] = constraints_from_attrs  # Optuna 4.x
    sampler = spec.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning for multivariate/group on 4.x
        if sampler.name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=sampler.n_startup_trials,
                multivariate=True,
                group=True,  # the space is conditional (define-by-run)
                constant_liar=True,  # several trials are pending at once
                **extra,
            )
        if sampler.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=sampler.population_size, **extra)
        return optuna.samplers.RandomSampler(seed=seed)


def flock_lock(journal: Path) -> JournalFileOpenLock:
    """A journal write lock that the kernel releases when its holder dies.

    Optuna's default symlink/open-file locks stay behind when a writer is SIGKILLed mid-append, and
    the next writer then waits out their 30 s grace period. `flock` has no such state: a killed
    driver's lock is gone at once, so a resume starts immediately. (Local file systems; on NFS use
    an RDB through --storage.)

    It subclasses Optuna's public `JournalFileOpenLock` (the documented kind of `lock_obj` for
    `JournalFileBackend`) and replaces its acquire/release; `tests/nas/test_journal_lock.py` checks
    that contract on the installed Optuna (pinned to < 6 in pyproject.toml).
    """
    import fcntl

    from optuna.storages.journal import JournalFileOpenLock

    class _FlockLock(JournalFileOpenLock):
        def __init__(self, path: Path) -> None:  # noqa: D107 - the parent's state (a lock path, a grace period) is unused
            self._path = path
            self._fh: IO[str] | None = None

        def acquire(self) -> bool:
            self._fh = open(self._path, "a+")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            return True

        def release(self) -> None:
            if self._fh is not None:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                self._fh.close()
                self._fh = None

    return _FlockLock(journal.with_name(journal.name + ".flock"))
