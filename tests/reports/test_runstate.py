"""`nas.runstate.load_run`: what a read-only snapshot of a run says, and that it never touches the run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nas.runstate import load_run
from search_space.errors import UserError


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_records_follow_the_journal(fake_run, fake_front):
    state = load_run(fake_run)
    by = {t.number: t for t in state.trials}
    assert [t.number for t in state.trials] == list(range(9))
    assert [t.number for t in state.pareto()] == fake_front
    assert [t.status for t in state.trials] == ["ok", "ok", "ok", "ok", "skipped", "failed", "duplicate", "running", "ok"]
    # a skipped trial's told gain (0 dB placeholder) is not a measurement
    assert by[4].gain_db is None and by[4].latency_ms == 200.0 and not by[4].trained
    assert by[3].gain_db == 3.0 and by[3].feasible is False and not by[3].pareto
    assert by[5].reason == "training diverged at step 7" and by[5].gain_db is None
    assert by[6].trained and not by[6].pareto  # duplicates repeat their original
    assert by[0].per_qp_gain() == {31: 1.5, 63: 0.5}
    assert by[0].preset == "urpnet" and by[0].weights == "weights/trial-00000.pt"
    assert state.device_name == "cpu: Test CPU (1 thread)"
    assert state.latency_budget_ms == 100.0 and state.qps == (31, 63)
    assert state.counts() == {"ok": 5, "skipped": 1, "failed": 1, "duplicate": 1, "running": 1}
    # 7 COMPLETE + 1 FAIL count against the budget of 10; a trial is still running
    assert state.finished == 8 and state.in_progress


def test_trial_lookup_errors_name_the_range(fake_run):
    state = load_run(fake_run)
    assert state.trial(3).number == 3
    with pytest.raises(UserError, match=r"trial 42 is not in run .*trials 0\.\.8"):
        state.trial(42)


def test_loading_changes_nothing_in_the_run(fake_run):
    before = _snapshot(fake_run)
    time.sleep(0.01)
    load_run(fake_run)
    assert _snapshot(fake_run) == before


def test_loads_while_the_driver_holds_its_locks(fake_run):
    """A dashboard is built while nas.run holds `.lock` and the journal's flock: no waiting on them."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import fcntl, sys, time\n"
          f"a = open({str(fake_run / '.lock')!r}, 'a+'); b = open({str(fake_run / 'journal.log.flock')!r}, 'a+')\n"
          "fcntl.flock(a, fcntl.LOCK_EX); fcntl.flock(b, fcntl.LOCK_EX)\n"
          "print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result: dict = {}
        worker = threading.Thread(target=lambda: result.setdefault("state", load_run(fake_run)), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "load_run waited for the driver's lock"
        assert len(result["state"].trials) == 9
    finally:
        holder.kill()
        holder.wait()


def test_half_written_last_line_is_ignored(fake_run, fake_front):
    """The driver may be mid-append when we copy the journal: the complete lines still load."""
    with open(fake_run / "journal.log", "ab") as fh:
        fh.write(b'{"op_code": 6, "worker_id": "x", "trial_id": 0, "us')
    state = load_run(fake_run)
    assert [t.number for t in state.pareto()] == fake_front


def test_a_run_without_a_journal_yet_has_no_trials(fake_run):
    (fake_run / "journal.log").unlink()
    state = load_run(fake_run)
    assert state.trials == () and state.pareto() == [] and state.in_progress


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing", r"run directory .*missing.* does not exist; pass --run"),
        (lambda d: (d / "file.txt", (d / "file.txt").write_text("x"))[0], r"is a file, not a run directory"),
        (lambda d: (d / "empty", (d / "empty").mkdir())[0], r"has no run\.json"),
    ],
)
def test_user_errors(tmp_path, setup, message):
    with pytest.raises(UserError, match=message):
        load_run(setup(tmp_path))


def test_database_runs_need_the_storage_url(fake_run):
    info = json.loads((fake_run / "run.json").read_text())
    info["storage"] = "postgresql://user:***@db/optuna"
    (fake_run / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"pass --storage"):
        load_run(fake_run)
