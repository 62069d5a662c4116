"""Fault injection around Ray: a cluster address where nothing listens, RAY_ADDRESS / `auto`, a lost
local node, and a worker killed mid-task.

The address tests start each `RayExecutor.start()` in a fresh interpreter with a timeout, so that a
hang inside Ray's connection retries (what used to happen) fails the test instead of stalling it,
and so that RAY_ADDRESS / TMPDIR changes reach Ray exactly as from a user's shell. The lost-node tests
script the loss with the shared fake executor; one real-Ray test kills a worker with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nas.driver import SearchDriver
from nas.executor import NodeLostError, TaskError, resolve_ray_address
from nas.study import load_study
from nas.testing import FakeExecutor, fake_training_output
from search_space.errors import UserError

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------------
# Where to run: --address, RAY_ADDRESS, auto
# --------------------------------------------------------------------------------------------------

_START = textwrap.dedent("""
    import sys
    from nas.executor import RayExecutor
    from search_space.errors import UserError
    address = sys.argv[1] or None
    try:
        RayExecutor(address=address, num_cpus=1, say=print).start()
    except UserError as exc:
        print(f"UserError: {exc}")
        sys.exit(2)
    print("started")
""")


def _closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_in_subprocess(tmp_path: Path, address: str | None, **env: str) -> subprocess.CompletedProcess:
    """`RayExecutor(address=...).start()` in a fresh interpreter whose temp folders are under tmp_path."""
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RTSR_RAY_TEMP_DIR")}
    e.update(TMPDIR=str(temp), RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", _START, address or ""], check=False, cwd=REPO, env=e, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow  # Ray in a fresh interpreter, about 2 s
@pytest.mark.parametrize(("address", "env", "named"), [
    ("127.0.0.1:{port}", {}, "--address 127.0.0.1:{port}"),
    (None, {"RAY_ADDRESS": "127.0.0.1:{port}"}, "RAY_ADDRESS=127.0.0.1:{port}"),
])
def test_an_address_where_nothing_listens_is_one_error_in_seconds_and_leaves_no_temp_dir(tmp_path, address, env, named):
    port = _closed_port()
    address = None if address is None else address.format(port=port)
    env = {k: v.format(port=port) for k, v in env.items()}
    started = time.monotonic()
    proc = _start_in_subprocess(tmp_path, address, **env)
    assert time.monotonic() - started < 45  # Ray's own retries took minutes
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stdout.strip().splitlines()[-1]
    assert message.startswith(f"UserError: {named.format(port=port)}: no Ray cluster answers at 127.0.0.1:{port}")
    assert "`ray start --head --port PORT`" in message
    assert ("drop --address" if address else "unset RAY_ADDRESS") in message
    assert list((tmp_path / "tmp").iterdir()) == []  # no rtsr-ray-* (or Ray session) folder leaked


@pytest.mark.slow  # Ray in a fresh interpreter, about 2 s
def test_auto_without_a_ray_start_cluster_is_one_error(tmp_path):
    proc = _start_in_subprocess(tmp_path, "auto")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stdout.strip().splitlines()[-1]
    assert "--address auto: no Ray cluster was started with `ray start` on this machine" in message
    assert "ray_current_cluster" in message and "drop --address to run locally" in message
    assert list((tmp_path / "tmp").iterdir()) == []


def test_addresses_resolve_as_ray_resolves_them(tmp_path, monkeypatch):
    """--address wins over RAY_ADDRESS; RAY_ADDRESS wins over `--address auto`; `auto` reads the address
    file that `ray start` writes; `local` and nothing mean a private Ray."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = f"127.0.0.1:{server.getsockname()[1]}"
        dead = f"127.0.0.1:{_closed_port()}"
        assert resolve_ray_address(None, environ={}) == (None, "local")
        assert resolve_ray_address("local", environ={"RAY_ADDRESS": live}) == (None, "local (--address local)")
        assert resolve_ray_address(None, environ={"RAY_ADDRESS": "local"})[0] is None
        assert resolve_ray_address(None, environ={"RAY_ADDRESS": live}) == (live, f"RAY_ADDRESS={live}")
        assert resolve_ray_address(live, environ={"RAY_ADDRESS": dead}) == (live, f"--address {live}")
        assert resolve_ray_address("auto", environ={"RAY_ADDRESS": live})[0] == live
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(live + "\n")
        target, source = resolve_ray_address("auto", environ={})
        assert target == live and "the cluster `ray start` recorded in" in source
        assert resolve_ray_address(None, environ={"RAY_ADDRESS": "auto"})[0] == live
    with pytest.raises(UserError, match=r"'10\.0\.0\.5' is not a Ray address; use HOST:PORT"):
        resolve_ray_address("10.0.0.5", environ={})


# --------------------------------------------------------------------------------------------------
# A lost local node: stop and re-queue, retries not spent
# --------------------------------------------------------------------------------------------------


class NodeDiesExecutor(FakeExecutor):
    """The fake executor whose node dies when training number `dies_at` (1-based) is submitted: that
    task, every task still in flight and every later one fail with `NodeLostError`, as with Ray."""

    def __init__(self, *, dies_at: int | None, **kw) -> None:
        super().__init__(**kw)
        self.dies_at = dies_at
        self.dead = False

    def _lose_everything(self) -> None:
        for ref in list(self._results):
            self._results[ref] = NodeLostError("the local Ray node died (NodeDiedError: Task failed because the node "
                                               "it was running on is dead or unavailable)")

    def submit_train(self, **kw) -> int:
        ref = super().submit_train(**kw)
        if self.dies_at is not None and len(self.payloads) >= self.dies_at:
            self.dead = True
        if self.dead:
            self._lose_everything()
        return ref

    def submit_latency(self, **kw) -> int:
        ref = super().submit_latency(**kw)
        if self.dead:
            self._lose_everything()
        return ref


def _fake(dies_at: int | None, crashes: set[str] | None = None) -> NodeDiesExecutor:
    """Gain and latency from the channels; a training of an arch hash in `crashes` crashes once."""
    crashes = set() if crashes is None else crashes

    def crash(payload: dict) -> bool:
        from search_space.arch import ArchConfig

        h = ArchConfig.from_dict(payload["arch"]).arch_hash
        if h in crashes:
            crashes.discard(h)
            return True
        return False

    return NodeDiesExecutor(dies_at=dies_at, train=lambda p: fake_training_output(p, p["arch"]["channels"] / 10),
                            latency_ms=lambda arch: [float(arch["channels"])], crash=crash)


def _load(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(run_dir / "journal.log"))))


def _run(run_dir: Path, fake: FakeExecutor, data: dict[str, str]) -> int:
    """The smoke study on `data` (the `tiny_data` overrides) with `fake`."""
    study = load_study("smoke").with_overrides(**data)  # 4 trials, 2 workers, max_retries = 1, presets urpnet + lanczospp first
    return SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run()


def _by_state(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        out.setdefault(t.state.name, []).append(t)
    return out


def test_a_lost_node_requeues_the_trials_in_flight_without_spending_retries_and_stops(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    fake = _fake(dies_at=3)  # two trainings run; the first finishes; the node dies as the third starts
    with pytest.raises(UserError) as info:
        _run(run_dir, fake, tiny_data)
    message = str(info.value)
    assert message.startswith("the local Ray node died (NodeDiedError:")
    assert "1 of 4 trials are done" in message and "rerun the same command to resume" in message

    before = _by_state(_load(run_dir))
    assert len(before["COMPLETE"]) == 1  # what finished before the loss stays finished
    lost = before["FAIL"]
    assert len(lost) == 3  # two trainings in flight + the one asked and waiting: not "crashed" one by one
    assert "the 3 trial(s) in progress were re-queued without spending a retry" in message
    for t in lost:
        assert t.user_attrs["requeued"] is True and t.user_attrs.get("status") != "crashed"
        assert t.user_attrs["failure_reason"].startswith("the local Ray node died (NodeDiedError:")
    queued = before["WAITING"]
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in lost)
    assert all(t.user_attrs["retries"] == 0 for t in queued)  # retries not spent
    queued_params = sorted(tuple(sorted(t.system_attrs["fixed_params"].items())) for t in queued)  # Optuna's enqueued params
    assert queued_params == sorted(tuple(sorted(t.params.items())) for t in lost)

    # Rerun on a healthy node: the re-queued trials run, and each still has its one retry (max_retries
    # = 1): a crash of one of them is retried instead of being final.
    crash_hash = lost[0].user_attrs["arch_hash"]
    healthy = _fake(dies_at=None, crashes={crash_hash})
    assert _run(run_dir, healthy, tiny_data) == 0
    after = _by_state(_load(run_dir))
    assert len(after["COMPLETE"]) == 4  # 1 before + the 3 re-queued ones, none lost to the node
    assert not after.get("WAITING") and not after.get("RUNNING")
    crashed = [t for t in after["FAIL"] if t.user_attrs.get("status") == "crashed"]
    assert len(crashed) == 1 and crashed[0].user_attrs["requeued"] is True  # its retry was still there


def test_without_a_lost_node_the_same_run_completes_in_one_go(tmp_path, tiny_data):
    """The control for the test above: the same study and fake, no loss."""
    assert _run(tmp_path / "run", _fake(dies_at=None), tiny_data) == 0
    states = _by_state(_load(tmp_path / "run"))
    assert len(states["COMPLETE"]) == 4 and not states.get("FAIL")


# --------------------------------------------------------------------------------------------------
# A killed worker: its Ray logs outlive the Ray session
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_keeps_its_logs_in_the_log_dir_after_shutdown(tmp_path, monkeypatch):
    from nas.executor import RayExecutor
    from search_space.presets import get_preset

    monkeypatch.delenv("RTSR_RAY_TEMP_DIR", raising=False)  # a fresh temp dir that shutdown deletes
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    log_dir = tmp_path / "run" / "worker_logs"
    executor = RayExecutor(num_cpus=1, log_dir=log_dir).start()
    try:
        assert executor.temp_dir is not None
        notes = executor.temp_dir / "session_latest" / "logs" / "rtsr-tasks"
        slot = executor.latency_slot("cpu")
        # a latency batch that would time for minutes: killed as soon as it runs
        protocol = {"device_kind": "cpu", "dtype": "float32", "input_hw": [48, 96], "warmup": 0, "runs": 1_000_000,
                    "time_budget_s": 600.0}
        ref = executor.submit_latency(slot=slot, archs=[get_preset("urpnet").arch.to_dict()], device="cpu",
                                      protocol=protocol, threads=1)
        deadline = time.monotonic() + 120
        while not list(notes.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        (note,) = notes.glob("*.json")
        pid = json.loads(note.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # what the OOM killer does
        with pytest.raises(TaskError) as info:
            executor.get(ref, timeout_s=120)
        assert not isinstance(info.value, NodeLostError)  # one worker died, not the node
    finally:
        executor.shutdown()
    assert not executor.temp_dir.exists()  # Ray's session folder is gone ...
    (kept,) = log_dir.iterdir()  # ... and the dead worker's logs are not
    names = sorted(p.name for p in kept.iterdir())
    assert any(n.startswith("python-core-worker-") and n.endswith(f"_{pid}.log") for n in names), names
    assert any(n.startswith("worker-") and n.endswith(f"-{pid}.err") for n in names), names
    reason = str(info.value)
    assert reason.startswith(f"WorkerCrashedError: the worker (pid {pid}) died while running this task")
    assert f"its Ray logs are kept in {kept}" in reason


@pytest.mark.slow
def test_a_killed_training_worker_is_retried_and_its_logs_stay_in_the_run_dir(tmp_path, tiny_eval_flags, stall_inside):
    """`nas.run` on a private Ray: SIGKILL the worker of the first training (held in flight by
    `stall_inside`). The trial is recorded as crashed with a reason that names its logs in
    <run>/worker_logs, its retry completes, no trial completed before the kill is lost, and Ray's temp
    folder is still removed. 4 proxy steps and tiny val/test folders: the plumbing is what is checked."""
    import shutil
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="rtsr-f-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RTSR_RAY_TEMP_DIR")}
    hook, held = stall_inside("nas.executor:train_one")
    env.update(TMPDIR=str(temp), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", **hook)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.run", "--study", "smoke", "--no-progress", "--out", str(run_dir), "--trials", "3",
           "--steps", "4", *tiny_eval_flags]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not held.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert held.exists(), "no training started"
        pid = int(held.read_text())
        notes = [json.loads(n.read_text()) for n in temp.glob("rtsr-ray-*/session_latest/logs/rtsr-tasks/*.json")]
        assert {"entry": "train", "pid": pid}.items() <= next((n for n in notes if n.get("pid") == pid), {}).items(), notes
        before = {t.number for t in _by_state(_load(run_dir)).get("COMPLETE", [])}
        os.kill(pid, signal.SIGKILL)  # what the OOM killer does
        out, _ = proc.communicate(timeout=300)
        leftover = sorted(p.name for p in temp.glob("rtsr-ray-*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, out[-3000:]
    assert leftover == []  # Ray's session folder was removed at shutdown

    states = _by_state(_load(run_dir))
    complete = {t.number for t in states["COMPLETE"]}
    assert before <= complete and len(complete) == 3  # the kill cost no finished trial and no budget
    (crashed,) = [t for t in states["FAIL"] if t.user_attrs.get("status") == "crashed"]
    assert crashed.user_attrs["requeued"] is True
    assert any(t.user_attrs.get("retry_of") == crashed.number for t in states["COMPLETE"])  # its retry completed
    reason = crashed.user_attrs["failure_reason"]
    assert reason.startswith(f"training task: WorkerCrashedError: the worker (pid {pid}) died while running this task")
    (kept,) = (run_dir / "worker_logs").iterdir()
    assert f"its Ray logs are kept in {kept}" in reason
    assert any(p.name.startswith("python-core-worker-") and p.name.endswith(f"_{pid}.log") for p in kept.iterdir())
