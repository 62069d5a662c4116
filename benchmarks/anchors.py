"""Anchored vs unanchored presets: Delta over Lanczos and over the linear baseline, val and test.

Proxy-trains each published preset as published and with each global-residual anchor (none,
nearest, lanczos, linear), at each step budget, on `builtin` data with the `proxy` recipe, and
prints one table: Delta (mean gain at QP31 and QP63) over Lanczos and over the least-squares linear
x4 filter, on the val split (what a search selects on) and on the test split (what it reports).
Jobs run in parallel processes of one torch thread each; every finished job is appended to
`--out` (JSON lines), so a killed run resumes where it stopped.

    python benchmarks/anchors.py                                   # urpnet casr anunet, 300 and 3000 steps
    python benchmarks/anchors.py --presets urpnet --steps 300 --workers 1 --out /tmp/a.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._resumable import cpu_device_label, run_resumable  # noqa: E402

ANCHORS = ("none", "nearest", "lanczos", "linear")
_DATA: Any = None


def _job_key(job: dict[str, Any]) -> tuple[str, str, int, int]:
    return (job["preset"], job["anchor"], int(job["steps"]), int(job["seed"]))


def _init_worker() -> None:
    global _DATA
    import torch

    from trainers.proxy import ProxyData

    torch.set_num_threads(1)
    _DATA = ProxyData.load("builtin", progress=False)


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from search_space.presets import get_preset
    from trainers.proxy import proxy_train

    arch = dataclasses.replace(get_preset(job["preset"]).arch, global_residual=job["anchor"])
    t0 = time.perf_counter()
    result = proxy_train(arch, job["recipe"], _DATA, steps=job["steps"], seed=job["seed"], threads=1, keep_weights=False)
    out = {**job, "arch_hash": arch.arch_hash, "published_anchor": get_preset(job["preset"]).arch.global_residual,
           "ok": result.ok, "reason": result.reason, "wall_s": time.perf_counter() - t0, "train_s": result.train_seconds}
    for split, report in (("val", result.eval), ("test", result.test_eval)):
        if report is not None:
            d = report.to_dict()
            out[split] = {k: d.get(k) for k in ("delta_y", "gain_y", "delta_linear_y", "gain_linear_y")}
            out[split]["per_qp_gain_y"] = {q: m["gain_y"] for q, m in d["per_qp"].items()}
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per (preset, anchor, steps)."""
    lines = [
        "| preset | anchor | steps | val Delta vs Lanczos [dB] | val Delta vs linear [dB] | test Delta vs Lanczos [dB] "
        "| test Delta vs linear [dB] | train [s] |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["preset"], ANCHORS.index(r["anchor"]), r["steps"])):
        label = r["anchor"] + (" (published)" if r["anchor"] == r["published_anchor"] else "")
        if not r["ok"]:
            lines.append(f"| {r['preset']} | {label} | {r['steps']} | failed: {r['reason']} | | | | |")
            continue
        v, t = r.get("val", {}), r.get("test", {})
        lines.append(f"| {r['preset']} | {label} | {r['steps']} | {_fmt(v.get('delta_y'))} | {_fmt(v.get('delta_linear_y'))} "
                     f"| {_fmt(t.get('delta_y'))} | {_fmt(t.get('delta_linear_y'))} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["urpnet", "casr", "anunet"])
    parser.add_argument("--anchors", nargs="+", default=list(ANCHORS), choices=ANCHORS)
    parser.add_argument("--steps", nargs="+", type=int, default=[300, 3000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="proxy")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    parser.add_argument("--out", default="benchmarks/results/anchors_cpu.jsonl", help="JSON lines, appended (resumable)")
    args = parser.parse_args()

    jobs = [dict(preset=p, anchor=a, steps=s, seed=args.seed, recipe=args.recipe)
            for s in sorted(args.steps) for p in args.presets for a in args.anchors]

    def show(row: dict[str, Any]) -> None:
        v = row.get("val", {})
        print(f"{row['preset']:>7} {row['anchor']:>8} {row['steps']:>5} steps: val Delta {_fmt(v.get('delta_y'))} dB "
              f"(vs linear {_fmt(v.get('delta_linear_y'))} dB), train {row['train_s']:.0f} s", flush=True)

    rows = run_resumable(jobs, key=_job_key, run=_run, out=Path(args.out), workers=args.workers, initializer=_init_worker,
                         on_row=show)
    device = cpu_device_label(args.workers)
    print(f"\nbuiltin data, recipe {args.recipe}, seed {args.seed}, {device}\n")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
