"""mypy passes on nas/ and search_space/ (configuration: `[tool.mypy]` in pyproject.toml).

Why a test: CI runs the suite (README: `bash scripts/setup.sh --test && .venv/bin/python -m pytest -q -n 2 --dist loadfile`),
so the type check runs wherever the tests do, with the mypy of the test extra. Slow: a fresh run reads
torch's stubs (about 40 s on 2 cores); repeated runs use `.mypy_cache` (about 1 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_is_clean_on_nas_and_search_space():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout


def test_mypy_checks_the_folders_the_issue_names():
    from search_space.configio import load_toml

    config = load_toml(REPO / "pyproject.toml")["tool"]["mypy"]
    assert set(config["files"]) == {"nas", "search_space"}
