"""`[budget] minutes` / --time-limit: nothing new starts after the limit (nor what would end after it:
tests/nas/test_scheduling.py), running trainings are
recorded, asked trials are re-queued, and a rerun finishes the budget without losing anything."""

from __future__ import annotations

import time

from nas.driver import SearchDriver
from nas.study import load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output


def _fake(seconds_per_training: float) -> FakeExecutor:
    def train(payload: dict) -> dict:
        time.sleep(seconds_per_training)
        return fake_training_output(payload, payload["arch"]["channels"] / 10)

    return FakeExecutor(train=train, latency_ms=lambda arch: [float(arch["channels"])], device_name=FAKE_DEVICE)


def _trials(run_dir):
    import json

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_time_limit_stops_starting_work_and_a_rerun_completes_the_budget(tmp_path, tiny_data):
    # 0.5 s trainings (the fake runs each as it is submitted), 2 workers, a 0.75 s limit from the start
    # of the loop: the first pair is submitted at once and has taken 1 s when the limit is next
    # checked, so the limit stops a 6-trial budget early, after recording what ran.
    study = load_study("smoke").with_overrides(budget__trials=6, budget__workers=2, budget__minutes=0.0125, **tiny_data)
    run_dir = tmp_path / "run"
    fake = _fake(0.5)
    assert SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run() == 0
    first = _trials(run_dir)
    complete = [t for t in first if t.state.name == "COMPLETE"]
    assert 1 <= len(complete) < 6, "the limit stopped the run early, after recording what ran"
    assert not [t for t in first if t.state.name == "RUNNING"], "nothing is left running"
    trained_before = len(fake.payloads)
    assert trained_before == len(complete)

    fake2 = _fake(0.0)
    unlimited = study.with_overrides(budget__minutes=1000.0)
    assert SearchDriver(unlimited, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake2.factory).run() == 0
    final = [t for t in _trials(run_dir) if t.state.name == "COMPLETE"]
    assert len(final) == 6
    assert {t.number for t in complete} <= {t.number for t in final}
    assert len(fake2.payloads) == 6 - len(complete), "no finished trial was trained again"
