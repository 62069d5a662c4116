"""Opening a run's Optuna study and putting its fixed trials in: storage, sampler, warm starts, ablations, orphans.

Why a module of its own: this is the one place the driver talks to Optuna before the search starts,
so what a resumed run finds in storage (trials a killed driver left RUNNING, presets and ablation
pairs already queued) is decided here, each step safe to repeat on resume. The rung studies of
successive halving are opened beside this one by `nas.promotion.RungLadder`, from the same storage.

Words: `spec` is our study file (`nas.study.Study`), `optuna_study` the Optuna study it runs in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nas.storage import open_rdb_storage, redact
from nas.trial_record import Key, retry_attrs
from search_space.errors import UserError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, RDBStorage

    from nas.study import Study

__all__ = ["connect_storage", "enqueue_fixed_trials", "open_optuna_study", "recover_orphans"]


def connect_storage(storage_url: str | None) -> RDBStorage | None:
    """The `--storage` database, connected now (None for the default journal); a UserError that
    names the fix when the URL, the server, the password or the driver is wrong."""
    if storage_url is None:
        return None
    storage = open_rdb_storage(storage_url)
    # loading the data can take minutes: hold no idle connection through it (a server or a
    # firewall may drop it); the engine reconnects when the study is opened
    storage.engine.dispose()
    return storage


def open_optuna_study(spec: Study, *, name: str, journal_path: Path, storage_url: str | None,
                      rdb_storage: RDBStorage | None, constrained: bool) -> optuna.Study:
    """Create or load the run's Optuna study (`name` from run.json): in the journal file, or in the
    connected `--storage` database (`rdb_storage`, from `connect_storage(storage_url)`).

    A database that fails here is a UserError with the password redacted; a journal's error is raised
    as it is (a file problem, already readable)."""
    import optuna

    from nas.optuna_compat import flock_lock, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage: BaseStorage
    if storage_url is None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(journal_path), lock_obj=flock_lock(journal_path)))
    else:
        assert rdb_storage is not None, "connect_storage(storage_url) first"
        storage = rdb_storage
    sampler = make_sampler(spec, seed=spec.seed, constrained=constrained)
    try:
        optuna_study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            directions=["maximize", "minimize"],
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - a database that dropped mid-way surfaces as many SQLAlchemy types
        if storage_url is None:
            raise
        raise UserError(f"--storage {redact(storage_url)}: cannot open the study "
                        f"({type(exc).__name__}: {redact(' '.join(str(exc).split()))})") from None
    obj = spec.objectives
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning on Optuna < 5
        optuna_study.set_metric_names([obj.gain, f"latency_{obj.latency}"])
    return optuna_study


def recover_orphans(optuna_study: optuna.Study, *, say: Callable[[str], None]) -> None:
    """Trials RUNNING in storage belong to a driver that died: fail them and queue them again."""
    from optuna.trial import TrialState

    from nas.optuna_compat import set_frozen_user_attr

    orphans = optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in orphans:
        reason = "the driver stopped while this trial ran (killed or interrupted); re-queued"
        set_frozen_user_attr(optuna_study, t, Key.FAILURE_REASON, reason)
        set_frozen_user_attr(optuna_study, t, Key.REQUEUED, True)
        optuna_study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            optuna_study.enqueue_trial(dict(t.params), user_attrs=retry_attrs(t.number, t.user_attrs))
    if orphans:
        say(f"resume: {len(orphans)} trial(s) left running by the previous driver were failed and re-queued "
            f"({', '.join(str(t.number) for t in orphans)})")


def enqueue_fixed_trials(optuna_study: optuna.Study, spec: Study) -> None:
    """An ablation's (arm, seed) pairs, or a search's warm-start presets: queued once per run (a
    study user attr records that they were, so a resumed run does not queue them again)."""
    if spec.ablation is not None:
        _enqueue_ablation(optuna_study, spec)
    else:
        _enqueue_warm_start(optuna_study, spec)


def _enqueue_warm_start(optuna_study: optuna.Study, spec: Study) -> None:
    from search_space.presets import get_preset
    from search_space.ranges import arch_to_params

    if optuna_study.user_attrs.get("warm_start_enqueued"):
        return
    for name in spec.warm_start.presets:
        params = arch_to_params(get_preset(name).arch, spec.search)
        optuna_study.enqueue_trial(params, user_attrs={Key.PRESET: name}, skip_if_exists=True)
    optuna_study.set_user_attr("warm_start_enqueued", list(spec.warm_start.presets))


def _enqueue_ablation(optuna_study: optuna.Study, spec: Study) -> None:
    """Every (arm, seed) pair once, as a fixed trial (a resumed run finds them already queued)."""
    ab = spec.ablation
    assert ab is not None
    if optuna_study.user_attrs.get("ablation_enqueued"):
        return
    for arm, seed in ab.trial_order():
        optuna_study.enqueue_trial({"arm": arm, "seed": seed}, user_attrs={Key.ARM: arm, Key.SEED: seed})
    optuna_study.set_user_attr("ablation_enqueued", [[arm, seed] for arm, seed in ab.trial_order()])
