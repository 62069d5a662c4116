"""`rtsr calibrate` / `python -m nas.calibrate --study NAME`: measure how well the proxy ranks.

Trains a panel (presets + archs sampled from the study's space, stratified by MACs) at every rung
and at a long budget (`nas.calibrate`), then prints and writes `calibration.md`, `calibration.json`
and `calibration.html` in the output directory. Rerunning the same command resumes; with every
training done it only rebuilds the reports.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.calibrate import CalibrationSpec
    from nas.study import Study

__all__ = ["build_parser", "main", "run_from_args"]


def build_parser(*, prog: str = "python -m nas.calibrate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=("Does the proxy rank architectures like a long training? Trains a panel (published presets + archs "
                     "sampled from the study's space, stratified by MACs) at every rung and at a long budget, and reports "
                     "Spearman/Kendall with bootstrap intervals, pairwise accuracy and front recovery per rung. "
                     "Rerunning the same command resumes."),
    )
    parser.add_argument("--study", default="rtsr", help="study name or .toml path (default rtsr); budgets are its [halving] "
                        "rungs, or its [proxy] steps as the one rung")
    parser.add_argument("--sampled", type=int, default=16, help="archs sampled from the study's space, stratified by deploy MACs (default 16)")
    parser.add_argument("--presets", default="cpu", help="published presets in the panel: cpu (default: deploy MACs <= 3 G), all, "
                        "none, or a comma list (e.g. casr,urpnet)")
    parser.add_argument("--long-steps", type=int, help="the long budget in stable steps (default 10 x the rung that decides the "
                        "last promotion, e.g. 10 x 300 = 3000 for rtsr)")
    parser.add_argument("--noise-subset", type=int, default=4, help="archs that also train the long budget with a second seed "
                                                                    "(noise ceiling; default 4)")
    parser.add_argument("--steps", type=int, help="rung 0's steps (overrides [halving] min_steps, scaling every rung; without "
                        "[halving]: [proxy] steps)")
    parser.add_argument("--seed", type=int, help="training and panel-sampling seed (overrides the study's seed)")
    parser.add_argument("--pool", type=int, help="candidates drawn for the stratified sample (default max(64, 8 x --sampled))")
    parser.add_argument("--workers", type=int, default=2, help="trainings at once (default 2)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local (default: a process pool on this machine) or ray (local Ray, or a cluster with --address)")
    parser.add_argument("--address", help="join a running Ray cluster (with --executor ray)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (auto: cuda when available)")
    parser.add_argument("--out", help="output directory (default runs/calibrate-<study>)")
    parser.add_argument("--data", help="HR training images: 'builtin', 'photos' or a folder")
    parser.add_argument("--val-data", help="HR validation images (selection split): 'builtin', 'photos' or a folder")
    parser.add_argument("--test-data", help="HR test images (reported only): 'builtin', 'photos' or a folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _log(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
    except ImportError:  # pragma: no cover
        print(text)
    sys.stdout.flush()


def _study(args: argparse.Namespace) -> tuple[Study, Path]:
    from nas.study import find_study_file, load_study
    from search_space.errors import UserError

    path = find_study_file(args.study)
    study = load_study(path)
    if study.ablation is not None:
        raise UserError(f"{args.study} is an ablation study; calibrate a search study (e.g. --study rtsr)")
    overrides = {"seed": args.seed, "data__train": args.data, "data__val": args.val_data, "data__test": args.test_data,
                 ("proxy__steps" if study.halving is None else "halving__min_steps"): args.steps}
    study, notice = study.with_overrides(**overrides).with_available_data(progress=not args.no_progress)
    if notice:
        _log(f"nas.calibrate: {notice}")
    return study, path


def _device(requested: str) -> str:
    import torch

    from nas.device import choose_device

    return choose_device(requested, has_cuda=torch.cuda.is_available())


def _device_name(kind: str, threads: int) -> str:
    import torch

    from nas.latency import device_name_for

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return device_name_for(kind)
    finally:
        torch.set_num_threads(before)


def _spec(args: argparse.Namespace, study: Study) -> CalibrationSpec:
    from nas.calibrate import CalibrationSpec, resolve_presets, select_panel
    from search_space.errors import UserError

    for flag, value, low in (("--sampled", args.sampled, 0), ("--workers", args.workers, 1), ("--long-steps", args.long_steps, 1),
                             ("--pool", args.pool, 1), ("--steps", args.steps, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    t0 = time.perf_counter()
    panel = select_panel(study, sampled=args.sampled, presets=resolve_presets(args.presets), seed=study.seed, pool=args.pool)
    spec = CalibrationSpec.build(study, panel=panel, long_steps=args.long_steps, noise=args.noise_subset,
                                 device_kind=_device(args.device), panel_seed=study.seed)
    from nas.calibrate.panel import panel_summary

    _log(f"{panel_summary(panel)}; chosen in {time.perf_counter() - t0:.1f} s")
    return spec


def _train(args: argparse.Namespace, spec: CalibrationSpec, store: Any, recipe: Any, device_name: str) -> int:
    """Load the data, start the executor and train what is left; returns the exit code."""
    from nas.calibrate import CalibrationRunner
    from trainers.proxy import ProxyData

    data_spec = spec.study.data
    t0 = time.perf_counter()
    data = ProxyData.load(data_spec.train, data_spec.val, data_spec.test, qps=data_spec.qps, progress=not args.no_progress)
    _log(f"{data.summary()}; loaded in {time.perf_counter() - t0:.1f} s")
    if args.executor == "local":
        from nas.local_executor import LocalExecutor

        executor: Any = LocalExecutor(workers=args.workers, address=args.address)
    else:
        from nas.executor import RayExecutor

        executor = RayExecutor(address=args.address, num_cpus=None if args.address else args.workers)
    executor.start()
    try:
        runner = CalibrationRunner(spec, store, executor=executor, data_ref=executor.put(data), recipe=recipe,
                                   workers=args.workers, log=_log, device_name=device_name, progress=not args.no_progress)
        t0 = time.perf_counter()
        trained = runner.run()
        _log(f"trained {trained} task(s) in {(time.perf_counter() - t0) / 60:.1f} min on {device_name}, {args.workers} at once")
    except KeyboardInterrupt:
        _log("interrupted: finished trainings are saved; rerun the same command to resume")
        return 130
    finally:
        executor.shutdown()
    return 0


def _write_reports(spec: CalibrationSpec, store: Any, *, device_name: str, command: str, recipe: Any) -> None:
    from nas.calibrate import render_markdown, summarize
    from nas.calibrate.runner import load_records
    from reports.calibration import write_calibration_html
    from search_space.configio import atomic_write

    records = load_records(spec, store)
    data = spec.study.data
    summary = summarize(spec, records, device_name=device_name, command=command, recipe=f"Recipe {recipe.name} ({recipe.hash}).",
                        data=f"Data: train {data.train}, val {data.val or 'default split'}, test {data.test or 'default split'}, "
                             f"QPs {list(data.qps)}.")
    atomic_write(store.root / "calibration.json", json.dumps(summary, indent=1) + "\n")
    text = render_markdown(summary)
    atomic_write(store.root / "calibration.md", text)
    html = write_calibration_html(summary, store.root)
    _log("\n" + text)
    _log(f"report: {store.root / 'calibration.md'}\nnumbers: {store.root / 'calibration.json'}\npage: {html}")


def run_from_args(args: argparse.Namespace, *, prog: str, argv: list[str]) -> int:
    from nas.calibrate import CalibrationStore
    from nas.calibrate.runner import load_records, tasks_left
    from trainers.recipe import load_recipe

    study, path = _study(args)
    name = study.proxy.recipe
    beside = path.parent / name
    recipe = load_recipe(beside if (name.endswith(".toml") and beside.is_file()) else name)
    spec = _spec(args, study)
    spec.plan(recipe)  # refuses a recipe that warmup-stable-decay cannot continue, before anything is written
    store = CalibrationStore(Path(args.out) if args.out else Path("runs") / f"calibrate-{study.name}")
    store.lock()
    try:
        resuming = store.open(spec, argv=argv)
        device_name = _device_name(spec.device_kind, study.proxy.threads)
        _log(f"calibration of study {study.name}: {spec.describe()}")
        _log(f"device: {device_name}; recipe {recipe.name} ({recipe.hash}); out: {store.root}" + (" (resuming)" if resuming else ""))
        command = shlex.join([*prog.split(), *argv])
        left = tasks_left(spec.tasks(), load_records(spec, store))
        _log(f"{len(spec.tasks()) - left} of {len(spec.tasks())} trainings done, {left} to go")
        code = _train(args, spec, store, recipe, device_name) if left else 0
        if code == 0:
            _write_reports(spec, store, device_name=device_name, command=command, recipe=recipe)
        return code
    finally:
        store.unlock()


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m nas.calibrate") -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog=prog).parse_args(args_list)
    from search_space.errors import UserError

    try:
        return run_from_args(args, prog=prog, argv=args_list)
    except UserError as exc:
        print(f"{prog.removeprefix('python -m ')}: error: {exc}", file=sys.stderr)
        return 2
