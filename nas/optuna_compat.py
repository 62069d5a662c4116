"""Optuna glue that works the same on Optuna 4.x and 5.x: samplers, constraints, the journal lock.

Why a module of its own: these are the places where Optuna's versions differ (native
`Trial.set_constraint` arrived in 5; the multi-objective default sampler changed) or where we build on
one of its classes (the journal lock). Keeping them together means an Optuna upgrade
is checked in one file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.trial_record import Key

if TYPE_CHECKING:
    from nas.study import Study

__all__ = ["constraints_from_attrs", "flock_lock", "make_sampler", "native_constraints", "set_constraints"]


def native_constraints() -> bool:
    """True on Optuna versions with `Trial.set_constraint` (5.x)."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraints_from_attrs(trial: Any) -> list[float]:
    """The 4.x `constraints_func`: the vector the driver stored in user attrs (feasible when <= 0)."""
    return list(trial.user_attrs.get(Key.CONSTRAINTS, [0.0]))


def set_constraints(trial: Any, named: dict[str, float]) -> None:
    """Record constraints both ways: Optuna 5's `set_constraint` and the 4.x user-attr vector."""
    trial.set_user_attr(Key.CONSTRAINT_NAMES, list(named))
    trial.set_user_attr(Key.CONSTRAINTS, [float(v) for v in named.values()])
    if native_constraints():
        for key, value in named.items():
            trial.set_constraint(key, float(value))


def make_sampler(study: Study, *, seed: int, constrained: bool) -> Any:
    """The study's sampler, always explicit and seeded (Optuna 5 changed the multi-objective default)."""
    import optuna

    extra: dict[str, Any] = {}
    if constrained and not native_constraints():
        extra["constraints_func"] = constraints_from_attrs  # Optuna 4.x
    spec = study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning for multivariate/group on 4.x
        if spec.name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=spec.n_startup_trials,
                multivariate=True,
                group=True,  # the space is conditional (define-by-run)
                constant_liar=True,  # several trials are pending at once
                **extra,
            )
        if spec.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=spec.population_size, **extra)
        return optuna.samplers.RandomSampler(seed=seed)


def flock_lock(journal: Path) -> Any:
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
            self._fh: Any = None

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
