"""Proxy optimizer settings, chosen by measurement (issue 20, item 2): does training fall below its start?

For a few designs with a fitted (frozen) anchor, trains the default study's rungs exactly as a
successive-halving run does (`trainers.continuation.train_rung`: recipe `proxy_wsd`, rung after rung
from checkpoints, each rung evaluated after its decay branch) under each optimizer setting of a small
grid, and records at step 0 and every rung: val and test gain over the QP-blind linear baseline
(dB; at step 0 exactly 0 with `fitted7`), and the same after a closed-form refit of the last conv
(`trainers.readout`, evaluation only). The bar (issue 20): no rung's val gain below its step-0 gain
minus 0.005 dB. Rows are appended to `--out` (JSON lines: a killed run resumes); the Markdown table
is rebuilt from all rows. Settings are chosen on val only; test is reported.

    python benchmarks/recipe_sweep.py                          # photos, 3 designs x {L1, MSE} x 2 lrs, rungs 100/300/900
    python benchmarks/recipe_sweep.py --data builtin --lrs 2e-3 --warmups 0.05 --out /tmp/s.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._resumable import cpu_device_label, run_resumable  # noqa: E402

DESIGNS = ("casr", "urpnet", "anunet")
_DATA: Any = None


def _init_worker(source: str, qps: tuple[int, ...]) -> None:
    global _DATA
    import torch

    from trainers.proxy import ProxyData

    torch.set_num_threads(1)
    _DATA = ProxyData.load(source, qps=qps, progress=False)


def _gains(model: Any, data: Any) -> dict[str, float]:
    from trainers.evaluate import evaluate
    from trainers.readout import refit_readout

    out = {}
    refit, _ = refit_readout(model, data.train)
    for split in ("val", "test"):
        out[split] = evaluate(model, getattr(data, split)).gain_linear_y
        out[f"{split}_readout"] = evaluate(refit, getattr(data, split)).gain_linear_y
    return out


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from search_space.arch import ArchConfig
    from search_space.network import build, deploy
    from trainers.continuation import WSDPlan, train_rung
    from trainers.linear_baseline import load_fitted_anchors
    from trainers.recipe import load_recipe

    arch = ArchConfig.from_dict(job["arch"])
    base = load_recipe(job["recipe"])
    from trainers.losses import LossSpec

    stage = dataclasses.replace(base.stages[0], lr=job["lr"], warmup=job["warmup"], loss=LossSpec.from_dict({job["loss"]: 1.0}))
    recipe = dataclasses.replace(base, name=f"{base.name}-{job['loss']}-lr{job['lr']:g}-w{job['warmup']:g}", stages=(stage,))
    rungs = job["rungs"]
    plan = WSDPlan.for_rungs(recipe, min_steps=rungs[0], top_steps=rungs[-1], decay=job["decay"])
    start = build(arch)
    load_fitted_anchors(start, _DATA.train)
    row = {**job, "ok": True, "reason": None, "rung_gains": [{"steps": 0, **_gains(deploy(start), _DATA)}]}
    checkpoint, t0 = None, time.perf_counter()
    for steps in rungs:
        out = train_rung(arch, recipe, _DATA, rung_steps=steps, plan=plan, seed=job["seed"], checkpoint=checkpoint)
        if not out.result.ok:
            row.update(ok=False, reason=out.result.reason)
            break
        net = deploy(build(arch))
        net.load_state_dict(out.result.deploy_state)
        row["rung_gains"].append({"steps": steps, **_gains(net, _DATA)})
        checkpoint = out.checkpoint
    row["train_s"] = time.perf_counter() - t0
    return row


def _job_key(job: dict[str, Any]) -> str:
    keys = ("name", "loss", "lr", "warmup", "rungs", "seed", "recipe", "data", "qps", "decay")
    return json.dumps({k: job.get(k, "l1") for k in keys}, sort_keys=True)  # rows before --losses trained L1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def render(rows: list[dict[str, Any]]) -> str:
    """One row per (design, setting): step-0 and per-rung val / test gains over the QP-blind filter."""
    lines = ["| design | loss | lr | warm-up | rung steps | val [dB] | val, readout [dB] | test [dB] | test, readout [dB] "
             "| min val - step 0 [dB] | train [s] |", "|---|---|---:|---:|---|---|---|---|---|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["name"], r.get("loss", "l1"), r["lr"], r["warmup"])):
        loss = r.get("loss", "l1")
        if not r["ok"]:
            lines.append(f"| {r['name']} | {loss} | {r['lr']:g} | {r['warmup']:g} | failed: {r['reason']} | | | | | | |")
            continue
        g = r["rung_gains"]
        col = {k: " / ".join(_fmt(x[k]) for x in g) for k in ("val", "val_readout", "test", "test_readout")}
        worst = min(x["val"] for x in g[1:]) - g[0]["val"] if len(g) > 1 else None
        lines.append(f"| {r['name']} | {loss} | {r['lr']:g} | {r['warmup']:g} | 0 / {' / '.join(str(x['steps']) for x in g[1:])} "
                     f"| {col['val']} | {col['val_readout']} | {col['test']} | {col['test_readout']} | {_fmt(worst)} "
                     f"| {r['train_s']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="photos")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), help="presets, trained with a fitted 7x7 anchor")
    parser.add_argument("--anchor", default="fitted7")
    parser.add_argument("--losses", nargs="+", default=["l1", "mse"], help="the stage's loss (the recipe's is L1)")
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 2e-3])
    parser.add_argument("--warmups", nargs="+", type=float, default=[0.05], help="share of rung 0's steps")
    parser.add_argument("--rungs", nargs="+", type=int, default=[100, 300, 900])
    parser.add_argument("--decay", type=float, default=0.2)
    parser.add_argument("--recipe", default="proxy_wsd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qps", nargs="+", type=int, default=[31, 63])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/recipe_sweep_cpu.jsonl")
    parser.add_argument("--md", default="benchmarks/results/recipe_sweep_cpu.md")
    args = parser.parse_args()

    from search_space.presets import get_preset
    from trainers.proxy import ProxyData

    print(ProxyData.load(args.data, qps=tuple(args.qps), progress=True).summary(), flush=True)
    jobs = [dict(name=f"{d} +{args.anchor}", arch=dataclasses.replace(get_preset(d).arch, global_residual=args.anchor).to_dict(),
                 loss=loss, lr=lr, warmup=w, rungs=list(args.rungs), seed=args.seed, recipe=args.recipe, data=args.data,
                 qps=list(args.qps), decay=args.decay)
            for d, loss, lr, w in itertools.product(args.designs, args.losses, args.lrs, args.warmups)]
    rows = run_resumable(jobs, key=_job_key, run=_run, out=Path(args.out), workers=args.workers, initializer=_init_worker,
                         initargs=(args.data, tuple(args.qps)), on_row=lambda row: print(render([row]).splitlines()[-1], flush=True))
    device = cpu_device_label(args.workers)
    table = render(rows)
    header = (f"# Proxy optimizer sweep (recipe `{args.recipe}`, rungs {args.rungs} steps as successive halving trains them)\n\n"
              f"Command: `python benchmarks/recipe_sweep.py {' '.join(sys.argv[1:])}`. Data `{args.data}`, QPs {args.qps}, seed "
              f"{args.seed}. Gains: mean over the QPs of PSNR-Y over the QP-blind 7x7 linear baseline of the training split "
              f"(dB), at step 0 and after each rung (`val` is what a search selects on; `test` is reported). `readout`: the "
              f"same model with its last conv refit in closed form on training patches (`trainers.readout`). Bar: "
              f"min over rungs of val minus step 0 >= -0.005 dB. Device: {device}.\n\n")
    Path(args.md).write_text(header + table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
