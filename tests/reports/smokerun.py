"""One real `nas.run --study smoke` per test session, shared by tests/reports, tests/nas/test_export.py and
tests/nas/test_driver_e2e.py (which asserts on its journal, stdout and wall time instead of launching
the same command again).

Why by path: both test folders ask for it, and a session fixture defined in two conftest files
would run twice. The run lives at a fixed place under pytest's session temp dir; a `DONE` marker
says it finished, so the second caller reuses it. Under pytest-xdist (README's suite command) that
place is the session's dir above the workers' own, and a file lock makes the first worker that
needs the run make it while another that needs it meanwhile waits: one run per session either way.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["REPO", "smoke_run", "smoke_run_output"]

REPO = Path(__file__).resolve().parents[2]


def _shared_dir(basetemp: Path) -> Path:
    """Where the session's smoke run lives: pytest's temp dir, or above it under pytest-xdist (whose
    workers each get `<session dir>/popen-gwN`)."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


def smoke_run(basetemp: Path) -> Path:
    """The run dir of the session's smoke run (started on first use, ~20-30 s on 2 cores)."""
    root = _shared_dir(basetemp)
    with open(root / "smoke-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        return _make_once(root)


def _make_once(root: Path) -> Path:
    run_dir = root / "smoke-run"
    done = root / "smoke-run.DONE"
    if done.is_file():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    ray_tmp = tempfile.mkdtemp(prefix="rtsr-rep-", dir="/tmp")  # short path: Ray's socket-path limit
    env = dict(os.environ, RTSR_RAY_TEMP_DIR=ray_tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nas.run", "--study", "smoke", "--out", str(run_dir), "--no-progress"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"smoke run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (root / "smoke-run.stdout").write_text(proc.stdout)
    (root / "smoke-run.wall_s").write_text(f"{time.perf_counter() - started:.3f}\n")
    done.write_text("ok\n")
    return run_dir


def smoke_run_output(basetemp: Path) -> tuple[Path, str, float]:
    """The session's smoke run (made if needed): its run dir, its stdout and its wall time in seconds."""
    run_dir = smoke_run(basetemp)
    root = _shared_dir(basetemp)
    return run_dir, (root / "smoke-run.stdout").read_text(), float((root / "smoke-run.wall_s").read_text())
