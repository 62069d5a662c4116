"""Every documented command-line entry point starts and explains itself (`--help` exits 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ENTRY_POINTS = ["nas.run", "nas.latency", "nas.export", "reports", "trainers.full", "search_space.presets"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_works(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_readme_quick_start_is_two_commands_that_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = [line.strip()[2:] for line in readme.splitlines() if line.strip().startswith("$ ")]
    assert commands[:2] == [
        "bash scripts/setup.sh && .venv/bin/python -m nas.run --study rtsr",
        "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q",
    ]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/setup.sh --test" in ci and "README.md" in ci


def test_unknown_study_is_one_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "nas.run", "--study", "no_such_study"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "no_such_study" in proc.stderr and "Traceback" not in proc.stderr
