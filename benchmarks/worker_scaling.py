"""Worker scaling: the same search with 1 and with 2 workers, next to what the cores themselves give.

Issue 21 asks that 8 `rtsr` trials with 2 workers on 2 cores take at most 1/1.7 of the wall time of
one worker. A search is not only training: Ray starts, the data is loaded, and every new network's
latency is timed with the device held exclusively (nothing trains while a network is timed, so a
latency batch first waits for the running trainings to finish and then uses one core), which no
number of workers speeds up. So this script measures, in one run, one after the other:

1. **The cores' ceiling**: a plain 3x3 conv train step (`train_throughput.peak_conv_gflops`) in one
   process alone, then in two processes at once (1 torch thread each). Two jobs on two cores of a
   VM can share caches, memory bandwidth or a physical core; their summed throughput over one job's
   is the best any 2-worker search could do.
2. **The search twice**: `python -m nas.run --study rtsr --trials 8 --workers W --fresh` for W = 1
   and 2 (same seed, so the same sampled archs; each its own run folder), wall time of the command.
   From each run's log: the latency batches' seconds (request to result, the wait for running
   trainings included), summed.

    python benchmarks/worker_scaling.py                       # the study's own rungs (900/2700 steps)
    python benchmarks/worker_scaling.py --steps 300 --out benchmarks/results/worker_scaling_cpu_steps300.md
                                                              # shorter rungs: start-up and latency weigh more

Both runs must do the same work for the ratio to mean anything: the same sampled trials (seed 0;
the first 8 are TPE's random start-up trials) and the same promotions, which `nas.promotion`
decides in trial order so that they do not depend on which training ended first. The report says
whether the two logs agree.

Writes benchmarks/results/worker_scaling_cpu.md (and .json beside it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SPEEDUP = 1.7
#: The scheduler's line for a finished latency batch (`nas.scheduler`; tests/benchmarks checks the two agree).
LATENCY_LINE = re.compile(r"^latency batch: (\d+) network\(s\) timed in ([0-9.]+) s .*?; (\d+) expected to end sooner ran meanwhile")
TRAINED_LINE = re.compile(r"^trial\s+(\d+)\s.*\bgain [+-]")
RUNG_LINE = re.compile(r"^trial\s+(\d+) rung (\d+) \(\d+ steps\): gain")


def parse_search_log(log: str) -> dict[str, Any]:
    """What one `nas.run` log says about its scheduling: each latency batch (networks, seconds from
    request to result, trainings that filled its drain), the trials trained at rung 0 and the
    (rung, trial) of every higher-rung result, so two runs can be checked to have done the same work."""
    lines = log.splitlines()
    batches = [(int(m.group(1)), float(m.group(2))) for m in map(LATENCY_LINE.match, lines) if m]
    fills = sum(int(m.group(3)) for m in map(LATENCY_LINE.match, lines) if m)
    trained = sorted(int(m.group(1)) for m in map(TRAINED_LINE.match, lines) if m)
    promoted = sorted((int(m.group(2)), int(m.group(1))) for m in map(RUNG_LINE.match, lines) if m)
    return {"latency_batches": batches, "latency_s": sum(s for _, s in batches), "drain_fills": fills,
            "rung0_trained": len(trained), "rung_results": len(promoted), "trained": trained, "promoted": promoted}


def same_work(one: dict[str, Any], two: dict[str, Any]) -> str:
    """Whether two parsed runs trained the same trials at rung 0 and promoted the same ones, in words."""
    if one.get("trained") is None or two.get("trained") is None:
        return "not recorded"
    if one["trained"] == two["trained"] and one["promoted"] == two["promoted"]:
        ups = ", ".join(f"{trial} (rung {rung})" for rung, trial in one["promoted"]) or "none"
        return f"yes: rung 0 trials {', '.join(map(str, one['trained']))}; promoted {ups}"
    return f"**no**: rung 0 {one['trained']} vs {two['trained']}; promoted (rung, trial) {one['promoted']} vs {two['promoted']}"


def _peak_worker(steps: int, queue: Any) -> None:
    import torch

    from benchmarks.train_throughput import peak_conv_gflops

    torch.set_num_threads(1)
    queue.put(peak_conv_gflops(device=torch.device("cpu"), precision="fp32", batch=8, patch=48, steps=steps))


def cores_ceiling(*, steps: int) -> dict[str, float]:
    """GFLOP/s of the plain-conv train step: one process alone, then two at once (each 1 thread)."""
    ctx = mp.get_context("spawn")

    def run(n: int) -> list[float]:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_peak_worker, args=(steps, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        values = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return values

    alone = run(1)[0]
    together = run(2)
    return {"alone_gflops": alone, "two_at_once_gflops": sum(together), "ceiling": sum(together) / alone}


def run_search(*, workers: int, trials: int, steps: int | None, out: Path) -> dict[str, Any]:
    """One `nas.run` of the default study; its wall time and the latency batches of its log."""
    cmd = [sys.executable, "-m", "nas.run", "--study", "rtsr", "--trials", str(trials), "--workers", str(workers),
           "--out", str(out), "--fresh", "--no-progress"]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"nas.run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    log = (out / "nas_run.log").read_text() if (out / "nas_run.log").exists() else proc.stdout
    parsed = parse_search_log(log)
    print(f"  {wall:.1f} s wall; {len(parsed['latency_batches'])} latency batch(es), {parsed['latency_s']:.1f} s", flush=True)
    return {"workers": workers, "wall_s": wall, **parsed, "log": log}


def _markdown(result: dict[str, Any]) -> str:
    one, two = result["runs"]
    speedup = one["wall_s"] / two["wall_s"]
    ceiling = result["ceiling"]
    met = "met" if speedup >= TARGET_SPEEDUP else "not met"
    rungs = "the study's own rungs" if result["steps"] is None else f"`--steps {result['steps']}` (rung 0 at that many steps)"
    lines = [
        "# Worker scaling of the default study: 1 vs 2 workers, next to the cores' own ceiling (CPU, 2 cores)",
        "",
        f"Command: `python benchmarks/worker_scaling.py {' '.join(result['argv'])}` ({result['when']}, nothing else running). "
        f"Device: {result['device']}. Study `rtsr`, {result['trials']} trials, seed 0, "
        f"{rungs}; "
        "each search is `nas.run ... --fresh --no-progress` in its own folder, wall time of the whole command (Python and Ray "
        "start, data, latency batches, trainings, report).",
        "",
        "| what | 1 | 2 | ratio |",
        "|---|---:|---:|---:|",
        f"| plain 3x3 conv train step, GFLOP/s summed over the processes (1 thread each) | {ceiling['alone_gflops']:.1f} | "
        f"{ceiling['two_at_once_gflops']:.1f} | {ceiling['ceiling']:.2f}x |",
        f"| search wall time [s] ({one['workers']} vs {two['workers']} workers) | {one['wall_s']:.1f} | {two['wall_s']:.1f} | "
        f"{speedup:.2f}x |",
        f"| latency batches (count, seconds: request to result) | {len(one['latency_batches'])}, {one['latency_s']:.1f} | "
        f"{len(two['latency_batches'])}, {two['latency_s']:.1f} | |",
        f"| trainings started while a batch waited (expected to end sooner) | {one.get('drain_fills', '-')} | "
        f"{two.get('drain_fills', '-')} | |",
        f"| rung-0 trainings / higher-rung results | {one['rung0_trained']} / {one['rung_results']} | "
        f"{two['rung0_trained']} / {two['rung_results']} | |",
        "",
        f"Same trainings in both runs: {same_work(one, two)}.",
        "",
        f"**Speed-up {speedup:.2f}x with 2 workers; issue 21's target (>= {TARGET_SPEEDUP}x) is {met}.** The cores give two "
        f"independent conv jobs {ceiling['ceiling']:.2f}x one job's throughput; the latency batches (one core, nothing "
        f"training) took {two['latency_s']:.1f} s of the 2-worker run's {two['wall_s']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="rung-0 steps (default: the study's)")
    parser.add_argument("--peak-steps", type=int, default=60, help="train steps of the plain-conv ceiling per process")
    parser.add_argument("--out", default=str(RESULTS / "worker_scaling_cpu.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    from nas.latency import device_name_for

    ceiling = cores_ceiling(steps=args.peak_steps)
    print(f"cores: 1 process {ceiling['alone_gflops']:.1f} GFLOP/s, 2 at once {ceiling['two_at_once_gflops']:.1f} "
          f"GFLOP/s ({ceiling['ceiling']:.2f}x)", flush=True)
    with tempfile.TemporaryDirectory(prefix="worker-scaling-") as tmp:
        runs = [run_search(workers=w, trials=args.trials, steps=args.steps, out=Path(tmp) / f"w{w}") for w in (1, 2)]
    result = {"argv": sys.argv[1:] if argv is None else argv, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": device_name_for("cpu").split(" (")[0], "trials": args.trials, "steps": args.steps,
              "ceiling": ceiling, "runs": runs}
    text = _markdown(result)
    print(text)
    if not args.no_write:
        out = Path(args.out)
        out.write_text(text)
        for run in runs:  # each search's own log (its trials' times and latency batches), for reading the timeline
            out.with_name(f"{out.stem}_w{run['workers']}.log").write_text(run.pop("log"))
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
