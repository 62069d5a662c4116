"""`python -m reports --format md` and `trials.csv` on a hand-made run with a known front."""

from __future__ import annotations

import csv

import pytest
from fakerun import make_run

from rtsr.report import main


def _md_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| trial")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_markdown_pareto_table(fake_run, capsys):
    assert main(["--run", str(fake_run), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "cpu: Test CPU (1 thread)" in out and "8 of 10 trials done (in progress)" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("| trial"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "trial", "arch", "val gain [dB]", "test gain [dB]", "test vs linear [dB]", "test QP31 [dB]", "test QP63 [dB]",
        "latency [ms]", "MACs [G]", "params [k]", "preset"]
    assert "selected on the val split" in out
    rows = _md_rows(out)
    # the hand-made front by increasing latency: val gain, then test = val - 0.25 dB, and test over the
    # linear baseline = test - 0.125 dB (fakerun's offsets), per QP too
    assert [[r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[10]] for r in rows] == [
        ["8", "+0.500", "+0.250", "+0.125", "+0.250", "+0.250", "5.000", "lanczospp"],
        ["0", "+1.000", "+0.750", "+0.625", "+1.250", "+0.250", "10.000", "urpnet"],
        ["1", "+2.000", "+1.750", "+1.625", "+2.250", "+1.250", "20.000", "-"],
    ]
    # MACs/params of the presets' deploy forms (DESIGN.md table: URPNet 1.22 G / 9.4 k, LanczosPP 1.23 G / 21.4 k)
    assert rows[1][8] == "1.219" and rows[1][9] == "9.4"
    assert rows[0][8] == "1.232" and rows[0][9] == "21.4"
    # md also refreshes trials.csv
    assert (fake_run / "trials.csv").is_file()


def test_markdown_with_an_empty_front(tmp_path, capsys):
    run = make_run(tmp_path / "r", [
        {"state": "FAIL", "status": "failed", "latency": 3.0, "reason": "boom"},
        {"status": "skipped", "latency": 300.0, "feasible": False},
    ])
    assert main(["--run", str(run), "--format", "md"]) == 0
    assert "No feasible trained trial yet, so the front is empty." in capsys.readouterr().out


def test_trials_csv_lists_every_trial_with_reasons(fake_run, fake_front, capsys):
    assert main(["--run", str(fake_run), "--format", "csv"]) == 0
    with open(fake_run / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["trial"]) for r in rows] == list(range(9))
    assert [int(r["trial"]) for r in rows if r["pareto"] == "True"] == sorted(fake_front)
    by = {int(r["trial"]): r for r in rows}
    assert by[5]["status"] == "failed" and by[5]["reason"] == "training diverged at step 7" and by[5]["gain_db"] == ""
    assert by[4]["status"] == "skipped" and by[4]["reason"] == "latency_ms over by 100" and by[4]["gain_db"] == ""
    assert by[7]["state"] == "RUNNING"
    assert float(by[0]["gain_qp31_db"]) == 1.5 and float(by[0]["gain_qp63_db"]) == 0.5
    # both baselines, both splits (fakerun: linear baseline 0.125 dB above Lanczos, test 0.25 dB below val)
    assert [float(by[0][k]) for k in ("gain_db", "gain_linear_db", "test_gain_db", "test_gain_linear_db")] == [1.0, 0.875, 0.75, 0.625]
    assert by[5]["test_gain_db"] == "" and by[4]["gain_linear_db"] == ""
    assert float(by[3]["latency_ms"]) == 150.0 and by[3]["feasible"] == "False"
    assert by[6]["duplicate_of"] == "1"
    assert (fake_run / "trials.csv").stat().st_mode & 0o777 == 0o644


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reports: error: run directory") and "pass --run" in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_ablation_runs_use_the_ablation_module(fake_run, capsys, monkeypatch, fmt):
    """An ablation run prints `reports.ablation.ablation_markdown` instead of the Pareto table."""
    import sys
    import types

    fake = types.ModuleType("reports.ablation")
    fake.is_ablation_run = lambda run_dir: True
    fake.ablation_markdown = lambda run_dir: "| arm | Delta |\n|---|---|\n| ref | 0 |\n"
    monkeypatch.setitem(sys.modules, "reports.ablation", fake)
    assert main(["--run", str(fake_run), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "md":
        assert out == "| arm | Delta |\n|---|---|\n| ref | 0 |\n"
    else:
        assert "trials.csv" in out
