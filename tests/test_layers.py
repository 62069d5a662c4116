"""The layers point one way: rtsr (commands) -> reports -> nas -> trainers -> search_space.

Walks every module's imports (also those inside functions) and fails on an import of a higher
layer. The one exception is a `__main__.py` doorway: it exists only so that a historical
`python -m nas.run` (or `nas.export`, `nas.latency`, `reports`, `trainers.full`) keeps working, and
may import the command layer and nothing else above its own layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"search_space": 0, "trainers": 1, "nas": 2, "reports": 3, "rtsr": 4}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def upward_imports(root: Path = REPO) -> list[str]:
    """'file:line imports module' for every import of a higher layer (doorways excepted)."""
    found = []
    for package, level in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            doorway = path.name == "__main__.py"
            for line, module in _imports(path):
                target = LAYERS.get(module.split(".")[0], -1)
                if target <= level or (doorway and module.split(".")[0] == "rtsr"):
                    continue
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker itself: an upward import inside a function is found; a doorway is allowed."""
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / "bad.py").write_text("def f():\n    from reports import build_dashboard\n")
    (tmp_path / "nas" / "__main__.py").write_text("from rtsr.search import main\n")
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "__main__.py").write_text("import reports.tables\n")
    assert sorted(upward_imports(tmp_path)) == ["nas/bad.py:2 imports reports", "trainers/__main__.py:1 imports reports.tables"]


@pytest.mark.parametrize("package", ["search_space", "nas.latency"])
def test_torch_only_layers_do_not_import_heavy_packages_at_import_time(package):
    """GPU machines may lack optuna/ray/plotly/thop: these must import with torch alone."""
    import subprocess
    import sys

    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('optuna', 'ray', 'plotly', 'thop', 'pandas'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"importlib.import_module({package!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
