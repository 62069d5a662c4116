"""No import circle in the project: nas/, reports/, rtsr/, search_space/, trainers/.

Next to `test_layers.py` (which keeps the layers pointing one way), this walks every module's
imports, those inside functions and under `if TYPE_CHECKING:` included, and fails on a cycle between
modules. Why count lazy and type-only imports too: a circle that only exists for types still means
two modules that cannot be read, typed or moved apart (issue 22 found `nas.scheduler` <->
`nas.promotion`, `nas.trial_endings`, `nas.progress` that way), and a lazy import is one refactor
away from a module-level one. An import names the module it reads (`from a.b import c` is `a.b.c`
when that is a module, else `a.b`); a package's `__init__` is not counted as imported by its
submodules' imports (Python runs it first, but it cannot form a circle that matters here: it only
re-exports).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "reports", "rtsr", "search_space", "trainers")

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file)."""
    files = {_module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph())
    assert [sorted(c) for c in found] == [], "import cycles"


def test_the_walker_sees_lazy_and_type_only_cycles(tmp_path):
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / "__init__.py").write_text("")
    (tmp_path / "nas" / "a.py").write_text("def f():\n    from nas.b import g\n")
    (tmp_path / "nas" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nas import a\n")
    (tmp_path / "nas" / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["nas.b"] == {"nas.a"} and graph["nas.c"] == {"nas.a"}
    assert cycles(graph) == [frozenset({"nas.a", "nas.b"})]
