"""Every documented command-line entry point starts and explains itself (`--help` exits 0)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: `--help` of these imports torch on the way (about 1.5 s of interpreter start-up each): slow tests.
IMPORT_TORCH = {"nas.latency", "nas.export", "trainers.full", "search_space.presets"}
ENTRY_POINTS = [pytest.param(m, marks=pytest.mark.slow) if m in IMPORT_TORCH else m
                for m in ("nas.run", "nas.latency", "nas.export", "reports", "trainers.full", "search_space.presets")]
#: `rtsr COMMAND` and the `python -m` entry point it replaces.
SUBCOMMANDS = {"search": "nas.run", "report": "reports", "export": "nas.export", "latency": "nas.latency", "train": "trainers.full"}


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_works(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.slow  # ten interpreter start-ups, four of them importing torch
@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_rtsr_subcommands_take_the_same_flags_as_their_python_m_entry_point(command):
    """`python -m rtsr COMMAND --help` (what the `rtsr` console script runs) lists the same options."""
    new = subprocess.run([sys.executable, "-m", "rtsr", command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    old = subprocess.run([sys.executable, "-m", SUBCOMMANDS[command], "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert new.returncode == 0 and old.returncode == 0, new.stderr + old.stderr
    assert new.stdout.startswith(f"usage: rtsr {command} ")
    options = [re.findall(r"^\s+(-[-\w]+)", text, flags=re.M) for text in (new.stdout, old.stdout)]
    assert options[0] == options[1] and len(options[0]) >= 2


def test_rtsr_without_a_known_command_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "rtsr", "serach"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown command 'serach'" in proc.stderr
    assert all(name in proc.stderr for name in SUBCOMMANDS)


def test_readme_quick_start_is_two_commands_that_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = [line.strip()[2:] for line in readme.splitlines() if line.strip().startswith("$ ")]
    assert commands[:2] == [
        "bash scripts/setup.sh && .venv/bin/python -m nas.run --study rtsr",
        "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q -n 2 --dist loadfile",
    ]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/setup.sh --test" in ci and "README.md" in ci


@pytest.mark.slow  # a nas.run launch (it imports torch before it looks the study up)
def test_unknown_study_is_one_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "nas.run", "--study", "no_such_study"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "no_such_study" in proc.stderr and "Traceback" not in proc.stderr
