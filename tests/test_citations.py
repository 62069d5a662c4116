"""Every citation in a shipped file leads somewhere a reader can open.

Code, study files, recipes, README and the committed reports once cited research notes
(`reference/...` paths, e.g. the blocks-and-protocol notes) that were never part of the repository,
so a user who opened an ablation report could not follow its source. A citation must name a public
source (the survey's arXiv id and section, a team's repository and file, a paper) or a file of this
repository; this test fails on a `reference/` path, or one of those notes by name, that is not here.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: What is read: text a user gets (code, studies, recipes, docs, reports, scripts).
SUFFIXES = {".py", ".toml", ".md", ".txt", ".sh", ".cfg", ".yml", ".yaml"}
#: Folders that are not the project's own files (environments, caches, build output, run dirs).
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "build", "dist", "runs", "__pycache__", ".mypy_cache",
             ".pytest_cache", ".ruff_cache"}

# Spelled in two pieces so that this file does not match itself.
_REF = "reference" + "/"
CITED_PATH = re.compile(re.escape(_REF) + r"[\w.\-/]+\.\w+")
#: The notes that were cited without their folder (`blocks_and_protocol.md` 1.7): never in the repository.
OUTSIDE_NOTES = re.compile(r"\b(blocks_and_protocol|proxy_fidelity|ais2024_rtsr_survey|avif_lanczos_ray_facts|"
                           r"ecosystem_apis)\.(md|txt)\b")


def _shipped_files() -> list[Path]:
    """The files to read, skipped folders pruned as the walk meets them (not entered: the venv alone
    holds tens of thousands of files)."""
    import os

    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder) / name
            if path.suffix in SUFFIXES and path != Path(__file__).resolve() and path.is_file():
                files.append(path)
    return files


def test_the_scan_sees_the_shipped_files():
    names = {p.relative_to(REPO).as_posix() for p in _shipped_files()}
    assert {"README.md", "search_space/presets.py", "nas/studies/ablations/bias_removal.toml",
            "trainers/recipes/casr.toml", "benchmarks/results/anchors_cpu.md"} <= names


def test_no_citation_points_outside_the_repository():
    dangling = []
    for path in _shipped_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in CITED_PATH.finditer(line):
                cited = match.group(0).rstrip(".")
                if not (REPO / cited).exists() and not (path.parent / cited).exists():
                    dangling.append(f"{path.relative_to(REPO)}:{number}: {cited}")
            for match in OUTSIDE_NOTES.finditer(line):
                if not any(REPO.rglob(match.group(0))):
                    dangling.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert not dangling, ("citations of notes that are not in the repository; cite the public source instead "
                          "(the survey's arXiv id and section, a repository and file, a paper):\n" + "\n".join(dangling))
