"""Training throughput: steps/s and deploy-form GFLOP/s with online re-parameterization on vs off.

Issue 21: a training step should cost what the deploy network costs. For every preset and a seeded
sample of the `rtsr` study's space, the real `Trainer` runs recipe `proxy`'s first stage (batch 8 of
48 px LR patches, L1, Adam, grad clip) with `online_reparam` on and off, alternating rounds so both
see the same machine state; the median round is reported. Next to it, the plain-conv peak: a train
step of one 3x3 conv 64 -> 64 on the same batch and patch size (input gradient included, as an inner
layer's), measured in the same run on the same threads, before and after the archs.

    deploy-form GFLOP/s = 3 x 2 x deploy MACs per patch x batch x steps/s / 1e9   (fwd + bwd = 3 x fwd)

Deploy MACs per patch are `search_space.cost` at the patch size (48 x 48 LR). Data: a synthetic
in-memory training split (random images, LR by 4x4 mean pooling): a step's cost does not depend on
the pixels, and no dataset has to be decoded or cached (a GPU machine starts bare).

    python benchmarks/train_throughput.py                          # CPU, 1 thread: the committed run
    python benchmarks/train_throughput.py --threads 0              # CPU, all cores
    python benchmarks/train_throughput.py --device cuda            # fp32 and bf16 autocast
    python benchmarks/train_throughput.py --archs casr,s00 --steps 5 --rounds 1 --no-write   # smoke

Targets (issue 21, 1 thread): casr >= 5x its steps/s with online re-parameterization off; the median
over presets + sampled archs (online on) >= 30 % of the plain-conv peak; no preset below 10 %.
Writes benchmarks/results/train_throughput_<device>.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search_space.arch import ArchConfig  # noqa: E402
from search_space.cost import cost  # noqa: E402
from search_space.presets import get_preset, list_presets  # noqa: E402
from trainers.data import PairedSet  # noqa: E402
from trainers.degrade import DegradeSpec  # noqa: E402
from trainers.loop import Diverged, Trainer  # noqa: E402
from trainers.recipe import Recipe, load_recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: Plain-conv peak: one 3x3 conv of this width (the issue's reference).
PEAK_WIDTH = 64
#: Issue 21's targets (1 thread).
TARGET_CASR_SPEEDUP = 5.0
TARGET_MEDIAN_OF_PEAK = 0.30
TARGET_PRESET_MIN_OF_PEAK = 0.10
#: Steps of the Trainer far beyond what is timed, so the proxy recipe stays in its first stage.
_TRAINER_HORIZON = 1_000_000


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way of training: precision (fp32, or bf16 autocast on a GPU) and online re-param on/off."""

    precision: str
    online: bool

    @property
    def label(self) -> str:
        return f"{self.precision} {'on' if self.online else 'off'}"


def synthetic_train_set(*, images: int = 4, hr_side: int = 384, seed: int = 0) -> PairedSet:
    """Random HR images and their 4x4-mean LR at one QP: enough for the patch sampler to cut from."""
    rng = np.random.default_rng(seed)
    hrs = tuple(rng.integers(0, 256, size=(hr_side, hr_side, 3), dtype=np.uint8) for _ in range(images))
    lrs = tuple(hr.reshape(hr_side // 4, 4, hr_side // 4, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8) for hr in hrs)
    return PairedSet(names=tuple(f"synthetic{i}" for i in range(images)), hr=hrs, lr={31: lrs}, spec=DegradeSpec(),
                     source="synthetic", split="train")


def sampled_archs(*, study_name: str, n: int, seed: int) -> list[tuple[str, ArchConfig]]:
    """`n` distinct archs of the study's space within its MACs cap, drawn as the study's random
    startup trials are (Optuna `RandomSampler(seed)` through `search_space.ranges.suggest`)."""
    import optuna

    from nas.study import load_study
    from search_space.ranges import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(study_name)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    cap = study.constraints.macs_g
    seen: set[str] = set()
    out: list[tuple[str, ArchConfig]] = []
    for _ in range(n * 20):
        arch = suggest(sampler.ask(), study.search)
        if arch.arch_hash in seen:
            continue
        seen.add(arch.arch_hash)
        if cap is not None and cost(arch).macs > cap * 1e9:
            continue
        out.append((f"s{len(out):02d}", arch))
        if len(out) == n:
            break
    return out


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_conv_gflops(*, device: torch.device, precision: str, batch: int, patch: int, steps: int) -> float:
    """GFLOP/s of a plain 3x3 conv 64 -> 64 train step (Adam), 3 x 2 x MACs per step."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(PEAK_WIDTH, PEAK_WIDTH, 3, padding=1).to(device)
    optimizer = torch.optim.Adam(conv.parameters(), lr=1e-4)
    x = torch.randn(batch, PEAK_WIDTH, patch, patch, device=device, requires_grad=True)

    def step() -> None:
        with _autocast(device, precision):
            loss = conv(x).float().abs().mean()
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    rate = steps / (time.perf_counter() - start)
    macs = batch * patch * patch * PEAK_WIDTH * PEAK_WIDTH * 9
    return 6 * macs * rate / 1e9


class ArchRun:
    """One arch's trainers, one per mode, kept warm across rounds (alternating modes per round)."""

    def __init__(self, arch: ArchConfig, recipe: Recipe, train: PairedSet, modes: list[Mode], device: torch.device,
                 warmup: int) -> None:
        self.trainers: dict[Mode, Trainer] = {}
        self.rates: dict[Mode, list[float]] = {m: [] for m in modes}
        self.errors: dict[Mode, str] = {}
        for mode in modes:
            variant = dataclasses.replace(recipe, online_reparam=mode.online)
            trainer = Trainer(arch, variant, train, total_steps=_TRAINER_HORIZON, seed=0, device=device)
            self.trainers[mode] = trainer
            self._steps(mode, warmup, device)

    def _steps(self, mode: Mode, steps: int, device: torch.device) -> float | None:
        trainer = self.trainers[mode]
        if mode in self.errors:
            return None
        try:
            with _autocast(device, mode.precision):
                _sync(device)
                start = time.perf_counter()
                trainer.run(until=trainer.step + steps)
                _sync(device)
                return time.perf_counter() - start
        except Diverged as exc:  # an untrained network at the proxy lr may blow up: say so, go on
            self.errors[mode] = str(exc)
            return None

    def round(self, steps: int, device: torch.device) -> None:
        for mode in self.trainers:
            seconds = self._steps(mode, steps, device)
            if seconds is not None:
                self.rates[mode].append(steps / seconds)

    def median(self, mode: Mode) -> float | None:
        return statistics.median(self.rates[mode]) if self.rates[mode] else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = all cores (default 1)")
    parser.add_argument("--precision", default=None,
                        help="comma list of fp32, bf16 (bf16 = autocast); default fp32 on CPU, fp32,bf16 on cuda")
    parser.add_argument("--study", default="rtsr", help="study whose space is sampled (default rtsr)")
    parser.add_argument("--sampled", type=int, default=16, help="archs sampled from the study's space (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--archs", default=None,
                        help="comma list of preset names and/or sampled labels (s00, s01, ...) to run (default: all)")
    parser.add_argument("--archs-from", default=None,
                        help="a train_throughput JSON whose sampled archs to reuse (no Optuna needed, e.g. on a GPU machine)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, median reported (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per trainer first (default 3)")
    parser.add_argument("--peak-steps", type=int, default=20, help="timed steps of the plain-conv peak (default 20)")
    parser.add_argument("--recipe", default="proxy", help="recipe whose first stage is trained (default proxy)")
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/train_throughput_<device>)")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    return parser.parse_args(argv)


def _device_label(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch thread(s)"


def _archs(args: argparse.Namespace) -> list[tuple[str, str, ArchConfig]]:
    """(label, source, arch): every preset, then the sampled archs; filtered by --archs."""
    out = [(name, "preset", get_preset(name).arch) for name in list_presets()]
    if args.archs_from:
        previous = json.loads(Path(args.archs_from).read_text())
        sampled = [(row["arch_label"], ArchConfig.from_dict(row["arch"])) for row in previous["rows"]
                   if row["source"] == "sampled"]
    elif args.sampled > 0:
        wanted = None if args.archs is None else {a.strip() for a in args.archs.split(",")}
        needed = wanted is None or any(a.startswith("s") and a[1:].isdigit() for a in wanted)
        sampled = sampled_archs(study_name=args.study, n=args.sampled, seed=args.seed) if needed else []
    else:
        sampled = []
    out += [(label, "sampled", arch) for label, arch in sampled]
    if args.archs is not None:
        wanted = [a.strip() for a in args.archs.split(",") if a.strip()]
        known = {label for label, _, _ in out}
        unknown = [a for a in wanted if a not in known]
        if unknown:
            raise SystemExit(f"--archs: unknown {', '.join(unknown)}; presets: {', '.join(list_presets())}; "
                             f"sampled: s00..s{args.sampled - 1:02d}")
        out = [row for row in out if row[0] in wanted]
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch; run on a GPU machine or use --device cpu")
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    precisions = (args.precision or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    if bad := [p for p in precisions if p not in ("fp32", "bf16")]:
        raise SystemExit(f"--precision: unknown {', '.join(bad)}; use fp32 and/or bf16")
    modes = [Mode(p, online) for p in precisions for online in (True, False)]
    recipe = load_recipe(args.recipe)
    stage = dataclasses.replace(recipe.stages[0], share=1.0)
    recipe = dataclasses.replace(recipe, stages=(stage,))
    batch, patch = stage.batch, stage.patch
    where = _device_label(device, threads)
    print(f"train throughput on {where}; recipe {args.recipe!r} stage 1: batch {batch} of {patch} px LR patches; "
          f"{args.rounds} rounds x {args.steps} steps, median")

    peaks: dict[str, list[float]] = {p: [] for p in precisions}

    def measure_peak() -> None:
        for p in precisions:
            peaks[p].append(peak_conv_gflops(device=device, precision=p, batch=batch, patch=patch, steps=args.peak_steps))
            print(f"  plain 3x3 conv {PEAK_WIDTH}->{PEAK_WIDTH} train step, {p}: {peaks[p][-1]:.1f} GFLOP/s")

    measure_peak()
    train = synthetic_train_set()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for label, source, arch in _archs(args):
        macs = cost(arch, hw=(patch, patch)).macs
        run = ArchRun(arch, recipe, train, modes, device, args.warmup)
        for _ in range(args.rounds):
            run.round(args.steps, device)
        row: dict[str, Any] = {"arch_label": label, "source": source, "summary": arch.summary(), "arch_hash": arch.arch_hash,
                               "arch": arch.to_dict(), "deploy_macs_per_patch": macs, "modes": {}}
        parts = []
        for mode in modes:
            rate = run.median(mode)
            gflops = None if rate is None else 6 * macs * batch * rate / 1e9
            row["modes"][mode.label] = {"steps_per_s": rate, "rounds": run.rates[mode], "gflops": gflops,
                                        "error": run.errors.get(mode)}
            parts.append(f"{mode.label} {_fmt(rate, '.2f')} steps/s {_fmt(gflops, '.2f')} GFLOP/s")
        rows.append(row)
        print(f"  {label:12s} {macs / 1e6:8.2f} MMACs/patch  " + "; ".join(parts), flush=True)
    measure_peak()
    elapsed = time.perf_counter() - started
    result = _summarise(rows, peaks, modes, where=where, args=args, batch=batch, patch=patch, elapsed=elapsed)
    text = _markdown(result)
    print(text)
    if not args.no_write:
        stem = Path(args.out) if args.out else RESULTS / f"train_throughput_{_file_label(device, threads)}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"wrote {stem.with_suffix('.md')} and .json")
    return 0


def _file_label(device: torch.device, threads: int) -> str:
    return "cuda" if device.type == "cuda" else f"cpu{threads}t"


def _summarise(rows: list[dict[str, Any]], peaks: dict[str, list[float]], modes: list[Mode], *, where: str,
               args: argparse.Namespace, batch: int, patch: int, elapsed: float) -> dict[str, Any]:
    peak = {p: statistics.median(v) for p, v in peaks.items()}
    summary: dict[str, Any] = {}
    for mode in modes:
        fractions = {r["arch_label"]: r["modes"][mode.label]["gflops"] / peak[mode.precision]
                     for r in rows if r["modes"][mode.label]["gflops"] is not None}
        for r in rows:
            m = r["modes"][mode.label]
            m["of_peak"] = fractions.get(r["arch_label"])
        presets = [f for label, f in fractions.items() if any(r["arch_label"] == label and r["source"] == "preset" for r in rows)]
        summary[mode.label] = {
            "median_of_peak": statistics.median(fractions.values()) if fractions else None,
            "min_preset_of_peak": min(presets) if presets else None,
            "min_preset": min(((f, label) for label, f in fractions.items() if label in {r["arch_label"] for r in rows if r["source"] == "preset"}),
                              default=(None, None))[1],
        }
    for r in rows:
        r["speedup"] = {}
        for precision in {m.precision for m in modes}:
            on, off = r["modes"][f"{precision} on"]["steps_per_s"], r["modes"][f"{precision} off"]["steps_per_s"]
            r["speedup"][precision] = None if not on or not off else on / off
    return {
        "device": where,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "recipe": args.recipe,
        "batch": batch,
        "patch": patch,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "study": args.study,
        "seed": args.seed,
        "elapsed_s": elapsed,
        "peak_gflops": peak,
        "peak_gflops_measured": peaks,
        "summary": summary,
        "rows": rows,
    }


def _markdown(result: dict[str, Any]) -> str:
    precisions = list(result["peak_gflops"])
    lines = [
        f"# Training throughput, online re-parameterization on vs off ({result['device']})",
        "",
        f"`python benchmarks/train_throughput.py` (torch {result['torch']}): recipe `{result['recipe']}` stage 1, "
        f"batch {result['batch']} of {result['patch']} px LR patches, the real `Trainer`; median of "
        f"{result['rounds']} alternating rounds of {result['steps']} steps after {result['warmup']} warm-up steps. "
        f"Deploy-form GFLOP/s = 3 x 2 x deploy MACs per patch x batch x steps/s; % = of the plain-conv peak "
        f"(a 3x3 conv {PEAK_WIDTH}->{PEAK_WIDTH} train step, same batch and patch, measured before and after the "
        f"archs: " + ", ".join(f"{p} {result['peak_gflops'][p]:.1f} GFLOP/s (" +
                               ", ".join(f"{v:.1f}" for v in result["peak_gflops_measured"][p]) + ")" for p in precisions)
        + f"). Run time {result['elapsed_s'] / 60:.1f} min.",
        "",
    ]
    header = "| arch | source | deploy MMACs/patch |"
    rule = "|---|---|---:|"
    for p in precisions:
        header += f" {p} on steps/s | {p} off steps/s | on/off | {p} on GFLOP/s | on % peak | off % peak |"
        rule += "---:|---:|---:|---:|---:|---:|"
    lines += [header, rule]
    for r in result["rows"]:
        line = f"| {r['arch_label']} `{r['summary']}` | {r['source']} | {r['deploy_macs_per_patch'] / 1e6:.2f} |"
        for p in precisions:
            on, off = r["modes"][f"{p} on"], r["modes"][f"{p} off"]
            line += (f" {_fmt(on['steps_per_s'], '.2f')} | {_fmt(off['steps_per_s'], '.2f')} | "
                     f"{_fmt(r['speedup'][p], '.2f')}x | {_fmt(on['gflops'], '.2f')} | "
                     f"{_fmt(None if on['of_peak'] is None else 100 * on['of_peak'], '.1f')} | "
                     f"{_fmt(None if off['of_peak'] is None else 100 * off['of_peak'], '.1f')} |")
        lines.append(line)
        for mode, m in r["modes"].items():
            if m["error"]:
                lines.append(f"|  | {mode}: {m['error']} |")
    lines.append("")
    for p in precisions:
        s_on, s_off = result["summary"][f"{p} on"], result["summary"][f"{p} off"]
        casr = next((r for r in result["rows"] if r["arch_label"] == "casr"), None)
        casr_speedup = None if casr is None else casr["speedup"][p]
        lines += [
            f"**{p}** (targets of issue 21 are for CPU, 1 thread):",
            f"- casr on/off: {_fmt(casr_speedup, '.2f')}x (target >= {TARGET_CASR_SPEEDUP:g}x)",
            f"- median over all archs, on: {_fmt(_pct(s_on['median_of_peak']), '.1f')} % of peak "
            f"(off: {_fmt(_pct(s_off['median_of_peak']), '.1f')} %; target >= {100 * TARGET_MEDIAN_OF_PEAK:g} %)",
            f"- lowest preset, on: {s_on['min_preset']} at {_fmt(_pct(s_on['min_preset_of_peak']), '.1f')} % "
            f"(target >= {100 * TARGET_PRESET_MIN_OF_PEAK:g} %)",
            "",
        ]
    return "\n".join(lines)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


if __name__ == "__main__":
    sys.exit(main())
