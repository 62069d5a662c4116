"""reports.ablation on a constructed run directory: trials written straight into an Optuna journal
with known per-seed values, so every table entry and verdict can be checked by hand (no training).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.study import Study
from search_space.configio import parse_toml

STUDY = """
name = "t-ablation"
[data]
qps = [31, 63]
[ablation]
reference = "ref"
seeds = [0, 1, 2]
factor = "a test factor"
[[ablation.arms]]
name = "ref"
preset = "reptcn"
overrides = { block = "conv" }
[[ablation.arms]]
name = "rep"
overrides = { block = "rep" }
[[ablation.arms]]
name = "half"
eval_dtype = "float16"
[[ablation.claims]]
arm = "rep"
metric = "delta_y"
expect = "increase"
low = 0.01
high = 0.1
number = "+0.01 to +0.1 dB"
source = "made up for the test"
[[ablation.claims]]
arm = "rep"
metric = "macs_g"
expect = "equal"
[[ablation.claims]]
arm = "rep"
metric = "latency_ms"
expect = "decrease"
relative = true
low = -50.0
high = -20.0
[[ablation.claims]]
arm = "half"
metric = "gain_qp63"
expect = "decrease"
"""

# delta per seed; the gain at QP31 is delta + 1 and at QP63 delta - 1, so Delta is their mean
REF = {0: 0.10, 1: 0.30, 2: 0.20}
REP = {0: 0.15, 1: 0.34, 2: 0.26}  # ref + 0.05, 0.04, 0.06: paired mean 0.05, s = 0.01
HALF = {0: 0.10, 1: 0.30}  # seed 2 failed


def _attrs(arm: str, seed: int, delta: float, *, latency: tuple[float, float, int], arch_hash: str) -> dict:
    per_qp = {
        "31": {"psnr_y": 30.0 + delta + 1, "lanczos_psnr_y": 30.0, "gain_y": delta + 1},
        "63": {"psnr_y": 28.0 + delta - 1, "lanczos_psnr_y": 28.0, "gain_y": delta - 1},
    }
    mean, std, n = latency
    return {
        "arm": arm, "seed": seed, "eval_dtype": "float16" if arm == "half" else "float32", "status": "ok",
        "arch_summary": f"arch of {arm}", "arch_hash": arch_hash, "macs": 5_001_523_200, "params": 9648,
        "per_qp": per_qp, "gain_y": delta, "delta_y": delta, "feasible": True,
        "latency": {"mean_ms": mean, "std_ms": std, "n_runs": n, "protocol_hash": "p", "device_name": "cpu: test",
                    "protocol": "cpu, test protocol"},
        "latency_ms": mean, "latency_device": "cpu: test",
    }


def _make_run(tmp_path: Path, *, half_seed2: str = "failed") -> Path:
    """Arms ref and rep finished for seeds 0-2, half for 0-1; half's seed 2 `failed` or still `waiting`."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    study = Study.from_dict(parse_toml(STUDY))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    info = {"format": "rtsr-nas run v1", "run_id": "r1", "optuna_study_name": "t-r1", "storage": "journal",
            "study": study.to_dict(), "device_kind": "cpu", "device_name": "cpu: test",
            "latency_protocol_description": "cpu, test protocol"}
    (run_dir / "run.json").write_text(json.dumps(info))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    s = optuna.create_study(study_name="t-r1", storage=storage, directions=["maximize", "minimize"])
    ref_lat, rep_lat = (100.0, 4.0, 5), (60.0, 3.0, 4)
    for seed in (0, 1, 2):
        for arm, values, lat, h in (("ref", REF, ref_lat, "aaa"), ("rep", REP, rep_lat, "bbb"), ("half", HALF, ref_lat, "aaa")):
            if seed in values:
                attrs = _attrs(arm, seed, values[seed], latency=lat, arch_hash=h)
                s.add_trial(create_trial(state=TrialState.COMPLETE, values=[values[seed], lat[0]], user_attrs=attrs))
            elif half_seed2 == "failed":
                s.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"arm": arm, "seed": seed, "status": "failed",
                                                                            "failure_reason": "fp16 evaluation: boom"}))
            else:
                s.enqueue_trial({"arm": arm, "seed": seed}, user_attrs={"arm": arm, "seed": seed})
    return run_dir


def test_is_ablation_run(tmp_path):
    from reports.ablation import is_ablation_run

    run_dir = _make_run(tmp_path)
    assert is_ablation_run(run_dir)
    assert not is_ablation_run(tmp_path / "absent")
    other = tmp_path / "search"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"study": Study(name="s").to_dict(), "optuna_study_name": "x"}))
    assert not is_ablation_run(other)
    assert "ablation" not in Study(name="s").to_dict()  # search studies keep their identity hash


def test_arm_summaries_differences_and_verdicts_by_hand(tmp_path):
    from reports.ablation import load_ablation

    res = load_ablation(_make_run(tmp_path))
    assert [a.name for a in res.arms] == ["ref", "rep", "half"]  # reference first
    assert res.metrics == ("gain_qp31", "gain_qp63", "delta_y", "latency_ms", "macs_g", "params_k")

    ref = res.arm("ref").summary("delta_y")  # 0.1, 0.3, 0.2: mean 0.2, s 0.1, t(0.975, 2) = 4.3026527
    assert ref.estimate == pytest.approx(0.2) and ref.high - 0.2 == pytest.approx(4.3026527 * 0.1 / math.sqrt(3), abs=1e-6)
    assert res.arm("ref").summary("gain_qp31").estimate == pytest.approx(1.2)
    lat = res.arm("ref").summary("latency_ms")  # one measurement: t over its 5 runs
    assert lat.high - 100 == pytest.approx(2.7764451 * 4 / math.sqrt(5), abs=1e-6)
    assert res.arm("ref").summary("macs_g").low == res.arm("ref").summary("macs_g").high == pytest.approx(5.0015232)

    d = res.difference("rep", "delta_y")  # paired: 0.05, 0.04, 0.06 -> mean 0.05, s 0.01
    assert d.method == "paired t" and d.n == 3
    assert d.estimate == pytest.approx(0.05) and d.high - 0.05 == pytest.approx(4.3026527 * 0.01 / math.sqrt(3), abs=1e-6)
    assert res.difference("half", "delta_y").n == 2  # only the seeds both arms finished
    assert res.difference("half", "latency_ms").estimate == 0 and res.difference("half", "latency_ms").high == 0  # same network

    # latency rep - ref by Welch from the two measurements; relative: in % of the reference's 100 ms
    from scipy import stats

    va, vb = 3.0**2 / 4, 4.0**2 / 5
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    rel = res.difference("rep", "latency_ms", relative=True)
    assert rel.estimate == pytest.approx(-40.0) and rel.high == pytest.approx(-40.0 + half)

    verdicts = {(c.claim.arm, c.claim.metric): c.verdict for c in res.claims}
    # [0.0252, 0.0748] overlaps [0.01, 0.1] and excludes 0
    assert verdicts[("rep", "delta_y")] == "consistent"
    assert verdicts[("rep", "macs_g")] == "consistent"  # exactly 0 difference
    assert verdicts[("rep", "latency_ms")] == "consistent"  # about -40 % +- 5.5 %, inside [-50, -20]
    assert verdicts[("half", "gain_qp63")] == "inconclusive"  # paired differences 0, 0: interval [0, 0] touches 0


def test_markdown_tables(tmp_path):
    from reports.ablation import ablation_markdown

    md = ablation_markdown(_make_run(tmp_path), calibrations=[])
    assert md.startswith("## Ablation `t-ablation`: a test factor")
    assert "trials done: 9 of 9" in md and "in progress" not in md
    lines = md.splitlines()
    ref_row = next(line for line in lines if line.startswith("| ref (reference) |"))
    assert "+0.200 [-0.048, +0.448]" in ref_row  # 0.2 +- 4.3026527 * 0.1 / sqrt(3)
    assert "100.00 [95.03, 104.97]" in ref_row and "| 5.002 |" in ref_row and "| 9.6 |" in ref_row
    rep_diff = next(line for line in lines if line.startswith("| rep | paired t, n=3 |"))
    assert "+0.0500 [+0.0252, +0.0748]" in rep_diff and "-40.00 [-45.52, -34.48]" in rep_diff
    claims = md.split("### Published claims")[1]
    assert "| rep | Delta | +0.0500 [+0.0252, +0.0748] dB (paired t) | increase, [+0.010, +0.100] dB | +0.01 to +0.1 dB | made up for the test | consistent (budget not calibrated) | not calibrated |" in claims
    assert "equal (difference exactly 0)" in claims and "decrease (< 0)" in claims
    assert "- `half` seed 2: failed: fp16 evaluation: boom" in md


def test_markdown_of_a_run_in_progress(tmp_path):
    from reports.ablation import ablation_markdown

    md = ablation_markdown(_make_run(tmp_path, half_seed2="waiting"), calibrations=[])
    assert "trials done: 8 of 9 (run in progress)" in md and "Trials without a result" not in md
    half_row = next(line for line in md.splitlines() if line.startswith("| half |"))
    assert "| 2 |" in half_row  # two seeds so far


def test_figures(tmp_path):
    from reports.ablation import ablation_figures

    figs = ablation_figures(_make_run(tmp_path))
    titles = [f.layout.title.text for f in figs]
    assert len(figs) == 5 and titles[0].startswith("t-ablation: arms")
    assert any("claims vs measured" in t for t in titles)
    table = figs[2].data[0]  # the claims table, one coloured row per claim
    assert list(table.cells.values[-1]) == ["consistent", "consistent", "consistent", "inconclusive"]
    per_arm = figs[3]
    seeds = [tr for tr in per_arm.data if tr.mode == "markers" and tr.name.endswith("seeds")]
    assert sorted(len(tr.y) for tr in seeds) == [2, 3, 3]


def _calibration(tmp_path: Path, steps: tuple[int, ...], *, rho: float) -> Path:
    rows = [{"steps": s, "n": 16, "spearman": {"estimate": rho, "low": rho - 0.3, "high": rho + 0.2}} for s in steps]
    data = {"format": "rtsr-nas calibration v1", "study": "rtsr", "recipe": "proxy_wsd", "data": "builtin", "device": "cpu: test",
            "budgets": {"rungs": list(steps), "long_steps": 3000}, "primary": {"group": "space"}, "groups": {"space": rows}}
    path = tmp_path / "cal" / "calibration.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_verdicts_name_the_calibrated_fidelity_of_their_budget(tmp_path, monkeypatch):
    from reports.ablation import ablation_markdown
    from reports.fidelity import CALIBRATION_ENV, find_calibrations

    run = _make_run(tmp_path)
    steps = int(Study.from_dict(parse_toml(STUDY)).proxy.steps)
    monkeypatch.setenv(CALIBRATION_ENV, str(_calibration(tmp_path, (steps, steps * 3), rho=0.55)))
    md = ablation_markdown(run, calibrations=find_calibrations(cwd=tmp_path))
    assert f"fidelity: {steps} proxy steps rank like 3000 steps with Spearman +0.55 [+0.25, +0.75]" in md
    claims = md.split("### Published claims")[1]
    assert "| consistent | Spearman +0.55 [+0.25, +0.75] |" in claims and "not calibrated" not in claims


def test_a_budget_never_calibrated_is_labelled(tmp_path):
    from reports.ablation import ablation_markdown
    from reports.fidelity import find_calibrations

    run = _make_run(tmp_path)
    steps = int(Study.from_dict(parse_toml(STUDY)).proxy.steps)
    cal = _calibration(tmp_path, (steps + 7, steps * 5), rho=0.3)
    md = ablation_markdown(run, calibrations=find_calibrations([cal.parent], cwd=tmp_path))
    assert f"fidelity: {steps} proxy steps were never calibrated (nearest calibrated budget: {steps + 7} steps, Spearman +0.30 [+0.00, +0.50])" in md
    assert "consistent (budget not calibrated) | not calibrated |" in md
