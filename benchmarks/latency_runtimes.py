"""Eager torch vs ONNX Runtime: do the 17 published designs rank the same in the runtime that ships them?

The search ranks designs by eager PyTorch latency; a user deploys in ONNX Runtime (or TensorRT). If
the runtimes order the presets differently, a front found in torch is not the front that ships. This
script runs `python -m nas.latency --preset all --runtime onnxruntime` (every preset's checked ONNX
export in an ORT CPU session, then eager torch under the same protocol; 1 thread, 540p input) and
writes a table with three Spearman rank correlations: eager torch vs ORT on this CPU, and each of
them vs the survey's Table 1 (RTX 4090, fp16), the latter for information only (another device).

    python benchmarks/latency_runtimes.py            # about 5 min on 2 CPU cores; writes results/latency_runtimes_cpu.md/.json
    python benchmarks/latency_runtimes.py --render   # rewrite the markdown from the committed JSON
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
#: Per network: at most this many timed runs after one warm-up, within this many seconds.
CLI_ARGS = ["--preset", "all", "--device", "cpu", "--threads", "1", "--runtime", "onnxruntime", "--runs", "5", "--warmup", "1",
            "--time-budget", "5", "--no-progress"]


def render(doc: dict[str, Any]) -> str:
    """The markdown report of one `nas.latency --out` document with a runtime comparison."""
    from nas.latency import spearman

    comparison = doc["runtime_comparison"]
    runtime = comparison["runtime"]
    table1 = {r["name"]: r["table1_runtime_ms"] for r in doc["results"]}
    rows = comparison["networks"]
    eager = [r["eager_torch_ms"] for r in rows]
    other = [r[f"{runtime}_ms"] for r in rows]
    survey = [table1.get(r["name"]) for r in rows]
    known = [i for i, v in enumerate(survey) if v is not None]

    def rho(a: list[float], b: list[float]) -> str:
        value = spearman(a, b)
        return "n/a" if math.isnan(value) else f"{value:+.3f}"

    lines = [
        f"# Latency in eager torch vs {runtime} (CPU, 1 thread): the 17 published presets",
        "",
        f"Command: `python benchmarks/latency_runtimes.py` = `python -m nas.latency {' '.join(CLI_ARGS)} --out ...` "
        f"({doc['generated']}). Device: {doc['device_name']}; software: {doc['software']}. Protocol ({runtime}): "
        f"{doc['protocol_description']}. Eager torch is timed after {runtime}, under the same protocol with runtime torch. "
        "Ratio = ORT / torch (below 1: ORT faster). Table 1 is the survey's RTX 4090 fp16 runtime (another device and "
        "precision: its correlation is for information).",
        "",
        f"| preset | eager torch [ms] | {runtime} [ms] | ratio | Table 1 [ms, RTX 4090] |",
        "|---|---:|---:|---:|---:|",
    ]
    for r, a, b, t in zip(rows, eager, other, survey):
        lines.append(f"| {r['name']} | {a:.1f} | {b:.1f} | {b / a:.2f} | {'-' if t is None else f'{t:.3f}'} |")
    lines += [
        "",
        f"Spearman rank correlation (n = {len(rows)}): eager torch vs {runtime} **{rho(eager, other)}**; "
        f"vs Table 1 (n = {len(known)}): eager torch {rho([eager[i] for i in known], [survey[i] for i in known])}, "
        f"{runtime} {rho([other[i] for i in known], [survey[i] for i in known])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "latency_runtimes_cpu.md"))
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the JSON beside --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out.with_suffix(".json")
    if not args.render:
        from rtsr.latency import main as latency_main

        status = latency_main([*CLI_ARGS, "--out", str(data)])
        if status != 0:
            return status
    from search_space.configio import atomic_write

    text = render(json.loads(data.read_text()))
    print(text)
    atomic_write(out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
