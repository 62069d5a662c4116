"""`nas.optuna_compat` on the installed Optuna, and no Optuna private name anywhere else.

Why: the module promises that an Optuna upgrade is checked in one file. Its functions that reach
past Optuna's public API (a study's storage, a trial's storage id) are run here against the real
thing, and the project is grepped for those private names outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from nas.optuna_compat import frozen_trial, set_frozen_user_attr, storage_of

REPO = Path(__file__).resolve().parents[2]
#: Private attributes of Optuna objects the project has used or might: only optuna_compat may touch them.
PRIVATE = re.compile(r"\.(_storage|_trial_id|_study_id|_cached_frozen_trial|_thread_local|_backend|_optimize_lock)\b"
                     r"|\boptuna(\.\w+)*\._\w+")
SCANNED = ("nas", "reports", "rtsr", "search_space", "trainers", "benchmarks")


@pytest.fixture()
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def test_storage_of_opens_a_second_study_beside_the_first(study):
    storage = storage_of(study)
    assert isinstance(storage, BaseStorage)
    other = optuna.create_study(study_name="beside", storage=storage, directions=["maximize", "minimize"])
    assert {s.study_name for s in optuna.get_all_study_summaries(storage)} == {study.study_name, other.study_name}


def test_frozen_trial_reads_a_live_trial(study):
    study.ask()
    trial = study.ask()
    trial.set_user_attr("k", 1)
    frozen = frozen_trial(study, trial)
    assert (frozen.number, frozen.state, frozen.user_attrs) == (1, TrialState.RUNNING, {"k": 1})


def test_set_frozen_user_attr_writes_a_running_trial_then_it_can_fail(study):
    study.ask()
    (running,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    set_frozen_user_attr(study, running, "reason", "driver died")
    study.tell(running.number, state=TrialState.FAIL)
    (failed,) = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and failed.user_attrs == {"reason": "driver died"}


def private_optuna_uses(root: Path = REPO) -> list[str]:
    found = []
    for package in SCANNED:
        for path in sorted((root / package).rglob("*.py")):
            if path == root / "nas" / "optuna_compat.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if PRIVATE.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_optuna_private_name_outside_optuna_compat():
    assert private_optuna_uses() == []


def test_the_grep_sees_a_private_use(tmp_path):
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / "x.py").write_text("s = study._storage\nfrom optuna.storages._rdb import models\n")
    assert len(private_optuna_uses(tmp_path)) == 2
