"""When the scheduler starts what: exclusive latency batches, trainings that must end within the time
limit, and the duration estimates both rest on (`nas.durations`)."""

from __future__ import annotations

import json

import pytest

from nas.driver import SearchDriver
from nas.durations import RungZeroDurations, drain_seconds, ends_in_time, promotion_seconds
from nas.study import load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output

# -- the estimates ----------------------------------------------------------------------------------


def test_promotion_estimate_scales_the_rung0_seconds_per_step_by_the_steps_it_adds():
    # Rung 0: 900 stable + 180 decay steps in 54 s (0.05 s/step), evaluated in 3 s. A promotion that
    # continues from 900 to 2700 and then decays 540 steps adds 1800 + 540 = 2340 steps: 117 s + 3 s.
    kw = dict(train_seconds=54.0, eval_seconds=3.0, rung0_steps=900, rung0_decay_steps=180, to_steps=2700, decay_steps=540)
    assert promotion_seconds(from_steps=900, **kw) == pytest.approx(120.0)
    # The second seed trains from scratch: 2700 + 540 steps = 162 s, plus the evaluation.
    assert promotion_seconds(from_steps=0, **kw) == pytest.approx(165.0)


def test_rung0_estimate_is_the_median_rate_per_size_and_none_before_any_training():
    d = RungZeroDurations()
    assert d.estimate(2.0) is None and d.estimate() is None
    for seconds, macs_g in ((20.0, 1.0), (40.0, 3.0), (90.0, 2.0)):  # 10, 10 and 30 s per (GMACs + 1)
        d.note(seconds=seconds, macs_g=macs_g)
    assert d.estimate(4.0) == pytest.approx(50.0)
    assert d.estimate() == pytest.approx(40.0)  # the median training
    d.note(seconds=float("nan"), macs_g=1.0)  # a failed measurement is not a duration
    assert d.estimate(4.0) == pytest.approx(50.0)


def test_a_training_starts_only_if_it_ends_within_the_limit_and_the_drain():
    assert ends_in_time(30.0, left=None)
    assert ends_in_time(30.0, left=31.0) and not ends_in_time(30.0, left=29.0)
    assert ends_in_time(None, left=1.0), "the first trainings have no estimate yet: they start"
    assert ends_in_time(10.0, left=None, drain=12.0) and not ends_in_time(13.0, left=None, drain=12.0)
    assert not ends_in_time(None, left=None, drain=100.0), "an unknown duration would hold up the latency batch"
    assert drain_seconds([105.0, 130.0], now=100.0) == pytest.approx(30.0)
    assert drain_seconds([105.0, None], now=100.0) == 0.0
    assert drain_seconds([], now=100.0) == 0.0


# -- the scheduler ----------------------------------------------------------------------------------


class _Recording(FakeExecutor):
    """A fake that knows which trainings the scheduler has not collected yet when a batch is timed."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.uncollected: set[int] = set()
        self.trainings_at_latency: list[int] = []

    def submit_train(self, **kw) -> int:
        ref = super().submit_train(**kw)
        self.uncollected.add(ref)
        return ref

    def get(self, ref: int, *, timeout_s: float | None = None) -> object:
        self.uncollected.discard(ref)
        return super().get(ref, timeout_s=timeout_s)

    def submit_latency(self, **kw) -> int:
        self.trainings_at_latency.append(len(self.uncollected))
        return super().submit_latency(**kw)


def _fake(train_seconds: float = 0.1) -> _Recording:
    def train(payload: dict) -> dict:
        out = fake_training_output(payload, payload["arch"]["channels"] / 10)
        out["result"]["train_seconds"] = train_seconds
        return out

    return _Recording(train=train, latency_ms=lambda arch: [float(arch["channels"])], device_name=FAKE_DEVICE)


def test_a_latency_batch_is_timed_only_when_no_training_is_in_flight(tmp_path, tiny_data):
    # 2 workers and more trials than one batch asks: later batches are wanted while trainings run.
    study = load_study("smoke").with_overrides(budget__trials=20, budget__workers=2, **tiny_data)
    fake = _fake()
    assert SearchDriver(study, run_dir=tmp_path / "run", device="cpu", progress=False, executor_factory=fake.factory).run() == 0
    assert len(fake.trainings_at_latency) >= 2, "the run needed more than one batch"
    assert fake.trainings_at_latency == [0] * len(fake.trainings_at_latency)


def test_a_training_expected_to_end_after_the_time_limit_is_not_started(tmp_path, tiny_data, capsys):
    # Every training reports 600 s; the limit is 1 minute. The first pair starts (nothing is known
    # yet); after it, every training is expected to take far longer than what is left, so the run
    # stops at once instead of starting work that would end minutes after the limit.
    study = load_study("smoke").with_overrides(budget__trials=6, budget__workers=2, budget__minutes=1.0, **tiny_data)
    run_dir = tmp_path / "run"
    fake = _fake(train_seconds=600.0)
    assert SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run() == 0
    assert len(fake.payloads) == 2
    out = capsys.readouterr()
    states = _states(run_dir)
    assert states.count("COMPLETE") == 2 and "RUNNING" not in states
    assert states.count("WAITING") >= 1, "asked trials are re-queued for a rerun"
    assert "too few for the next training to end in time" in out.out + out.err


def _states(run_dir) -> list[str]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).get_trials()]
