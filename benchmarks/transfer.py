"""Does what is learned on one data source carry over to photographs? (issue 24, item 2)

Fits the linear filters (per-QP oracle and QP-blind, kernels 3, 5, 7: the QP-blind ones are also the
`fitted` anchors at step 0) and proxy-trains a few designs (three presets with a fitted 7x7 anchor,
and archs sampled from the `rtsr` study's space) on each training source (`builtin`, `photos`), and
scores everything on the *test* split of every source, per image: gain over Lanczos in PSNR-Y (dB,
mean of the QPs), with a 95 % t-interval over the test images. Every job's row is appended to
`--out` (JSON lines), so a killed run resumes; the Markdown table is rebuilt from all rows.

    python benchmarks/transfer.py                                # builtin and photos, 300 steps
    python benchmarks/transfer.py --steps 100 --sampled 2 --out /tmp/t.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._resumable import cpu_device_label, run_resumable  # noqa: E402

SOURCES = ("builtin", "photos")
PRESETS = ("casr", "urpnet", "anunet")
FILTER_KERNELS = (3, 5, 7)
_DATA: dict[str, Any] = {}


def _load(source: str, qps: tuple[int, ...]) -> Any:
    from trainers.proxy import ProxyData

    if source not in _DATA:
        _DATA[source] = ProxyData.load(source, qps=qps, progress=False)
    return _DATA[source]


def _init_worker(qps: tuple[int, ...], sources: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    for source in sources:
        _load(source, qps)


def per_image_gains(predict: Callable[[np.ndarray, int], Any], pairs: Any) -> dict[str, list[float]]:
    """Per test image and QP: PSNR-Y(prediction) - PSNR-Y(Lanczos) in dB, measured as `trainers.evaluate`
    does (8-bit output, no border crop); ``{"31": [...], "63": [...]}``."""
    from trainers.metrics import lanczos_upscale, psnr, to_uint8

    return {str(qp): [psnr(to_uint8(predict(lr, qp)), hr, y=True) - psnr(lanczos_upscale(lr), hr, y=True)
                      for lr, hr in zip(pairs.lr[qp], pairs.hr)] for qp in pairs.qps}


def _score(predict: Callable[[np.ndarray, int], Any], qps: tuple[int, ...], sources: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    return {source: per_image_gains(predict, _load(source, qps).test) for source in sources}


def _over_qps(per_qp: dict[str, list[float]]) -> list[float]:
    """Per image, the mean over QPs."""
    return list(np.mean([per_qp[q] for q in sorted(per_qp)], axis=0))


def _filter_job(job: dict[str, Any]) -> dict[str, Any]:
    from trainers import linear_baseline as lb

    qps, sources = tuple(job["qps"]), tuple(job["sources"])
    train = _load(job["train"], qps).train
    if job["kind"] == "oracle":  # each QP scored with its own filter: the oracle knows the QP
        filters = lb.fit_per_qp_filters(train, kernel=job["kernel"])
        scores = _score(lambda lr, qp: lb.apply(filters[qp], lr), qps, sources)
    else:
        blind = lb.fit_pooled_filter(train, kernel=job["kernel"])
        scores = _score(lambda lr, qp: lb.apply(blind, lr), qps, sources)
    return {**job, "ok": True, "gains": scores}


def _design_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from search_space.arch import ArchConfig
    from search_space.network import build, deploy
    from trainers.proxy import proxy_train

    qps, sources = tuple(job["qps"]), tuple(job["sources"])
    arch = ArchConfig.from_dict(job["arch"])
    t0 = time.perf_counter()
    result = proxy_train(arch, job["recipe"], _load(job["train"], qps), steps=job["steps"], seed=job["seed"], threads=1)
    row = {**job, "ok": result.ok, "reason": result.reason, "train_s": time.perf_counter() - t0}
    if result.ok:
        net = deploy(build(arch))
        net.load_state_dict(result.deploy_state)

        def predict(lr: np.ndarray, qp: int) -> Any:
            x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).unsqueeze(0).float() / 255.0
            with torch.inference_mode():
                return net(x)[0]

        row["gains"] = _score(predict, qps, sources)
    return row


def _run(job: dict[str, Any]) -> dict[str, Any]:
    return _design_job(job) if job["kind"] == "design" else _filter_job(job)


def _job_key(job: dict[str, Any]) -> str:
    return json.dumps({k: job[k] for k in ("kind", "name", "kernel", "train", "steps", "seed", "recipe", "qps")}, sort_keys=True)


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from nas.calibrate.panel import sample_stratified
    from nas.study import load_study
    from search_space.presets import get_preset

    common = {"qps": list(args.qps), "sources": list(args.sources), "steps": None, "seed": args.seed, "recipe": None}
    jobs = []
    for train in args.sources:
        jobs.append({**common, "kind": "oracle", "name": "linear 7x7 per QP (oracle)", "kernel": 7, "train": train})
        for k in FILTER_KERNELS:
            jobs.append({**common, "kind": "blind", "name": f"linear {k}x{k} QP-blind = fitted{k} at step 0", "kernel": k,
                         "train": train})
    designs = [(f"{p} +fitted7", dataclasses.replace(get_preset(p).arch, global_residual="fitted7")) for p in args.presets]
    sampled = sample_stratified(load_study("rtsr"), n=args.sampled, seed=args.seed) if args.sampled else []
    designs += [(f"s{i:02d} {a.summary()}", a) for i, a in enumerate(sampled)]
    for train in args.sources:
        for name, arch in designs:
            jobs.append({**common, "kind": "design", "name": name, "kernel": None, "train": train, "arch": arch.to_dict(),
                         "steps": args.steps, "recipe": args.recipe})
    return jobs


def _cell(per_qp: dict[str, list[float]] | None) -> str:
    """Mean over QPs per image, with its 95 % t-interval over images, then each QP's mean."""
    from reports.stats import mean_interval

    if not per_qp:
        return "-"
    iv = mean_interval(_over_qps(per_qp))
    qps = " / ".join(f"{np.mean(per_qp[q]):+.3f}" for q in sorted(per_qp, key=int))
    return f"{iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}] ({qps})"


def render(rows: list[dict[str, Any]], sources: tuple[str, ...]) -> str:
    """One row per (thing, training source); one column per test source."""
    head = "| what | trained on | " + " | ".join(f"{s} test: gain vs Lanczos [dB], 95 % CI (per QP)" for s in sources) + " |"
    lines = [head, "|---|---|" + "---:|" * len(sources)]
    order = {"oracle": 0, "blind": 1, "design": 2}
    for r in sorted(rows, key=lambda r: (order[r["kind"]], r["name"], SOURCES.index(r["train"]) if r["train"] in SOURCES else 9)):
        what = r["name"] + (f" ({r['steps']} steps)" if r["kind"] == "design" else "")
        if not r["ok"]:
            lines.append(f"| {what} | {r['train']} | failed: {r['reason']} |" + " |" * (len(sources) - 1))
            continue
        lines.append(f"| {what} | {r['train']} | " + " | ".join(_cell(r["gains"].get(s)) for s in sources) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--sampled", type=int, default=4, help="archs sampled from the rtsr study's space (by MACs)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--recipe", default="proxy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qps", nargs="+", type=int, default=[31, 63])
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    parser.add_argument("--out", default="benchmarks/results/transfer_cpu.jsonl", help="JSON lines, appended (resumable)")
    parser.add_argument("--md", default="benchmarks/results/transfer_cpu.md", help="the Markdown table (rewritten)")
    args = parser.parse_args()
    args.qps, args.sources = tuple(args.qps), tuple(args.sources)

    for source in args.sources:  # prepare (encode, fit) once here, not in every worker at the same time
        print(_load(source, args.qps).summary(), flush=True)

    def show(row: dict[str, Any]) -> None:
        gains = row.get("gains", {})
        print(f"{row['name'][:48]:<48} on {row['train']:<7}: " + ", ".join(f"{s} test {_cell(g)}" for s, g in gains.items())
              + (f" ({row['train_s']:.0f} s)" if "train_s" in row else ""), flush=True)

    rows = run_resumable(_jobs(args), key=_job_key, run=_run, out=Path(args.out), workers=args.workers,
                         initializer=_init_worker, initargs=(args.qps, args.sources), on_row=show)
    device = cpu_device_label(args.workers)
    table = render(rows, args.sources)
    header = (f"# Transfer: trained on one source, scored on each source's test split\n\n"
              f"Command: `python benchmarks/transfer.py {' '.join(sys.argv[1:])}`. QPs {list(args.qps)}; gain = mean over "
              f"the QPs of PSNR-Y minus Lanczos' PSNR-Y per test image (dB; 8-bit output, no border crop), 95 % t-interval "
              f"over the test images, then the mean at each QP. Designs: recipe `{args.recipe}`, {args.steps} steps, seed {args.seed}; a fitted anchor "
              f"holds the QP-blind filter of the training source. Device: {device}.\n\n")
    Path(args.md).write_text(header + table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
