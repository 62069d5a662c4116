"""The suite's xdist groups (tests/conftest.py) stay true to the files that share the smoke run.

Why: README's suite command runs two pytest-xdist processes with `--dist loadgroup`; a test file that
starts reading the session's smoke run without joining the `smoke-run` group would make that run
(about 20 s of Ray and training) once more in the other process, and nothing else would notice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_SMOKE_RUN_FILES

REPO = Path(__file__).resolve().parents[1]


def _reads_the_smoke_run(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return "smokerun" in text or "smoke_run" in text


def test_the_smoke_run_group_lists_exactly_the_files_that_read_it():
    readers = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("test_*.py") if _reads_the_smoke_run(p)}
    assert readers - {"tests/test_xdist_groups.py"} == set(SHARED_SMOKE_RUN_FILES)


def test_each_test_is_grouped_by_its_file_or_the_smoke_run(request: pytest.FixtureRequest):
    marker = request.node.get_closest_marker("xdist_group")
    assert marker is not None and marker.args == ("tests/test_xdist_groups.py",)
