"""What the resumable benchmark scripts share: run jobs in a process pool, append each finished job's
row to a JSON-lines file, skip the jobs already there (a killed run resumes where it stopped).

Why one place: `anchors.py`, `transfer.py` and `recipe_sweep.py` each wrote this loop; the rows are
the committed results, so how they are written and resumed must not drift between scripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def cpu_device_label(workers: int) -> str:
    """'cpu: <model> (1 torch thread per job, N jobs at once)': the device every row carries."""
    from nas.latency import device_name_for

    return f"{device_name_for('cpu').split(' (')[0]} (1 torch thread per job, {workers} jobs at once)"


def run_resumable(
    jobs: Sequence[Row],
    *,
    key: Callable[[Row], Any],
    run: Callable[[Row], Row],
    out: Path,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    on_row: Callable[[Row], None] = lambda row: None,
) -> list[Row]:
    """Run the jobs of ``jobs`` not yet in ``out`` (matched by ``key``), append each row (with the
    device label) as it finishes, and return the rows of ``jobs``, old and new."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    have = {key(r) for r in done}
    todo = [j for j in jobs if key(j) not in have]
    device = cpu_device_label(workers)
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already in {out}; device {device}", flush=True)
    if todo:
        with ProcessPoolExecutor(max_workers=workers, initializer=initializer, initargs=initargs) as pool:
            for fut in as_completed([pool.submit(run, j) for j in todo]):
                row = {**fut.result(), "device": device}
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                done.append(row)
                on_row(row)
    wanted = {key(j) for j in jobs}
    return [r for r in done if key(r) in wanted]
