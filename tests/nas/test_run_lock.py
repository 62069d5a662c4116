"""One driver per run directory: `hold_run_lock` and `--fresh` (`fresh_run_dir`) against a live holder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.driver import fresh_run_dir, hold_run_lock
from search_space.errors import UserError

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from nas.driver import hold_run_lock
lock = hold_run_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture()
def live_holder(tmp_path):
    """A run dir whose lock another process holds (as a running driver does)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "journal.log").write_text("the live run's journal\n")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run_dir, proc
    proc.kill()
    proc.wait(timeout=30)


def test_a_second_holder_is_refused_with_the_first_ones_pid(live_holder):
    run_dir, proc = live_holder
    with pytest.raises(UserError, match=rf"another nas.run \(pid {proc.pid} on .*\) is using .*--out"):
        hold_run_lock(run_dir)


def test_fresh_does_not_move_a_live_run_and_does_once_it_stopped(live_holder):
    run_dir, proc = live_holder
    with pytest.raises(UserError, match="--fresh cannot move a running study aside"):
        fresh_run_dir(run_dir)
    assert (run_dir / "journal.log").read_text() == "the live run's journal\n"
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"]

    proc.kill()
    proc.wait(timeout=30)
    moved = fresh_run_dir(run_dir)
    assert moved is not None and not run_dir.exists()
    assert moved.name.startswith("run.") and (moved / "journal.log").read_text() == "the live run's journal\n"


def test_fresh_on_a_missing_dir_is_a_no_op(tmp_path):
    assert fresh_run_dir(tmp_path / "nothing") is None


def test_fresh_on_a_file_leaves_it_to_the_out_check(tmp_path):
    not_a_dir = tmp_path / "run"
    not_a_dir.write_text("a file where the run dir should be")
    assert fresh_run_dir(not_a_dir) is None
    assert not_a_dir.read_text() == "a file where the run dir should be"
