"""End to end: `python -m nas.run` with a real Ray runtime (local and a `ray start` cluster), and
resume after the whole driver process tree is SIGKILLed mid-study.

These run the shipped `nas/studies/smoke.toml` (tiny space, 20 proxy steps); the plain end-to-end run is
the session's shared smoke run (the one the report and export tests read), not a launch of its own.
The kill/resume and cluster cases pass 4 proxy steps and tiny val and test folders: what they check is
the plumbing. The kill lands while a training is held in flight (`stall_inside`, tests/conftest.py). They read the results back through Optuna from the run's journal file,
independently of the driver's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED_ATTRS = {
    "arch", "arch_hash", "arch_summary", "recipe", "recipe_hash", "macs", "params", "latency", "latency_ms",
    "latency_device", "per_qp", "gain_y", "train_seconds", "seed", "status", "feasible", "constraints", "weights",
}

@pytest.fixture()
def env():
    """Subprocess environment: Ray's session files in a short private temp dir (socket-path limit)."""
    ray_tmp = tempfile.mkdtemp(prefix="rtsr-t-", dir="/tmp")
    e = dict(os.environ)
    e.update(RTSR_RAY_TEMP_DIR=ray_tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    yield e
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture()
def flags(tiny_eval_flags) -> list[str]:
    """What the kill/resume and cluster runs pass besides the smoke study: 4 proxy steps, tiny val and
    test folders (the plain run of the shipped study as it is, is the session's shared smoke run)."""
    return ["--steps", "4", *tiny_eval_flags]


def _nas_run(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nas.run", "--study", "smoke", "--no-progress", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _load(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    return optuna.load_study(study_name=name, storage=storage)


def _complete(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _check_trial(t, run_dir: Path) -> None:
    attrs = t.user_attrs
    missing = REQUIRED_ATTRS - set(attrs)
    assert not missing, f"trial {t.number} lacks {missing}"
    assert attrs["status"] in ("ok", "duplicate")
    assert attrs["latency_device"].startswith("cpu: ") and attrs["latency"]["device_kind"] == "cpu"
    assert attrs["latency"]["device_name"] == attrs["latency_device"]
    # objectives: values = [gain over the study's QPs, mean latency]
    per_qp = attrs["per_qp"]
    assert set(per_qp) == {"31", "63"}
    mean_gain = (per_qp["31"]["psnr_y"] - per_qp["31"]["lanczos_psnr_y"] + per_qp["63"]["psnr_y"] - per_qp["63"]["lanczos_psnr_y"]) / 2
    assert t.values[0] == pytest.approx(mean_gain, abs=1e-9)
    assert t.values[1] == attrs["latency"]["mean_ms"] > 0
    # smoke constraints: cpu latency budget 60000 ms and 5 GMACs; feasible <=> all <= 0
    assert attrs["constraints"] == pytest.approx([t.values[1] - 60000.0, attrs["macs"] / 1e9 - 5.0])
    assert attrs["feasible"] is True
    assert (run_dir / attrs["weights"]).is_file()


def _dominated(t, others) -> bool:
    g, lat = t.values
    return any(o.values[0] >= g and o.values[1] <= lat and (o.values[0] > g or o.values[1] < lat) for o in others)


def _shared_smoke_run(basetemp: Path) -> tuple[Path, str, float]:
    """The session's one `nas.run --study smoke --no-progress` (tests/reports/smokerun.py, loaded by path):
    the exact command this test used to launch again. Its run dir, stdout and wall time."""
    import importlib.util

    path = REPO / "tests" / "reports" / "smokerun.py"
    module = sys.modules.get("smokerun")
    if module is None or Path(getattr(module, "__file__", "")) != path:
        spec = importlib.util.spec_from_file_location("smokerun", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.smoke_run_output(basetemp)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path_factory):
    run_dir, out, wall = _shared_smoke_run(tmp_path_factory.getbasetemp())
    assert wall < 120, f"smoke study took {wall:.0f} s (must stay under 2 minutes)"

    study = _load(run_dir)
    complete = _complete(study)
    assert len(complete) == 4 == len(study.trials)
    for t in complete:
        _check_trial(t, run_dir)
    presets = sorted(t.user_attrs.get("preset") for t in complete if t.user_attrs.get("preset"))
    assert presets == ["lanczospp", "urpnet"]  # warm start evaluated first
    assert {t.user_attrs["preset"] for t in complete if t.number < 2} == {"lanczospp", "urpnet"}

    # one log line per finished trial, then the Pareto table; its rows are exactly the front
    assert sum(1 for line in out.splitlines() if re.match(r"trial +\d+ ", line)) == 4
    assert "Pareto front (" in out and "latency on cpu: " in out
    table = out[out.index("Pareto front ("):].split("\n\n")[0].splitlines()[3:]
    rows = {int(line.split()[0]) for line in table}
    front = {t.number for t in complete if not _dominated(t, complete)}
    assert rows == front and rows
    assert (run_dir / "pareto.txt").read_text().startswith("Pareto front (")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["device_kind"] == "cpu" and run["device_name"].startswith("cpu: ")
    assert len((run_dir / "latency.jsonl").read_text().splitlines()) >= len({t.user_attrs["arch_hash"] for t in complete})


@pytest.mark.slow
def test_sigkill_mid_study_then_resume(tmp_path, env, flags, kill_session, stall_inside):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.run", "--study", "smoke", "--no-progress", "--trials", "5", *flags, "--out", str(run_dir)]
    hook, held = stall_inside("nas.executor:train_one")  # the first training is in flight at the kill
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, **hook}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:  # wait for the first finished trial
            if re.match(r"trial +\d+ ", line):
                break
            assert time.monotonic() < deadline, "no trial finished in time"
        assert held.exists()
    finally:
        kill_session(proc)

    before = {t.number: (t.values, t.params, t.user_attrs["arch_hash"]) for t in _complete(_load(run_dir))}
    assert before, "the kill came before any trial completed"
    assert len(before) < 5

    resumed = _nas_run("--trials", "5", *flags, "--out", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = _load(run_dir)
    complete = _complete(study)
    assert len(complete) == 5, [(t.number, t.state, t.user_attrs.get("failure_reason")) for t in study.trials]
    after = {t.number: t for t in complete}
    for number, (values, params, _) in before.items():  # nothing lost, nothing changed
        assert after[number].values == values and after[number].params == params
    for t in complete:
        _check_trial(t, run_dir)
    new = [t for t in complete if t.number not in before]
    assert all(t.user_attrs.get("retry_of") not in before for t in new)
    # a completed architecture is never trained again: a re-sampled one is copied as a duplicate
    trained_before = {h for _, _, h in before.values()}
    assert not [t.number for t in new if t.user_attrs["status"] == "ok" and t.user_attrs["arch_hash"] in trained_before]
    # trials that were running at the kill are failed with a reason and re-queued with the same params
    orphans = [t for t in study.trials if t.user_attrs.get("requeued")]
    assert orphans, "some trials were running when the driver was killed"
    for o in orphans:
        assert "driver stopped" in o.user_attrs["failure_reason"]
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == o.number]
        assert len(retries) == 1 and retries[0].params == o.params and retries[0].user_attrs["retries"] == 1
    assert "resume:" in resumed.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_joins_a_running_ray_cluster(tmp_path, env, flags, kill_session):
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    temp_dir = env["RTSR_RAY_TEMP_DIR"]
    # In a session of its own: the cluster's daemons stay in it, and are stopped by killing the session
    # (`ray stop --force` waited 5-20 s for processes that, reparented, became zombies).
    start = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--temp-dir", temp_dir, "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        out, _ = start.communicate(timeout=120)
        assert start.returncode == 0, out
        run_dir = tmp_path / "run"
        proc = _nas_run("--out", str(run_dir), "--trials", "3", *flags, "--address", f"127.0.0.1:{port}", env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"executor: ray joined 127.0.0.1:{port}" in proc.stdout
        complete = _complete(_load(run_dir))
        assert len(complete) == 3
        for t in complete:
            _check_trial(t, run_dir)
    finally:
        kill_session(start)
