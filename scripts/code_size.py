"""Print the largest modules and functions of the packages (the restructure's readability targets).

    python scripts/code_size.py            # top 15 of each, and what breaks the targets
    python scripts/code_size.py --top 40

Targets: no module over 600 lines, no function over 80 lines. Exit status 1 when a target is broken,
so the script can gate a change.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("search_space", "trainers", "nas", "reports", "rtsr")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def measure(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, module) and (lines, module:function) for every module and function under the packages."""
    modules, functions = [], []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(root).as_posix()
            modules.append((text.count("\n"), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    args = parser.parse_args(argv)
    modules, functions = measure(Path(__file__).resolve().parents[1])
    print(f"largest modules (target <= {MAX_MODULE_LINES} lines):")
    for n, name in modules[: args.top]:
        print(f"  {n:>5} lines  {name}")
    print(f"\nlongest functions (target <= {MAX_FUNCTION_LINES} lines):")
    for n, name in functions[: args.top]:
        print(f"  {n:>5} lines  {name}")
    over = [m for m in modules if m[0] > MAX_MODULE_LINES] + [f for f in functions if f[0] > MAX_FUNCTION_LINES]
    print(f"\n{len(modules)} modules, {len(functions)} functions; over target: {len(over)}")
    for n, name in over:
        print(f"  {n:>5} lines  {name}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
