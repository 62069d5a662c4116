"""End to end on a real PostgreSQL (the session's throwaway server, `tests/nas/conftest.py`): the smoke
study with `--storage`, SIGKILLed after two trials and resumed with nothing lost; the dashboard is
built at the end and rebuilt by `python -m reports --run DIR` alone; no file of the run holds the
password, although the first invocation had it in its URL.

The trials are read back through Optuna from the database, independently of the driver's own
bookkeeping. `--executor local`, 4 proxy steps and tiny val and test folders keep a run to seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRIALS = 4

pytestmark = pytest.mark.slow


@pytest.fixture()
def env(tmp_path):
    """Subprocess environment without any password source of our own (no PGPASSWORD, no ~/.pgpass)."""
    ray_tmp = tempfile.mkdtemp(prefix="rtsr-t-", dir="/tmp")
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    e.update(RTSR_RAY_TEMP_DIR=ray_tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
             PGPASSFILE=str(tmp_path / "no-pgpass"))
    yield e
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _complete(url_with_password: str, run_dir: Path) -> dict[int, object]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    storage = optuna.storages.RDBStorage(url_with_password, skip_table_creation=True)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        return {t.number: t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE}
    finally:
        storage.engine.dispose()


def _files_holding(root: Path, secret: bytes) -> list[str]:
    """Every file under `root` (binary included, links not followed) whose bytes contain `secret`."""
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                hits.append(str(path.relative_to(root)))
    return hits


def test_sigkill_then_resume_on_postgres_loses_nothing_and_stores_no_password(tmp_path, postgres_server, postgres_db, env, kill_session,
                                                                              tiny_eval_flags):
    server = postgres_server
    url = postgres_db  # postgresql://rtsr@127.0.0.1:PORT/DB: the password comes from PGPASSWORD
    url_with_password = url.replace(f"://{server.user}@", f"://{server.user}:{server.password}@")
    run_dir = tmp_path / "run"
    common = [sys.executable, "-m", "nas.run", "--study", "smoke", "--no-progress", "--executor", "local",
              "--trials", str(TRIALS), "--steps", "4", *tiny_eval_flags, "--out", str(run_dir)]

    # 1: the password in the URL on the command line (it used to land in run.json's history);
    # SIGKILLed once two trials are done
    log1 = tmp_path / "first.log"
    with open(log1, "a") as err:
        proc = subprocess.Popen([*common, "--storage", url_with_password], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            finished = 0
            assert proc.stdout is not None
            for line in proc.stdout:
                err.write(line)
                if re.match(r"trial +\d+ ", line):
                    finished += 1
                    if finished == 2:
                        break
                assert time.monotonic() < deadline, "two trials did not finish in time"
        finally:
            kill_session(proc)
    assert finished == 2, log1.read_text()[-3000:]
    before = {n: (t.values, t.params) for n, t in _complete(url_with_password, run_dir).items()}
    assert 2 <= len(before) < TRIALS

    # 2: resumed with the URL without password, which libpq completes from PGPASSWORD
    resumed = subprocess.run([*common, "--storage", url], cwd=REPO, env=server.env(env), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = _complete(url_with_password, run_dir)
    assert len(after) == TRIALS, resumed.stdout[-3000:]
    for number, (values, params) in before.items():  # nothing lost, nothing changed
        assert after[number].values == values and after[number].params == params
    assert "resume:" in resumed.stdout
    dashboard = run_dir / "dashboard.html"
    assert f"dashboard: {dashboard}" in resumed.stdout and dashboard.is_file()  # built at the end of the run
    assert json.loads((run_dir / "run.json").read_text())["storage"] == url  # the URL that opens it again

    # 3: the dashboard is rebuilt from run.json alone (the password from the environment)
    dashboard.unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "reports", "--run", str(run_dir)], cwd=REPO, env=server.env(env),
                             capture_output=True, text=True, timeout=180)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert dashboard.is_file()
    # without any password source the reader says where to put it, on one line
    refused = subprocess.run([sys.executable, "-m", "reports", "--run", str(run_dir), "--format", "csv"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "PGPASSWORD" in refused.stderr

    # no file of the run, nor anything the commands printed, holds the password
    secret = server.password.encode()
    assert _files_holding(run_dir, secret) == []
    for text in (log1.read_text(), resumed.stdout, resumed.stderr, rebuilt.stdout, rebuilt.stderr, refused.stderr):
        assert server.password not in text
    history = json.loads((run_dir / "run.json").read_text())["history"]
    assert len(history) == 2 and f"{server.user}:***@" in " ".join(history[0]["argv"])


def test_wrong_password_fails_before_any_work(tmp_path, postgres_server, postgres_db, env):
    """A bad password is reported at once (no data loaded, no worker started), with where to put the right one."""
    run_dir = tmp_path / "run"
    bad = {**env, "PGPASSWORD": "not-the-password"}
    proc = subprocess.run([sys.executable, "-m", "nas.run", "--study", "smoke", "--no-progress", "--executor", "local",
                           "--storage", postgres_db, "--out", str(run_dir)], cwd=REPO, env=bad, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "password authentication failed" in err and "PGPASSWORD" in err
    assert "data:" not in proc.stdout and "executor:" not in proc.stdout  # nothing loaded or started
    assert not (run_dir / "run.json").exists()
