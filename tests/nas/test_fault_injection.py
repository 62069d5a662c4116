"""Fault injection on real `python -m nas.run` processes: the driver killed at three moments, a worker
killed, and two drivers racing for one run directory (with and without `--fresh`). Ctrl-C while data
is prepared is tests/test_cli_errors.py's (at every stage of the preparation, then the rerun). Each case counts the COMPLETE trials in the run's journal (read through Optuna, not the
driver) before the fault and after the rerun: nothing finished may be lost, and the budget completes.

They use `--executor local` (a process pool in the driver's process group, so SIGKILL to the group
kills every worker too, and no Ray start-up per run); the Ray path has its own kill/resume test in
test_driver_e2e.py. The study is the shipped smoke study (4 trials) with 4 proxy steps and tiny val
and test folders (`FLAGS`): the plumbing is what is checked. The moment of a fault is held open with
`stall_inside` (tests/conftest.py: the first call of the named function blocks until the test kills
the command or releases it), not by waiting for a log line and sleeping in work made slow enough.
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
    """A `nas.run` of the smoke study with `flags` in its own process group, its stdout read line by line on a thread."""

    def __init__(self, run_dir: Path, *args: str, env: dict[str, str], flags: list[str]) -> None:
        cmd = [sys.executable, "-m", "nas.run", "--study", "smoke", "--executor", "local", "--no-progress",
               *flags, "--out", str(run_dir), *args]
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


@pytest.fixture()
def flags(tiny_eval_flags) -> list[str]:
    """What every run of a test passes (a resume must pass the same): 4 steps, tiny val and test."""
    return ["--steps", "4", *tiny_eval_flags]


def _wait_for_file(path: Path, driver: Driver, *, timeout: float = 120) -> None:
    """Block until `path` exists (a `stall_inside` marker); fail with the output if the driver ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if driver.proc.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            code, out, err = driver.finish()
            pytest.fail(f"{path.name} never appeared (exit {code}):\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.02)


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


def _resume_and_check(run_dir: Path, before: dict[int, tuple[float, float]], *, env: dict[str, str], flags: list[str],
                      trials: int = 4) -> str:
    """Rerun the same command; every trial finished before is still there, unchanged, and the budget is done."""
    code, out, err = Driver(run_dir, "--trials", str(trials), env=env, flags=flags).finish()
    assert code == 0, out[-3000:] + err[-3000:]
    after = _complete(run_dir)
    assert len(after) >= trials, f"{len(after)} of {trials} trials complete after the rerun"
    assert {n: after.get(n) for n in before} == before, "a trial that had finished was lost or changed"
    return out


# -- the driver killed at three moments -------------------------------------------------------------


def test_driver_killed_while_preparing_data_then_resumed(tmp_path, env, tiny_dataset, stall_inside):
    """Killed while the LR images are encoded into an empty cache (one encode held in flight, others
    may have been written), then resumed with the same command. The training images are
    `tiny_dataset`'s: its preparation is what is killed, in a fraction of a second instead of 8 s."""
    hook, marker = stall_inside("trainers.cache:LRCache._one")
    env = dict(env, RTSR_CACHE_DIR=str(tmp_path / "empty_cache"))  # nothing cached: every image is encoded
    flags = ["--steps", "4", "--data", str(tiny_dataset / "train"), "--val-data", str(tiny_dataset / "val"),
             "--test-data", str(tiny_dataset / "test")]
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env={**env, **hook}, flags=flags)
    _wait_for_file(marker, driver)
    driver.kill()
    assert not any(line.startswith("data:") for line in driver.lines), "data was ready before the kill: moment missed"
    assert _complete(run_dir) == {}
    _resume_and_check(run_dir, {}, env=env, flags=flags)


def test_driver_killed_during_a_latency_batch_then_resumed(tmp_path, env, flags, stall_inside):
    hook, marker = stall_inside("nas.latency:measure_latency_batch")  # the first batch: the warm-start presets'
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env={**env, **hook}, flags=flags)
    driver.wait_for("latency:")  # the probe is done; the first thing scheduled is the warm-start presets' batch
    _wait_for_file(marker, driver)
    driver.kill()
    timed = (run_dir / "latency.jsonl").read_text().splitlines() if (run_dir / "latency.jsonl").exists() else []
    assert timed == [] and _complete(run_dir) == {}, "the batch had finished before the kill: moment missed"
    out = _resume_and_check(run_dir, {}, env=env, flags=flags)
    assert "were failed and re-queued" in out  # the trials the batch was for


def test_driver_killed_with_trainings_in_flight_then_resumed(tmp_path, env, flags, stall_inside):
    hook, marker = stall_inside("nas.executor:train_one")  # the first training stays in flight
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, "--trials", "5", env={**env, **hook}, flags=flags)
    driver.wait_for("trial ")  # one trial finished on the other worker
    assert marker.exists()
    driver.kill()
    before = _complete(run_dir)
    assert 1 <= len(before) < 5
    _resume_and_check(run_dir, before, env=env, flags=flags, trials=5)


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


def test_killed_workers_cost_retries_not_trials(tmp_path, env, flags, stall_inside):
    hook, marker = stall_inside("nas.executor:train_one")  # one worker holds a training while the test kills
    run_dir = tmp_path / "run"
    driver = Driver(run_dir, env={**env, **hook}, flags=flags)
    driver.wait_for("trial ")  # one trial done on the other worker; the pool is busy with the next ones
    workers = _pool_workers(driver.proc.pid)
    assert int(marker.read_text()) in workers, "the held training is not in a pool worker"
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


def test_a_second_driver_with_or_without_fresh_leaves_the_running_one_alone(tmp_path, env, flags, stall_inside):
    hook, marker = stall_inside("nas.latency:measure_latency_batch")  # the first driver is held running
    run_dir = tmp_path / "run"
    first = Driver(run_dir, env={**env, **hook}, flags=flags)
    _wait_for_file(marker, first)
    others = {extra: Driver(run_dir, *extra, env=env, flags=flags) for extra in ((), ("--fresh",))}  # side by side
    for extra, other in others.items():
        code, out, err = other.finish(timeout=120)
        assert code == 2 and "another nas.run (pid" in err and "Traceback" not in err, (extra, out, err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run")] == ["run"]  # nothing moved aside
    assert first.proc.poll() is None
    marker.with_name(marker.name + ".release").touch()
    code, out, err = first.finish()
    assert code == 0, out[-3000:] + err[-3000:]
    assert len(_complete(run_dir)) == 4

    # once the first has finished, --fresh moves its run aside and starts a new one
    code, out, err = Driver(run_dir, "--fresh", "--trials", "1", env=env, flags=flags).finish()
    assert code == 0 and "--fresh: the previous run is kept at" in out, out[-2000:] + err[-2000:]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert len(kept) == 1 and len(_complete(kept[0])) == 4 and len(_complete(run_dir)) == 1
