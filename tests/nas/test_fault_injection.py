"""Fault injection on real `python -m nas.run` processes: the driver killed at three moments, a worker
killed, and two drivers racing for one run directory (with and without `--fresh`). Ctrl-C while data
is prepared is tests/test_cli_errors.py's (at every stage of the preparation, then the rerun). Each case counts the COMPLETE trials in the run's journal (read through Optuna, not the
driver) before the fault and after the rerun: nothing finished may be lost, and the budget completes.

They use `--executor local` (a process pool in the driver's process group, so SIGKILL to the group
kills every worker too, and no Ray start-up per run); the Ray path has its own kill/resume test in
test_driver_e2e.py. Studies are the shipped smoke study (4 trials, 20 steps) or a copy of it with a
slow latency protocol, so that a latency batch is wide enough to be killed in.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class Driver:
    """A `nas.run` in its own process group, its stdout read line by line on a thread."""

    def __init__(self, run_dir: Path, *args: str, env: dict[str, str], study: str = "smoke") -> None:
        cmd = [sys.executable, "-m", "nas.run", "--study", study, "--executor", "local", "--no-progress",
               "--out", str(run_dir), *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, *, timeout: float = 180) -> str:
        """Block until a stdout line starts with ``prefix``; fail with the output so far if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        self.kill()
        pytest.fail(f"no line starting with {prefix!r}; output:\n{''.join(self.lines)[-3000:]}\n{self.proc.stderr.read()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (driver and pool workers) and wait for the driver."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def finish(self, *, timeout: float = 300) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"nas.run ran over {timeout:g} s")
        rest: list[str] = []
        while (line := self._queue.get(timeout=30)) is not None:
            rest.append(line)
        return self.proc.returncode, "".join(self.lines + rest), self.proc.stderr.read()


@pytest.fixture()
def env():
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _complete(run_dir: Path) -> dict[int, tuple[float, float]]:
    """{trial number: values} of the COMPLETE trials in the run's journal (empty before the study exists)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not (run_dir / "run.json").exists() or not (run_dir / "journal.log").exists():
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    try:
        study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(run_dir / "journal.log"))))
    except KeyError:  # the study was not created yet
        return {}
    return {t.number: tuple(t.values) for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}


def _resume_and_check(run_dir: Path, before: dict[int, tuple[float, float]], *, env: dict[str, str], trials: int = 4,
                      study: str = "smoke") -> str:
    """Rerun the same command; every trial finished before is still there, unchanged, and the budget is done."""
    code, out, err = Driver(run_dir, "--trials", str(trials), env=env, study=study).finish()
    assert code == 0, out[-3000:] + err[-3000:]
    after = _complete(run_dir)
    assert len(after) >= trials, f"{len(after)} of {trials} trials complete after the rerun"
    assert {n: after.get(n) for n in before} == before, "a trial that had finished was lost or changed"
    return out


def _slow_latency_study(tmp_path: Path) -> Path:
    """The smoke study with a latency protocol that takes seconds per network (a batch to be killed in)."""
    text = (REPO / "nas" / "studies" / "smoke.toml").read_text()
    old = "cpu = { warmup = 1, runs = 3, time_budget_s = 5.0, input_hw = [144, 288] }"
    assert old in text
    path = tmp_path / "slow_latency.toml"
    path.write_text(text.replace(old, "cpu = { warmup = 1, runs = 4, time_budget_s = 20.0, input_hw = [1080, 1920] }"))
    return path


# -- the driver killed at three moments -------------------------------------------------------------


def test_driver_killed_while_preparing_data_then_resumed(tmp_path, env):
    env = dict(env, RTSR_CACHE_DIR=str(tmp_path / "empty_cache"))  # nothing cached: the builtin data is made and encoded
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env=env)
    driver.wait_for("run dir:")
    driver.kill()
    assert not any(line.startswith("data:") for line in driver.lines), "data was ready before the kill: moment missed"
    assert _complete(run_dir) == {}
    _resume_and_check(run_dir, {}, env=env)


def test_driver_killed_during_a_latency_batch_then_resumed(tmp_path, env):
    study = str(_slow_latency_study(tmp_path))
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env=env, study=study)
    driver.wait_for("latency:")  # the probe is done; the first thing scheduled is the warm-start presets' batch
    time.sleep(1.5)
    driver.kill()
    timed = (run_dir / "latency.jsonl").read_text().splitlines() if (run_dir / "latency.jsonl").exists() else []
    assert timed == [] and _complete(run_dir) == {}, "the batch had finished before the kill: moment missed"
    out = _resume_and_check(run_dir, {}, env=env, study=study)
    assert "were failed and re-queued" in out  # the trials the batch was for


def test_driver_killed_with_trainings_in_flight_then_resumed(tmp_path, env):
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, "--trials", "5", env=env)
    driver.wait_for("trial ")  # one trial finished, the other worker is training
    driver.kill()
    before = _complete(run_dir)
    assert 1 <= len(before) < 5
    _resume_and_check(run_dir, before, env=env, trials=5)


# -- a worker killed -----------------------------------------------------------------------------------


def _pool_workers(driver_pid: int) -> list[int]:
    """The driver's process-pool workers (children running multiprocessing's spawn_main)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == driver_pid and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_killed_workers_cost_retries_not_trials(tmp_path, env):
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env=env)
    driver.wait_for("trial ")  # one trial done; the pool is busy with the next ones
    workers = _pool_workers(driver.proc.pid)
    assert workers, "no pool worker found"
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had just finished
    code, out, err = driver.finish()
    assert code == 0, out[-3000:] + err[-3000:]
    assert len(_complete(run_dir)) == 4  # the same run finished its budget: the lost tasks were run again
    assert "worker process died" in (run_dir / "journal.log").read_text()  # the failed attempt's recorded reason


# -- two drivers, one directory --------------------------------------------------------------------------


def test_a_second_driver_with_or_without_fresh_leaves_the_running_one_alone(tmp_path, env):
    run_dir = tmp_path / "run"
    first = Driver(run_dir, env=env)
    first.wait_for("latency:")
    for extra in ((), ("--fresh",)):
        code, out, err = Driver(run_dir, *extra, env=env).finish(timeout=120)
        assert code == 2 and "another nas.run (pid" in err and "Traceback" not in err, (extra, out, err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run")] == ["run"]  # nothing moved aside
    code, out, err = first.finish()
    assert code == 0, out[-3000:] + err[-3000:]
    assert len(_complete(run_dir)) == 4

    # once the first has finished, --fresh moves its run aside and starts a new one
    code, out, err = Driver(run_dir, "--fresh", "--trials", "1", env=env).finish()
    assert code == 0 and "--fresh: the previous run is kept at" in out, out[-2000:] + err[-2000:]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert len(kept) == 1 and len(_complete(kept[0])) == 4 and len(_complete(run_dir)) == 1
