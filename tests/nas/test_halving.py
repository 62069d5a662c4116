"""Successive halving: the promotion order (by hand-checked cases) and the scheduler's rungs with an
in-process fake executor: what is promoted, what each promotion continues, what Optuna is told,
and that a run killed at any moment resumes without losing or retraining a finished rung."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.driver import SearchDriver
from nas.halving import HalvingSpec, crowding_distance, non_dominated_fronts, promotable, promotion_order, rung_study_name
from nas.study import Study, load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output
from nas.trial_record import Key
from search_space.errors import UserError

# -- the order within a rung --------------------------------------------------------------------------


def test_fronts_follow_dominance_by_hand():
    #        0: best gain, slow   1: dominated by 0   2: fast, low gain   3: dominated by 2   4: equal to 2
    points = [(1.0, 10.0), (0.5, 12.0), (0.2, 1.0), (0.1, 2.0), (0.2, 1.0)]
    assert non_dominated_fronts(points) == [[0, 2, 4], [1, 3]]


def test_crowding_puts_the_extremes_first_and_the_crowded_middle_last():
    # one front of four: (gain, latency) rising together; the middle points are 1 and 2
    points = [(0.0, 1.0), (0.1, 2.0), (0.2, 2.5), (1.0, 10.0)]
    crowd = crowding_distance(points, [0, 1, 2, 3])
    assert math.isinf(crowd[0]) and math.isinf(crowd[3])
    # point 1: gain neighbours 0.0 and 0.2 (range 1.0) -> 0.2; latency 1.0 and 2.5 (range 9) -> 1.5/9
    assert crowd[1] == pytest.approx(0.2 + 1.5 / 9)
    assert crowd[2] == pytest.approx(0.9 + 8.0 / 9)
    assert promotion_order(points) == [3, 0, 2, 1]  # infinities by gain, then the less crowded middle


def test_promotable_takes_the_top_over_eta_and_skips_what_is_taken():
    results = {10: (0.5, 5.0), 11: (0.4, 6.0), 12: (0.1, 1.0), 13: (0.0, 9.0), 14: (-1.0, 9.5), 15: (0.3, 7.0)}
    # fronts: {10, 12} then {11} then {15} then {13} then {14}; quota 6 // 3 = 2
    assert promotable(results, eta=3, taken=set()) == [10, 12]
    assert promotable(results, eta=3, taken={10}) == [12]
    assert promotable(results, eta=3, taken={10, 12}) == []
    assert promotable({1: (0.0, 1.0), 2: (0.1, 1.0)}, eta=3, taken=set()) == []  # fewer than eta: nothing yet
    # the quota counts what already went up, even a trial that has since left the top
    assert promotable(results, eta=3, taken={13, 14}) == []
    assert promotable(results, eta=3, taken={13}) == [10]
    assert promotable({**results, 16: (0.9, 0.5), 17: (-2.0, 9.9), 18: (-2.0, 9.9)}, eta=3, taken={13}) == [16, 10]


def test_halving_spec_rungs_and_errors():
    spec = HalvingSpec(min_steps=100, eta=3, rungs=3, decay=0.2)
    assert spec.all_steps == (100, 300, 900) and spec.top == 2
    assert [spec.decay_steps(k) for k in range(3)] == [20, 60, 180]
    assert rung_study_name("s", 0) == "s" and rung_study_name("s", 2) == "s@rung2"
    with pytest.raises(UserError, match="decay"):
        HalvingSpec(decay=0.0)
    with pytest.raises(UserError, match="eta"):
        HalvingSpec(eta=1)


# -- the scheduler ------------------------------------------------------------------------------------

STEPS = (10, 30, 90)


def _gain(payload: dict) -> float:
    """Grows with channels and with the steps trained; seed 1 is 0.001 dB better than seed 0."""
    arch = payload["arch"]
    return round(arch["channels"] / 10 + arch["blocks"] / 7 + payload["rung"]["rung_steps"] / 1000 + payload["seed"] / 1000, 6)


def _latency(arch: dict) -> float:
    return float(arch["channels"] * 3 + arch["blocks"] * 5 + arch["down_factor"])


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in the driver catches it, so nothing is tidied up."""


def _fake(kill_at: int | None = None) -> FakeExecutor:
    calls = {"n": 0}

    def train(payload: dict) -> dict:
        calls["n"] += 1
        if kill_at is not None and calls["n"] == kill_at:
            raise _Killed
        return fake_training_output(payload, _gain(payload))

    return FakeExecutor(train=train, latency_ms=lambda arch: [_latency(arch)], device_name=FAKE_DEVICE)


def _study(data: dict[str, str], trials: int = 9, **constraints) -> Study:
    """A halving study over a wide space; `data`: the `tiny_data` overrides."""
    base = load_study("smoke").with_overrides(**data).to_dict()
    base.update(name="halving-test")
    base["search"]["channels"] = {"low": 8, "high": 64, "step": 4}
    base["search"]["blocks"] = {"low": 0, "high": 4}
    base["proxy"]["recipe"] = "proxy_wsd"
    base["sampler"] = {"name": "random"}
    base["warm_start"] = {"presets": []}
    base["budget"] = {"trials": trials, "workers": 2, "max_retries": 1}
    base["constraints"] = {"latency_ms": {"cpu": 1e9, "cuda": 10.0}, "macs_g": None, "train_infeasible": False, **constraints}
    base["constraints"] = {k: v for k, v in base["constraints"].items() if v is not None}
    base["halving"] = {"min_steps": STEPS[0], "eta": 3, "rungs": 3, "decay": 0.2, "top_seeds": 2}
    return Study.from_dict(base)


def _run(study: Study, run_dir: Path, fake: FakeExecutor) -> int:
    return SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run()


def _studies(run_dir: Path) -> dict[int, list]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    out = {}
    for k in range(3):
        try:
            out[k] = optuna.load_study(study_name=rung_study_name(name, k), storage=storage).get_trials(deepcopy=False)
        except KeyError:
            out[k] = []
    return out


def _done(run_dir: Path) -> set[tuple[int, int, int]]:
    """(source trial, rung, seed) of every training whose result is on record."""
    done = set()
    for k, trials in _studies(run_dir).items():
        for t in trials:
            if t.state.name != "COMPLETE" or t.user_attrs.get("status") != "ok":
                continue
            source = t.number if k == 0 else t.user_attrs[Key.SOURCE_TRIAL]
            seeds = t.user_attrs.get(Key.SEED_GAINS) or {str(t.user_attrs.get(Key.SEED, 0)): None}
            done |= {(source, k, int(s)) for s in seeds}
    for f in (run_dir / "rungs").glob("trial-*-r2-seed*.json"):
        source, seed = int(f.name[6:11]), int(f.name.split("seed")[1].split(".")[0])
        done.add((source, 2, seed))
    return done


def _job(payload: dict, by_arch: dict[str, int]) -> tuple[int, int, int]:
    steps = payload["rung"]["rung_steps"]
    return by_arch[json.dumps(payload["arch"], sort_keys=True)], STEPS.index(steps), payload["seed"]


def _sources(run_dir: Path) -> dict[str, int]:
    return {json.dumps(t.user_attrs[Key.ARCH], sort_keys=True): t.number
            for t in _studies(run_dir)[0] if t.user_attrs.get("status") == "ok"}


def test_promotions_continue_checkpoints_and_the_sampler_sees_rung_zero_only(tmp_path, tiny_data):
    fake = _fake()
    assert _run(_study(tiny_data), tmp_path / "run", fake) == 0
    rungs = _studies(tmp_path / "run")
    ok0 = [t for t in rungs[0] if t.user_attrs.get("status") == "ok"]
    assert len(ok0) >= 6
    for t in ok0:  # Optuna learns rung-0 values only
        assert t.values[0] == pytest.approx(t.user_attrs["arch"]["channels"] / 10 + t.user_attrs["arch"]["blocks"] / 7 + STEPS[0] / 1000)
        assert t.user_attrs[Key.RUNG] == 0 and t.user_attrs[Key.CHECKPOINT] == f"checkpoints/trial-{t.number:05d}-r0.pt"
    # ASHA: at least the top 1/eta of each rung went up, and only from the rung below
    assert len(rungs[1]) == len(ok0) // 3 >= 2  # exactly the top third went up
    assert len(rungs[2]) == len(rungs[1]) // 3 >= 1
    assert {t.user_attrs[Key.SOURCE_TRIAL] for t in rungs[2]} <= {t.user_attrs[Key.SOURCE_TRIAL] for t in rungs[1]}
    best0 = sorted(ok0, key=lambda t: -t.values[0])[0].number  # highest gain: on rung 0's first front
    assert best0 in {t.user_attrs[Key.SOURCE_TRIAL] for t in rungs[1]}
    # every continued training got the checkpoint of the rung below, of the same trial and seed
    by_arch = _sources(tmp_path / "run")
    for payload in fake.payloads:
        source, rung, seed = _job(payload, by_arch)
        if rung == 0:
            assert payload.get("checkpoint") is None
        elif seed == 0:
            ckpt = json.loads(payload["checkpoint"])
            assert (ckpt["steps"], ckpt["seed"]) == (STEPS[rung - 1], 0)
            assert ckpt["continued"] == (None if rung == 1 else json.dumps({"steps": STEPS[0], "seed": 0, "continued": None}))
        else:  # the top rung's extra seed trains from scratch
            assert rung == 2 and payload["checkpoint"] is None
    top = [_job(p, by_arch) for p in fake.payloads if _job(p, by_arch)[1] == 2]
    for source in {s for s, _, _ in top}:  # the longer training (from scratch) starts first: a shorter tail
        assert [seed for s, _, seed in top if s == source] == [1, 0]
    for t in rungs[2]:
        a = t.user_attrs
        assert set(a[Key.SEED_GAINS]) == {"0", "1"}
        assert a[Key.SEED_SPREAD] == pytest.approx(0.001)
        assert t.values[0] == pytest.approx(sum(a[Key.SEED_GAINS].values()) / 2)
        assert [h["steps"] for h in a[Key.RUNG_HISTORY]] == list(STEPS)
        assert a[Key.WEIGHTS] == f"weights/trial-{a[Key.SOURCE_TRIAL]:05d}-r2.pt"
    table = (tmp_path / "run" / "pareto.txt").read_text()
    assert "top rung 2 of 0-2, 90 steps, mean of 2 seeds" in table and "seed spread" in table
    # no training ran twice
    jobs = [_job(p, by_arch) for p in fake.payloads]
    assert len(jobs) == len(set(jobs))


def test_infeasible_trials_are_never_promoted(tmp_path, tiny_data):
    # wide channels are both the best and infeasible; train_infeasible trains them anyway
    study = _study(tiny_data, trials=12, latency_ms={"cpu": 100.0, "cuda": 10.0}, train_infeasible=True)
    fake = _fake()
    assert _run(study, tmp_path / "run", fake) == 0
    rungs = _studies(tmp_path / "run")
    infeasible = {t.number for t in rungs[0] if t.user_attrs.get("feasible") is False and t.user_attrs.get("status") == "ok"}
    assert infeasible, "the test needs trained infeasible trials"
    promoted = {t.user_attrs[Key.SOURCE_TRIAL] for k in (1, 2) for t in rungs[k]}
    assert promoted and not promoted & infeasible


class _NewestFirst(FakeExecutor):
    """Trainings end newest first: the order several workers can finish in, unlike one worker's."""

    def wait(self, refs, *, timeout_s: float) -> list:
        return [refs[-1]] if refs else []


def _promotions(run_dir: Path) -> list[tuple[int, int]]:
    """(rung, source trial) of every rung result above 0, sorted."""
    return sorted((k, t.user_attrs[Key.SOURCE_TRIAL]) for k in (1, 2) for t in _studies(run_dir)[k])


def test_the_same_trials_go_up_whatever_order_the_trainings_end_in(tmp_path, tiny_data):
    # One worker ends trainings in the order they were asked; two workers here end them newest
    # first. Deciding on results as they arrive promoted other trials (the scheduler before this
    # test: trial 8 went to rung 1 with one worker, trial 7 here); deciding in trial order gives the same.
    study = _study(tiny_data, trials=12)
    one = _fake()
    assert _run(study.with_overrides(budget__workers=1), tmp_path / "one", one) == 0
    two = _NewestFirst(train=lambda payload: fake_training_output(payload, _gain(payload)),
                       latency_ms=lambda arch: [_latency(arch)], device_name=FAKE_DEVICE)
    assert _run(study, tmp_path / "two", two) == 0
    order = lambda payloads: [(p["arch"]["channels"], p["rung"]["rung_steps"]) for p in payloads]  # noqa: E731
    assert order(one.payloads) != order(two.payloads), "the test needs the two runs to train in different orders"
    assert _promotions(tmp_path / "one") == _promotions(tmp_path / "two")
    assert len(_promotions(tmp_path / "one")) >= 4
    trainings = lambda payloads: sorted(json.dumps(p, sort_keys=True, default=bytes.decode) for p in payloads)  # noqa: E731
    assert trainings(one.payloads) == trainings(two.payloads), "the same trainings (and checkpoints continued), no more"


# 14 trainings in all: 9 at rung 0, 3 at rung 1, then the top rung's two seeds (13, 14). With one
# worker the second seed starts after the first one's result was written: a kill there keeps it.
@pytest.mark.parametrize(("kill_at", "workers"), [(4, 2), (11, 2), (13, 2), (14, 1)])
def test_a_killed_run_resumes_without_losing_or_retraining_a_finished_rung(tmp_path, kill_at, workers, tiny_data):
    study = _study(tiny_data).with_overrides(budget__workers=workers)
    with pytest.raises(_Killed):
        _run(study, tmp_path / "run", _fake(kill_at=kill_at))
    before = _done(tmp_path / "run")
    fake = _fake()
    assert _run(study, tmp_path / "run", fake) == 0
    by_arch = _sources(tmp_path / "run")
    again = [_job(p, by_arch) for p in fake.payloads]
    assert not set(again) & before, "a training whose result was on record ran again"
    rungs = _studies(tmp_path / "run")
    assert len([t for t in rungs[0] if t.state.name == "COMPLETE"]) == 9
    ok = [[t for t in rungs[k] if t.user_attrs.get("status") == "ok"] for k in range(3)]
    assert len(ok[1]) == len(ok[0]) // 3 and len(ok[2]) == len(ok[1]) // 3  # every earned promotion, no more
    assert all(t.state.name == "COMPLETE" for k in (1, 2) for t in rungs[k])
    assert before <= _done(tmp_path / "run")
    if (kill_at, workers) == (14, 1):
        assert any(rung == 2 for _, rung, _ in before), "the first top-rung seed was kept"
        assert [set(t.user_attrs[Key.SEED_GAINS]) for t in rungs[2]] == [{"0", "1"}]
