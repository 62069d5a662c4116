"""A non-editable install works: studies and recipes ship as package data, nothing reads the source tree.

Why this test exists: shipped studies (`nas/studies/`) and recipes (`trainers/recipes/`) are data
files found through `importlib.resources`, and an editable install (what every other test runs
against) would hide a missing `package-data` entry or a path computed from the source tree. So
this does what a user does: a fresh venv, `pip install .` (not -e), then the smoke study from an
empty folder.

No download: the new venv sees this project's dependencies through one `.pth` line naming the
current interpreter's site-packages (a plain path line, so that folder's own `.pth` files, among
them the editable-install finder, are not processed and the source tree stays unimportable). The
venv is made without pip, so pip and setuptools also come from there (the versions the project
is developed with, setuptools >= 68 as pyproject.toml requires). The tree is copied first because
a build writes `build/` and `*.egg-info` next to pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

#: Top-level entries of the checkout that a user's clone would not have, or that only hold outputs.
_NOT_SOURCE = {".git", ".venv", "venv", "runs", "cache", "build", "dist", ".pytest_cache", "__pycache__"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder) == REPO:
        skipped |= _NOT_SOURCE & set(names)
    return skipped


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


@pytest.fixture()
def env():
    """The user's environment minus anything that would point Python or pip at this checkout."""
    ray_tmp = tempfile.mkdtemp(prefix="rtsr-p-", dir="/tmp")  # short: Ray's socket paths have a length limit
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX")}
    e.update(
        PIP_NO_INDEX="1",  # never download: everything comes through the .pth line
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONNOUSERSITE="1",
        RTSR_RAY_TEMP_DIR=ray_tmp,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    yield e
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _build_outputs() -> set[str]:
    return {p.name for p in REPO.iterdir() if p.name in ("build", "dist") or p.name.endswith(".egg-info")}


def test_non_editable_install_runs_the_smoke_study(tmp_path, env, tiny_eval_flags):
    outputs_before = _build_outputs()
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_ignore)
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env, timeout=120)
    assert made.returncode == 0, _explain(made)
    python = venv / "bin" / "python"
    query = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env, timeout=60)
    assert query.returncode == 0, _explain(query)
    site = Path(query.stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])  # this interpreter's site-packages: the project's venv
    (site / "_rtsr_test_dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")

    install = _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        cwd=tmp_path, env=env, timeout=600,
    )
    assert install.returncode == 0, _explain(install)
    assert _build_outputs() == outputs_before, "the install wrote build outputs into the checkout"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(python), "-c", "import nas, trainers; print(nas.__file__); print(trainers.__file__)"],
        cwd=elsewhere, env=env, timeout=120,
    )
    assert where.returncode == 0, _explain(where)
    for line in where.stdout.split():
        assert Path(line).is_relative_to(site), f"{line} is not inside the new venv's site-packages {site}"
    assert (site / "nas" / "studies" / "smoke.toml").is_file()
    assert (site / "nas" / "studies" / "ablations" / "bias_removal.toml").is_file()
    assert (site / "trainers" / "recipes" / "proxy.toml").is_file()
    shipped = _run(
        [str(python), "-c", "from nas.study import list_studies; from trainers.recipe import list_recipes; "
         "print(len(list_studies()), len(list_recipes()))"],
        cwd=elsewhere, env=env, timeout=120,
    )
    assert shipped.returncode == 0, _explain(shipped)
    n_studies = len(list((REPO / "nas" / "studies").rglob("*.toml")))
    n_recipes = len(list((REPO / "trainers" / "recipes").glob("*.toml")))
    assert shipped.stdout.split() == [str(n_studies), str(n_recipes)]  # every shipped file, none from the tree

    run_dir = tmp_path / "run"
    proc = _run(  # the shipped study on Ray, as a user runs it; 4 steps and tiny val/test: only the wiring is checked
        [str(python), "-m", "nas.run", "--study", "smoke", "--out", str(run_dir), "--no-progress", "--steps", "4", *tiny_eval_flags],
        cwd=elsewhere, env=env, timeout=600,
    )
    assert proc.returncode == 0, _explain(proc)
    assert "Pareto front (" in proc.stdout, _explain(proc)
    assert (run_dir / "pareto.txt").is_file()

    # the console script is installed (whether it runs is the rtsr package's own test)
    assert (venv / "bin" / "rtsr").is_file()
