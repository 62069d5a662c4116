"""Reports of a successive-halving run: rung studies read next to the sampler's, the front taken from
the top rung, the rung-to-rung view and the hypervolume over compute seconds, all against numbers
worked out by hand for a run made here (`_make_halving_run`).

The run follows the storage contract of `nas.halving`: rung 0 is the sampler study written by
`fakerun.make_run`; rung k >= 1 is a second study `<main>@rung<k>` in the same journal whose records
copy their rung-0 trial's params and attributes and add the rung's own.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakerun import STUDY_NAME, make_run

from nas.halving import rung_study_name
from nas.runstate import load_run
from nas.trial_record import Key
from reports import build_dashboard
from reports import figures as F
from reports import halving_figures as H

HALVING = {"min_steps": 100, "eta": 3, "rungs": 3, "decay": 0.2, "top_seeds": 2}
STEPS = {0: 100, 1: 300, 2: 900}


def _rung0(train: float, eval_: float | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {Key.RUNG: 0, Key.RUNG_STEPS: 100, Key.DECAY_STEPS: 20, Key.TRAIN_SECONDS: train}
    if eval_ is not None:
        attrs[Key.EVAL_SECONDS] = eval_
    return attrs


#: Rung 0 (the sampler study), finished in this order. Compute (train + eval seconds):
#: 11, 13, 15, 10, 21, 5 (failed after 5 s of training), 9.
RUNG0 = [
    {"gain": 1.0, "latency": 10.0, "preset": "urpnet", "arch": "urpnet", "attrs": _rung0(10, 1)},
    {"gain": 2.0, "latency": 20.0, "arch": "casr", "attrs": _rung0(12, 1), "params": {"channels": 32, "blocks": 1}},
    {"gain": 1.5, "latency": 30.0, "arch": "c3", "attrs": _rung0(14, 1), "params": {"channels": 32, "blocks": 1}},
    {"gain": 0.8, "latency": 8.0, "arch": "cmvg", "attrs": _rung0(9, 1), "params": {"channels": 12, "blocks": 2}},
    {"gain": 3.0, "latency": 150.0, "feasible": False, "arch": "anunet", "attrs": _rung0(20, 1), "params": {"channels": 28, "blocks": 3}},
    {"state": "FAIL", "status": "failed", "latency": 12.0, "arch": "reptcn", "reason": "training diverged at step 7",
     "attrs": _rung0(5, None), "params": {"channels": 16, "blocks": 1}},
    {"gain": 0.5, "latency": 5.0, "preset": "lanczospp", "arch": "lanczospp", "attrs": _rung0(8, 1), "params": {"channels": 24, "blocks": 1}},
]

#: Rung k >= 1 records, each in its rung's study in this order, finishing at `minute` (after all of
#: rung 0, which is written "now"). Completion order: r1 src1 (32 s), r1 src2 (32 s), r1 src3 failed
#: (7 s), r2 src2 (180 s for both seeds + 4 s), r1 src0 (32 s).
UPPER = {
    1: [
        {"source": 1, "gain": 2.1, "train": 30, "eval": 2, "minute": 1},
        {"source": 2, "gain": 2.3, "train": 30, "eval": 2, "minute": 2},
        {"source": 3, "state": "FAIL", "train": 7, "minute": 3, "reason": "rung 1: training diverged at step 140"},
        {"source": 0, "gain": 1.4, "train": 30, "eval": 2, "minute": 5},
    ],
    2: [
        {"source": 2, "gain": 2.5, "train": 180, "eval": 4, "minute": 4, "seeds": {"0": 2.4, "1": 2.6}},
    ],
}
CUMULATIVE_SECONDS = [11, 24, 39, 49, 70, 75, 84, 116, 148, 155, 339, 371]


def _gains_by_rung() -> dict[int, dict[int, float]]:
    out = {0: {n: spec["gain"] for n, spec in enumerate(RUNG0) if "gain" in spec}}
    for k, records in UPPER.items():
        out[k] = {r["source"]: r["gain"] for r in records if "gain" in r}
    return out


def _upper_attrs(base: dict[str, Any], rec: dict[str, Any], rung: int) -> dict[str, Any]:
    """A rung-k record's attributes: its rung-0 trial's, with this rung's outcome and history."""
    attrs = dict(base)
    for key in (Key.GAIN_Y, Key.GAIN_LINEAR_Y, Key.PER_QP, Key.TEST, Key.STATUS, Key.EVAL_SECONDS):
        attrs.pop(key, None)
    attrs.update({Key.RUNG: rung, Key.RUNG_STEPS: STEPS[rung], Key.DECAY_STEPS: STEPS[rung] // 5, Key.SOURCE_TRIAL: rec["source"],
                  Key.TRAIN_SECONDS: rec["train"], Key.WEIGHTS: f"weights/trial-{rec['source']:05d}-rung{rung}.pt"})
    if rec.get("state") == "FAIL":
        attrs.update({Key.STATUS: "failed", Key.FAILURE_REASON: rec["reason"]})
        return attrs
    gain = rec["gain"]
    gains = _gains_by_rung()
    attrs.update({
        Key.STATUS: "ok", Key.EVAL_SECONDS: rec["eval"], Key.GAIN_Y: gain, Key.GAIN_LINEAR_Y: gain - 0.125,
        Key.PER_QP: {"31": {"qp": 31, "gain_y": gain + 0.5}, "63": {"qp": 63, "gain_y": gain - 0.5}},
        Key.TEST: {Key.GAIN_Y: gain - 0.25, Key.GAIN_LINEAR_Y: gain - 0.375},
        Key.RUNG_HISTORY: [{"rung": j, "steps": STEPS[j], "gain": gains[j][rec["source"]], "gain_linear": gains[j][rec["source"]] - 0.125}
                           for j in range(rung + 1)],
    })
    if "seeds" in rec:
        attrs[Key.SEED_GAINS] = rec["seeds"]
        attrs[Key.SEED_SPREAD] = max(rec["seeds"].values()) - min(rec["seeds"].values())
    return attrs


def _make_halving_run(run_dir: Path, *, upper: dict[int, list[dict[str, Any]]] = UPPER) -> Path:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState

    make_run(run_dir, RUNG0, budget_trials=len(RUNG0), latency_budget_ms=100.0)
    info = json.loads((run_dir / "run.json").read_text())
    info["study"]["halving"] = dict(HALVING)
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))

    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    base = {t.number: t for t in optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials()}
    start = datetime(2099, 1, 1)
    for rung, records in upper.items():
        study = optuna.create_study(study_name=rung_study_name(STUDY_NAME, rung), storage=storage, directions=["maximize", "minimize"])
        for rec in records:
            src = base[rec["source"]]
            failed = rec.get("state") == "FAIL"
            study.add_trial(FrozenTrial(
                number=0, trial_id=0, state=TrialState.FAIL if failed else TrialState.COMPLETE, value=None,
                values=None if failed else [rec["gain"], src.values[1]],
                datetime_start=start + timedelta(minutes=rec["minute"] - 1), datetime_complete=start + timedelta(minutes=rec["minute"]),
                params=dict(src.params), distributions=dict(src.distributions), user_attrs=_upper_attrs(src.user_attrs, rec, rung),
                system_attrs={}, intermediate_values={},
            ))
    return run_dir


@pytest.fixture()
def halving_run(tmp_path: Path) -> Path:
    return _make_halving_run(tmp_path / "halving")


def _meta(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="dashboard-meta">(.*?)</script>', html, re.DOTALL)
    assert m, "no machine-readable summary in the page"
    return json.loads(m.group(1).replace("<\\/", "</"))


# -- reading the run ---------------------------------------------------------------------------------


def test_load_run_reads_every_rung(halving_run):
    state = load_run(halving_run)
    assert state.halving == HALVING
    assert sorted(state.rungs) == [0, 1, 2] and state.rungs[0] == state.trials
    assert [len(r) for r in state.rungs.values()] == [7, 4, 1]
    assert [t.source_trial for t in state.rungs[1]] == [1, 2, 3, 0]  # record numbers 0..3 of the rung-1 study
    assert [t.rung for t in state.rungs[1]] == [1, 1, 1, 1] and all(t.rung == 0 for t in state.trials)
    assert [t.status for t in state.rungs[1]] == ["ok", "ok", "failed", "ok"]
    assert state.rungs[1][2].reason == "rung 1: training diverged at step 140"
    assert {k: state.rung_steps(k) for k in range(3)} == STEPS
    assert state.planned_top_rung == 2
    rung, records = state.top_rung_trials
    assert rung == 2 and [t.source_trial for t in records] == [2]
    assert sorted(state.rung_results(1)) == [0, 1, 2]  # the failed record is no result
    # the trial known to the user is still the sampler's: trial(n) is rung 0
    assert state.trial(2).gain_db == 1.5 and state.trial(2).rung == 0


def test_the_front_is_the_top_rungs(halving_run):
    """Rung 0 alone would give the front 6, 3, 0, 1 (5/8/10/20 ms); only the rung-2 record may be Pareto."""
    state = load_run(halving_run)
    (front,) = state.pareto()
    assert (front.rung, front.source_trial, front.number) == (2, 2, 0)
    assert (front.gain_db, front.latency_ms) == (2.5, 30.0)
    assert not any(t.pareto for k in (0, 1) for t in state.rungs[k])
    assert front.attrs[Key.SEED_GAINS] == {"0": 2.4, "1": 2.6}


def test_before_any_record_reaches_a_higher_rung_the_front_is_rung_0s(tmp_path):
    state = load_run(_make_halving_run(tmp_path / "early", upper={}))
    assert state.halving is not None and list(state.rungs) == [0]
    assert state.top_rung_trials == (0, state.trials)
    assert [t.number for t in state.pareto()] == [6, 3, 0, 1]
    html = build_dashboard(state.run_dir).read_text(encoding="utf-8")
    assert "the top rung, 2, has no trained record yet" in html and _meta(html)["pareto_trials"] == [6, 3, 0, 1]


def test_storage_url_reads_the_rung_studies_from_the_same_database(halving_run, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    journal = JournalStorage(JournalFileBackend(str(halving_run / "journal.log")))
    for name in (STUDY_NAME, rung_study_name(STUDY_NAME, 1), rung_study_name(STUDY_NAME, 2)):
        optuna.copy_study(from_study_name=name, from_storage=journal, to_storage=url)
    info = json.loads((halving_run / "run.json").read_text())
    info["storage"] = "sqlite:///optuna.db"
    (halving_run / "run.json").write_text(json.dumps(info))
    (halving_run / "journal.log").unlink()
    state = load_run(halving_run, storage=url)
    assert [len(r) for r in state.rungs.values()] == [7, 4, 1]
    assert [(t.rung, t.source_trial) for t in state.pareto()] == [(2, 2)]


# -- figures -------------------------------------------------------------------------------------------


def test_pareto_figure_marks_the_rungs(halving_run):
    fig = F.pareto_figure(load_run(halving_run))
    traces = {t.name: t for t in fig.data}
    assert list(traces) == ["rung 0 (100 steps)", "rung 1 (300 steps)", "rung 2 (900 steps)", "infeasible (trained)",
                            "Pareto front: rung 2 (900 steps)", "published presets (this run)"]
    assert [c[1] for c in traces["rung 0 (100 steps)"].customdata] == [0, 1, 2, 3, 6]
    assert [c[1] for c in traces["rung 1 (300 steps)"].customdata] == [0, 1, 2]
    assert list(traces["rung 1 (300 steps)"].y) == [1.4, 2.1, 2.3]
    assert len(traces["rung 2 (900 steps)"].x) == 0  # its only record is the front
    front = traces["Pareto front: rung 2 (900 steps)"]
    assert list(front.x) == [30.0] and list(front.y) == [2.5] and front.customdata[0][1] == 2
    hover = front.customdata[0][0]
    assert "trial 2" in hover and "rung 2 (900 steps)" in hover and "seed 0 +2.400, seed 1 +2.600 dB" in hover
    # a preset is labelled at the longest training it reached: urpnet (trial 0) at rung 1
    presets = traces["published presets (this run)"]
    assert list(presets.text) == ["urpnet", "lanczospp"] and list(presets.y) == [1.4, 0.5]
    assert "cpu: Test CPU (1 thread)" in fig.layout.xaxis.title.text and [s.x0 for s in fig.layout.shapes] == [100.0]


def test_rung_to_rung_points_and_spearman(halving_run):
    """Promoted 0 -> 1: trials 0, 1, 2 with gains 1.0, 2.0, 1.5 at rung 0 (ranks 1, 3, 2) and 1.4, 2.1,
    2.3 at rung 1 (ranks 1, 2, 3): d = 0, 1, -1, so rho = 1 - 6 * 2 / (3 * (9 - 1)) = 0.5.
    Promoted 1 -> 2: trial 2 only (n = 1: no rank correlation)."""
    state = load_run(halving_run)
    low, high = H.rung_pairs(state)
    assert (low.lower, low.upper, low.trials, low.lower_gain, low.upper_gain) == (0, 1, (0, 1, 2), (1.0, 2.0, 1.5), (1.4, 2.1, 2.3))
    assert low.spearman == pytest.approx(0.5)
    assert (high.lower, high.trials, high.lower_gain, high.upper_gain, high.spearman) == (1, (2,), (2.3,), (2.5,), None)

    fig = H.rung_to_rung_figure(state)
    names = [t.name for t in fig.data]
    assert names == ["rung 0 (100 steps) → rung 1 (300 steps): Spearman ρ = +0.50 (n = 3)",
                     "rung 1 (300 steps) → rung 2 (900 steps): Spearman ρ: too few trials (n = 1)",
                     "y = x (same gain)"]
    assert list(fig.data[0].x) == [1.0, 2.0, 1.5] and list(fig.data[0].y) == [1.4, 2.1, 2.3]
    assert [c[0] for c in fig.data[0].customdata] == [0, 1, 2]
    assert list(fig.data[1].x) == [2.3] and list(fig.data[1].y) == [2.5]
    diagonal = fig.data[2]
    assert list(diagonal.x) == list(diagonal.y) and diagonal.x[0] < 1.0 and diagonal.x[-1] > 2.5
    title = fig.layout.title.text
    assert "Spearman ρ = +0.50 (n = 3)" in title and "trained on cpu (CPU seconds)" in title and "budget 7 trials" in title
    assert "[dB]" in fig.layout.xaxis.title.text and "[dB]" in fig.layout.yaxis.title.text


def test_hypervolume_over_compute_seconds(halving_run):
    """Reference (0 dB, 100 ms). Rung-0 front after each finished training: 90 (trial 0), 170 (1),
    170, 92*0.8 + 90*0.2 + 80*1 = 171.6 (3), 171.6, 171.6, + 95*0.5 - 92*0.5 + ... = 173.1 (6), then
    unchanged by the promotions. Top rung (2): 0 until its record (2.5 dB at 30 ms: 70*2.5 = 175)."""
    state = load_run(halving_run)
    order, seconds, curves = H.hypervolume_time_curves(state)
    assert seconds == pytest.approx(CUMULATIVE_SECONDS)
    assert [(t.rung, t.source_trial) for t in order][7:] == [(1, 1), (1, 2), (1, 3), (2, 2), (1, 0)]
    top, rung0 = curves.values()
    assert list(curves) == ["front of rung 2 (900 steps) (the run's front)", "front of rung 0 (100 steps)"]
    assert rung0 == pytest.approx([90, 170, 170, 171.6, 171.6, 171.6, 173.1, 173.1, 173.1, 173.1, 173.1, 173.1])
    assert top == pytest.approx([0] * 10 + [175, 175])

    fig = H.hypervolume_time_figure(state)
    assert [list(t.x) for t in fig.data] == [pytest.approx(CUMULATIVE_SECONDS)] * 2
    assert "CPU seconds" in fig.layout.xaxis.title.text and "[dB x ms]" in fig.layout.yaxis.title.text
    title = fig.layout.title.text
    assert "latency 100 ms (the study's latency budget)" in title and "cpu: Test CPU (1 thread)" in title
    assert "rungs of 100, 300, 900 steps" in title
    # the per-trial curve is still rung 0's
    assert list(F.hypervolume_figure(state).data[0].y) == pytest.approx([90, 170, 170, 171.6, 171.6, 171.6, 173.1])


def test_gpu_runs_count_gpu_seconds(halving_run):
    info = json.loads((halving_run / "run.json").read_text())
    info["device_kind"] = "cuda"
    (halving_run / "run.json").write_text(json.dumps(info))
    fig = H.hypervolume_time_figure(load_run(halving_run))
    assert "GPU seconds" in fig.layout.xaxis.title.text


# -- the page -------------------------------------------------------------------------------------------


def test_dashboard_shows_the_rungs(halving_run):
    html = build_dashboard(halving_run).read_text(encoding="utf-8")
    meta = _meta(html)
    assert meta["sections"] == ["pareto", "survey", "macs", "per-qp", "rungs", "hypervolume", "importance", "trials"]
    assert meta["pareto_trials"] == [2] and meta["front_rung"] == 2
    assert meta["rungs"] == {"0": 7, "1": 4, "2": 1} and meta["table_rows"] == 12
    assert meta["rung_pairs"] == [{"rungs": [0, 1], "trials": [0, 1, 2], "spearman": pytest.approx(0.5)},
                                  {"rungs": [1, 2], "trials": [2], "spearman": None}]
    assert meta["pareto_points"]["Pareto front: rung 2 (900 steps)"] == 1
    for label in ("rung 0 (100 steps)", "rung 1 (300 steps)", "rung 2 (900 steps)"):
        assert label in html
    assert 'id="rungs"' in html and 'id="hypervolume-time"' in html
    assert "Pareto front (this run, rung 2 (900 steps))" in html
    # the table: one row per record (7 + 4 + 1), with its rung; the failed promotion keeps its reason
    assert html.count('<tr class="') == 12 and 'data-col="rung"' in html
    assert "rung 1: training diverged at step 140" in html
    rows = re.findall(r'<tr class="([^"]*)"><td data-v="(\d+)"[^>]*>\d+</td><td data-v="(\d+)"', html)
    assert [(int(n), int(k)) for _, n, k in rows] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1),
                                                      (4, 0), (5, 0), (6, 0)]
    assert [(int(n), int(k)) for cls, n, k in rows if "pareto" in cls.split()] == [(2, 2)]
    assert "successive halving" in html and "the front shown is from rung 2 (900 steps)" in html


# -- single-fidelity runs keep their page ---------------------------------------------------------------


def test_single_fidelity_run_gains_the_time_axis_only(fake_run, fake_front):
    """fakerun: trained trials store 1.5 s of training and no evaluation time; the duplicate (6)
    copies its original's 1.5 s and spent none; skipped (4), failed (5) spent none; 7 is running."""
    state = load_run(fake_run)
    assert state.halving is None and list(state.rungs) == [0] and state.top_rung_trials == (0, state.trials)
    assert all(t.rung == 0 and t.source_trial == t.number for t in state.trials)
    order, seconds, curves = H.hypervolume_time_curves(state)
    assert [t.number for t in order] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert seconds == pytest.approx([1.5, 3.0, 4.5, 6.0, 6.0, 6.0, 6.0, 7.5])
    assert list(curves) == ["hypervolume (all trials)"]
    assert curves["hypervolume (all trials)"] == pytest.approx(list(F.hypervolume_figure(state).data[0].y))
    assert list(F.pareto_partition(state)) == list(F.PARETO_TRACES)
    assert H.rung_pairs(state) == []

    html = build_dashboard(fake_run).read_text(encoding="utf-8")
    meta = _meta(html)
    assert meta["sections"] == ["pareto", "survey", "macs", "per-qp", "hypervolume", "importance", "trials"]
    assert meta["pareto_trials"] == fake_front and "rungs" not in meta and "front_rung" not in meta
    assert 'data-col="rung"' not in html and "successive halving" not in html
    assert 'id="hypervolume-time"' in html and "CPU seconds" in html
