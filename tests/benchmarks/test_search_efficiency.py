"""`benchmarks/search_efficiency.py`: hypervolume over time, time to reach a target, the verdict and
the report, checked against numbers worked out by hand for three run directories made here (one per
way), plus the derived studies and one short real invocation of the script.

The fake runs follow the storage contract of `nas.halving`: rung 0 is the sampler's study, rung k >= 1
a study `<main>@rung<k>` of the same journal; times are set explicitly (seconds after `T0`) so that the
completion order and the wall axis are known in advance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nas.halving import rung_study_name
from nas.runstate import load_run
from nas.trial_record import Key

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "search_efficiency.py"
STUDY_NAME = "fake-20990101-000000"
T0 = datetime(2099, 1, 1)
BUDGET_MS = 100.0
#: Gains over Lanczos are this much above the gains over the linear baseline (the baseline's PSNR is
#: the same for every record), and test gains this much below val ones.
LINEAR_OFFSET_DB = 0.1
TEST_OFFSET_DB = 0.25


def _load_script():
    spec = importlib.util.spec_from_file_location("search_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_efficiency"] = module
    spec.loader.exec_module(module)
    return module


se = _load_script()


# -- fake run directories ------------------------------------------------------------------------------


def _attrs(rec: dict[str, Any], rung: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {Key.RUNG: rung, Key.LATENCY_MS: rec["latency"], Key.FEASIBLE: rec.get("feasible", True),
                             Key.LATENCY_DEVICE: "cpu: Test CPU (1 thread)", Key.STATUS: rec.get("status", "ok"),
                             Key.TRAIN_SECONDS: rec.get("train", 0.0)}
    if "eval" in rec:
        attrs[Key.EVAL_SECONDS] = rec["eval"]
    if rung:
        attrs[Key.SOURCE_TRIAL] = rec["source"]
    if "gain" in rec:  # val gain over the linear baseline
        g = rec["gain"]
        attrs.update({Key.GAIN_Y: g + LINEAR_OFFSET_DB, Key.GAIN_LINEAR_Y: g,
                      Key.TEST: {Key.GAIN_Y: g + LINEAR_OFFSET_DB - TEST_OFFSET_DB, Key.GAIN_LINEAR_Y: g - TEST_OFFSET_DB}})
    if "duplicate_of" in rec:
        attrs[Key.DUPLICATE_OF] = rec["duplicate_of"]
    return attrs


def make_run(run_dir: Path, rungs: dict[int, list[dict[str, Any]]], *, halving: dict[str, Any], sampler: str = "tpe") -> Path:
    """A run directory whose rung-k records are `rungs[k]`, each with its start and end in seconds
    after T0, train/eval seconds, val gain over the linear baseline and latency."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir.mkdir(parents=True)
    info = {
        "format": "rtsr-nas run v1", "run_id": "20990101-000000", "optuna_study_name": STUDY_NAME, "storage": "journal",
        "study": {"name": "fake", "seed": 0, "data": {"train": "builtin", "qps": [31, 63]},
                  "objectives": {"gain": "gain_y", "latency": "mean_ms"},
                  "constraints": {"latency_ms": {"cpu": BUDGET_MS}, "train_infeasible": False},
                  "sampler": {"name": sampler}, "budget": {"trials": 1000, "workers": 2}, "halving": halving},
        "device_kind": "cpu", "device_name": "cpu: Test CPU (1 thread)",
    }
    (run_dir / "run.json").write_text(json.dumps(info))
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    for rung, records in rungs.items():
        study = optuna.create_study(study_name=rung_study_name(STUDY_NAME, rung), storage=storage, directions=["maximize", "minimize"])
        for rec in records:
            failed = rec.get("state") == "FAIL"
            trained = rec.get("status", "ok") in ("ok", "duplicate") and not failed
            values = None if failed else [rec["gain"] + LINEAR_OFFSET_DB if trained else 0.0, rec["latency"]]
            source = rec.get("source", rec.get("number", 0))
            study.add_trial(FrozenTrial(
                number=0, trial_id=0, state=TrialState.FAIL if failed else TrialState.COMPLETE, value=None, values=values,
                datetime_start=T0 + timedelta(seconds=rec["start"]), datetime_complete=T0 + timedelta(seconds=rec["end"]),
                params={"x": source}, distributions={"x": IntDistribution(0, 1000)}, user_attrs=_attrs(rec, rung),
                system_attrs={}, intermediate_values={},
            ))
    return run_dir


HALVING = {"min_steps": 10, "eta": 2, "rungs": 2, "decay": 0.2, "top_seeds": 2}
SINGLE = {"min_steps": 20, "eta": 2, "rungs": 1, "decay": 0.2, "top_seeds": 1}

#: halving: rung 0 points never count (the front rung is 1). Compute 10, 10, 4 (failed), 0 (skipped),
#: then rung 1: 34 and 34. Rung 1, vs linear: (0.6 dB, 50 ms) -> 50 x 0.6 = 30; + (0.2 dB, 20 ms) ->
#: 80 x 0.2 + 50 x 0.4 = 36. Vs Lanczos (+0.1 dB): 50 x 0.7 = 35; then 80 x 0.3 + 50 x 0.4 = 44.
HALVING_RUNGS = {
    0: [
        {"number": 0, "start": 0, "end": 10, "train": 8, "eval": 2, "gain": 0.5, "latency": 50.0},
        {"number": 1, "start": 0, "end": 12, "train": 9, "eval": 1, "gain": 0.3, "latency": 20.0},
        {"number": 2, "start": 12, "end": 20, "train": 4, "state": "FAIL", "status": "failed", "latency": 30.0},
        {"number": 3, "start": 12, "end": 25, "status": "skipped", "feasible": False, "latency": 150.0},
    ],
    1: [
        {"source": 0, "start": 20, "end": 40, "train": 30, "eval": 4, "gain": 0.6, "latency": 50.0},
        {"source": 1, "start": 25, "end": 50, "train": 30, "eval": 4, "gain": 0.2, "latency": 20.0},
    ],
}
HALVING_CURVE = [(10, 10, 0), (20, 12, 0), (24, 20, 0), (24, 25, 0), (58, 40, 30), (92, 50, 36)]
HALVING_CURVE_LANCZOS = [(10, 10, 0), (20, 12, 0), (24, 20, 0), (24, 25, 0), (58, 40, 35), (92, 50, 44)]

#: single: (0.4, 50) -> 20; (-0.1, 10) below the reference; (0.5, 60) -> 20 + 40 x 0.1 = 24; an
#: infeasible (0.9, 120) and a duplicate of trial 0 (1 s of eval, its training borrowed) add nothing.
#: Vs Lanczos: 50 x 0.5 = 25; (0.0, 10) is not above 0 dB; + 40 x 0.1 = 29.
SINGLE_RUNGS = {
    0: [
        {"number": 0, "start": 0, "end": 30, "train": 25, "eval": 5, "gain": 0.4, "latency": 50.0},
        {"number": 1, "start": 0, "end": 35, "train": 28, "eval": 2, "gain": -0.1, "latency": 10.0},
        {"number": 2, "start": 30, "end": 70, "train": 36, "eval": 4, "gain": 0.5, "latency": 60.0},
        {"number": 3, "start": 35, "end": 80, "train": 40, "eval": 0, "gain": 0.9, "latency": 120.0, "feasible": False},
        {"number": 4, "start": 80, "end": 85, "train": 25, "eval": 1, "gain": 0.4, "latency": 50.0, "status": "duplicate",
         "duplicate_of": 0},
    ],
}
SINGLE_CURVE = [(30, 30, 20), (60, 35, 20), (100, 70, 24), (140, 80, 24), (141, 85, 24)]

#: random: one trial, (0.2, 90) -> 10 x 0.2 = 2 (vs Lanczos 10 x 0.3 = 3): never reaches 24.
RANDOM_RUNGS = {0: [{"number": 0, "start": 0, "end": 50, "train": 45, "eval": 5, "gain": 0.2, "latency": 90.0}]}


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """OUT with the three ways' run directories, as the script lays them out."""
    make_run(tmp_path / "out" / "halving" / "run", HALVING_RUNGS, halving=HALVING)
    make_run(tmp_path / "out" / "single" / "run", SINGLE_RUNGS, halving=SINGLE)
    make_run(tmp_path / "out" / "random" / "run", RANDOM_RUNGS, halving=SINGLE, sampler="random")
    return tmp_path / "out"


def _approx(curve):
    return [pytest.approx(tuple(float(v) for v in p)) for p in curve]


# -- hypervolume over time -----------------------------------------------------------------------------


def test_halving_curve_counts_all_compute_but_only_top_rung_points(runs):
    state = load_run(runs / "halving" / "run")
    assert se.front_rung(state) == 1
    assert [tuple(p) for p in se.hv_over_time(state)] == _approx(HALVING_CURVE)
    assert [tuple(p) for p in se.hv_over_time(state, baseline="lanczos")] == _approx(HALVING_CURVE_LANCZOS)


def test_single_fidelity_curve_skips_infeasible_duplicate_and_below_reference_points(runs):
    state = load_run(runs / "single" / "run")
    assert se.front_rung(state) == 0
    assert [tuple(p) for p in se.hv_over_time(state)] == _approx(SINGLE_CURVE)
    assert se.hv_over_time(state, baseline="lanczos")[-1].hv == pytest.approx(29.0)


def test_hv_at_reads_the_last_training_finished_by_then():
    curve = [se.HVPoint(*p) for p in HALVING_CURVE]
    assert se.hv_at(curve, 5) == 0.0  # before the first training
    assert se.hv_at(curve, 57.9) == 0.0 and se.hv_at(curve, 58) == 30.0 and se.hv_at(curve, 1e9) == 36.0
    assert se.hv_at(curve, 39, axis="wall") == 0.0 and se.hv_at(curve, 45, axis="wall") == 30.0
    with pytest.raises(ValueError):
        se.hv_at(curve, 1, axis="cpu")


def test_time_to_reach():
    single = [se.HVPoint(*p) for p in SINGLE_CURVE]
    halving = [se.HVPoint(*p) for p in HALVING_CURVE]
    assert se.time_to_reach(single, 24.0) == (100, 70, 24)  # a curve reaches its own final value when it got there
    assert se.time_to_reach(single, 24.0 * (1 + 1e-12)) == (100, 70, 24)  # rounding noise does not hide it
    assert se.time_to_reach(halving, 24.0) == (58, 40, 30)
    assert se.time_to_reach(halving, 36.5) is None
    with pytest.raises(ValueError):
        se.time_to_reach(halving, 0.0)


# -- one way, the comparison, the report ---------------------------------------------------------------


def test_analyse_way_rungs_checkpoints_and_front(runs):
    info = se.analyse_way(load_run(runs / "single" / "run"), minutes=1.0, workers=2)
    assert info["rungs"] == {"0": {"steps": 20, "trained": 4, "finished": 5}}
    assert (info["sampler"], info["front_rung"], info["front_steps"], info["latency_budget_ms"]) == ("tpe", 0, 20, BUDGET_MS)
    assert info["device_name"] == "cpu: Test CPU (1 thread)" and info["compute_unit"] == "CPU seconds"
    assert info["final"] == pytest.approx({"compute_s": 141, "wall_s": 85, "hv_linear": 24, "hv_lanczos": 29})
    # 1 min limit, 2 workers: checkpoints every 6 wall s and every 12 compute s
    c = {round(x["share"] * 100): x for x in info["checkpoints"]}
    assert (c[50]["wall_s"], c[50]["compute_s"]) == (30, 60)
    assert (c[50]["hv_linear_wall"], c[50]["hv_linear_compute"]) == (20, 20)  # trial 0 (30 s, 30 CPU s) only
    assert (c[40]["hv_linear_wall"], c[40]["hv_linear_compute"]) == (0, 20)  # 24 wall s: nothing yet; 48 CPU s: trial 0
    assert (c[100]["hv_lanczos_wall"], c[100]["hv_lanczos_compute"]) == (25, 29)  # 60 wall s: 0, 1; 120 CPU s: 0-2
    front = info["front"]
    assert front["trials"] == [1, 0, 2] and front["size"] == 3  # by latency; infeasible 3 and duplicate 4 left out
    assert front["best_val_linear_db"] == pytest.approx(0.5) and front["best_val_lanczos_db"] == pytest.approx(0.6)
    assert front["best_test_linear_db"] == pytest.approx(0.25) and front["best_test_lanczos_db"] == pytest.approx(0.35)

    halving = se.analyse_way(load_run(runs / "halving" / "run"), minutes=1.0, workers=2)
    assert halving["rungs"] == {"0": {"steps": 10, "trained": 2, "finished": 4}, "1": {"steps": 20, "trained": 2, "finished": 2}}
    assert halving["front"]["trials"] == [1, 0]  # rung-1 records, named by their rung-0 trial


def test_compare_ways_ratios_and_verdicts(runs):
    ways = {w: se.analyse_way(load_run(runs / w / "run"), minutes=1.0, workers=2) for w in se.WAYS}
    reach = se.compare_ways(ways)
    lin = reach["linear"]
    assert lin["target_hv"] == pytest.approx(24)
    assert lin["ways"]["single"] == pytest.approx({"reached": True, "compute_s": 100, "wall_s": 70, "ratio_compute": 1.0,
                                                   "ratio_wall": 1.0})
    assert lin["ways"]["halving"] == pytest.approx({"reached": True, "compute_s": 58, "wall_s": 40, "ratio_compute": 0.58,
                                                    "ratio_wall": 40 / 70})
    assert lin["ways"]["random"] == {"reached": False, "compute_s": None, "wall_s": None, "ratio_compute": None, "ratio_wall": None}
    assert lin["verdict_compute"] == "FAIL (0.580 > 1/2)" and lin["verdict_wall"] == "FAIL (0.571 > 1/2)"
    lz = reach["lanczos"]  # target 29: halving reaches 35 after 58 CPU s
    assert lz["target_hv"] == pytest.approx(29) and lz["ways"]["halving"]["ratio_compute"] == pytest.approx(0.58)


def test_verdict_pass_not_reached_and_undefined():
    assert se._verdict(0.25, reached=True, defined=True) == "PASS (0.250 <= 1/2)"
    assert se._verdict(1 / 2, reached=True, defined=True) == "PASS (0.500 <= 1/2)"
    assert se._verdict(0.51, reached=True, defined=True) == "FAIL (0.510 > 1/2)"
    assert se._verdict(None, reached=False, defined=True) == "not reached"
    assert se._verdict(None, reached=False, defined=False).startswith("undefined")


def test_a_zero_single_hypervolume_makes_the_target_undefined(tmp_path):
    """On CPU budgets no trial may beat the linear baseline: then nothing is 'reached' and the report says why."""
    below = {0: [{"number": 0, "start": 0, "end": 30, "train": 25, "eval": 5, "gain": -0.05, "latency": 50.0}]}
    ways = {"halving": se.analyse_way(load_run(make_run(tmp_path / "h", HALVING_RUNGS, halving=HALVING)), minutes=1, workers=2),
            "single": se.analyse_way(load_run(make_run(tmp_path / "s", below, halving=SINGLE)), minutes=1, workers=2)}
    reach = se.compare_ways(ways)
    assert reach["linear"]["target_hv"] == 0 and reach["linear"]["verdict_compute"].startswith("undefined")
    assert reach["lanczos"]["target_hv"] == pytest.approx(50 * 0.05)  # +0.05 dB over Lanczos at 50 ms
    assert reach["lanczos"]["verdict_compute"] == "FAIL (1.933 > 1/2)"  # 58 CPU s against the single way's 30


def test_analyse_only_writes_markdown_and_json(runs, capsys):
    assert se.main(["--analyse-only", "--out", str(runs), "--minutes", "1", "--workers", "2", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    md = (runs / "search_efficiency.md").read_text()
    data = json.loads((runs / "search_efficiency.json").read_text())
    assert md in printed
    assert "**FAIL (0.580 > 1/2)** on CPU seconds; FAIL (0.571 > 1/2) on wall seconds" in md
    assert "| random | 2.000 | not reached | - | not reached | - |" in md
    assert "| halving | 36.000 | 58 | 0.580 | 40 | 0.571 |" in md
    assert "cpu: Test CPU (1 thread)" in md and "1 seed" in md
    assert data["reach"]["linear"]["ways"]["halving"]["ratio_compute"] == pytest.approx(0.58)
    assert data["ways"]["halving"]["curves"]["linear"] == [list(map(float, p)) for p in HALVING_CURVE]


# -- the derived studies -------------------------------------------------------------------------------


def test_derived_studies_of_rtsr(tmp_path):
    from nas.study import load_study

    rtsr = load_study("rtsr")
    base = rtsr.to_dict()
    for way in se.WAYS:
        data = se.derived_study(rtsr, way)
        path = se.write_study_toml(data, tmp_path / f"{way}.toml")
        back = load_study(path).to_dict()
        assert back["name"] == f"rtsr-{way}"
        assert {k: v for k, v in back.items() if k not in ("name", "description", "halving", "sampler")} == \
               {k: v for k, v in base.items() if k not in ("name", "description", "halving", "sampler")}
        if way == "halving":
            assert back["halving"] == base["halving"] and back["sampler"] == base["sampler"]
        else:
            assert back["halving"] == {**base["halving"], "min_steps": 2700, "rungs": 1, "top_seeds": 1}
            assert back["sampler"]["name"] == ("random" if way == "random" else base["sampler"]["name"])


def test_a_study_without_halving_is_refused():
    from nas.study import load_study
    from search_space.errors import UserError

    with pytest.raises(UserError, match=r"no \[halving\] table"):
        se.derived_study(load_study("smoke"), "single")


# -- one short real invocation -------------------------------------------------------------------------


@pytest.mark.slow
def test_script_runs_three_ways_and_reuses_finished_ones(tmp_path, tiny_halving_study, run_cli):
    study = tiny_halving_study(name="se-smoke", min_steps=4)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--study", str(study), "--minutes", "0.2", "--trials", "2", "--workers", "1",
           "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = run_cli(cmd, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "search_efficiency.json").read_text())
    assert list(data["ways"]) == list(se.WAYS)
    for way in se.WAYS:
        assert (out / way / "nas_run.log").is_file() and (out / way / "done.json").is_file()
        info = data["ways"][way]
        assert info["device_kind"] == "cpu" and info["curves"]["linear"], way
        assert info["rungs"]["0"]["finished"] >= 1
    assert data["ways"]["halving"]["front_steps"] == 8 and data["ways"]["single"]["front_steps"] == 8
    assert data["ways"]["random"]["sampler"] == "random"
    assert "Time to reach the `single` way's final hypervolume" in proc.stdout
    again = run_cli(cmd + ["--ways", "single"], cwd=tmp_path, env=env, timeout=120)
    assert again.returncode == 0 and "[single] finished before with the same settings" in again.stdout
