"""One real `nas.run --study smoke` per test session, shared by tests/reports, tests/nas/test_export.py and
tests/nas/test_driver_e2e.py (which asserts on its journal, stdout and wall time instead of launching
the same command again).

Why by path: both test folders ask for it, and a session fixture defined in two conftest files
would run twice. The run lives at a fixed place under pytest's session temp dir; a `DONE` marker
says it finished, so the second caller reuses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["REPO", "smoke_run", "smoke_run_output"]

REPO = Path(__file__).resolve().parents[2]


def smoke_run(basetemp: Path) -> Path:
    """The run dir of the session's smoke run (started on first use, ~40-60 s on 2 cores)."""
    run_dir = basetemp / "smoke-run"
    done = basetemp / "smoke-run.DONE"
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
    (basetemp / "smoke-run.stdout").write_text(proc.stdout)
    (basetemp / "smoke-run.wall_s").write_text(f"{time.perf_counter() - started:.3f}\n")
    done.write_text("ok\n")
    return run_dir


def smoke_run_output(basetemp: Path) -> tuple[Path, str, float]:
    """The session's smoke run (made if needed): its run dir, its stdout and its wall time in seconds."""
    run_dir = smoke_run(basetemp)
    return run_dir, (basetemp / "smoke-run.stdout").read_text(), float((basetemp / "smoke-run.wall_s").read_text())
