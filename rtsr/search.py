"""`rtsr search` / `python -m nas.run --study NAME`: run or resume a search or an ablation study.

Parsing is instant and needs no heavy package (`--help` works without optuna or ray); the driver
runs the study, and then this command builds what a user reads: the ablation tables
(`ablation.md`), the dashboard and the list of the run's files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rtsr._session import check_out_dir, run_command

if TYPE_CHECKING:
    from nas.driver import SearchDriver

__all__ = ["build_parser", "driver_from_args", "main", "report_after_run", "run_and_report", "run_from_args"]


def build_parser(*, prog: str = "python -m nas.run") -> argparse.ArgumentParser:
    """The search command line; flags override the study file's values."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Search for real-time 4x super-resolution networks (540p -> 4K, AVIF-compressed input): "
            "Optuna multi-objective trials (PSNR-Y gain over Lanczos vs latency) on Ray. "
            "Rerunning the same command resumes the run in its directory."
        ),
    )
    parser.add_argument(
        "--study",
        required=True,
        help="study name (a shipped study, e.g. rtsr, smoke, ablations/bias_removal, or ./studies/NAME.toml) or a path to a TOML file",
    )
    parser.add_argument("--trials", type=int, help="trial budget (overrides the study file)")
    parser.add_argument("--workers", type=int, help="parallel proxy-training workers (overrides the study file)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES", help="wall-time limit of this invocation in minutes: "
                        "a training starts only if it is expected to end within it, running trainings finish (overrides [budget] minutes)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device for training and latency (auto: cuda when available, else cpu; CPU numbers are labelled cpu)",
    )
    parser.add_argument("--out", help="run directory (default: runs/<study name>)")
    parser.add_argument("--seed", type=int, help="sampler and training seed (overrides the study file)")
    parser.add_argument("--data", help="HR training images: 'builtin' (default, no download), 'photos' (24 real photographs "
                        "from two Debian wallpaper packages, fetched on first use) or a folder of PNG/JPEG")
    parser.add_argument("--val-data", help="HR validation images (selection): 'builtin', 'photos' or a folder (default: the source's val "
                        "split or val/ subfolder, else about 10%% carved from the training images)")
    parser.add_argument("--test-data", help="HR test images (reported, never selected on): 'builtin', 'photos' or a folder (default: the "
                        "source's test split or test/ subfolder, else about 10%% carved from the training images)")
    parser.add_argument("--address", help="join a running Ray cluster: HOST:PORT of its head (e.g. 10.0.0.5:6379), or 'auto' "
                        "for the one `ray start` made on this machine; default: $RAY_ADDRESS if set, else a private local Ray")
    parser.add_argument("--executor", choices=("ray", "local"), default="ray",
                        help="where trainings run: ray (default; local Ray, or a cluster with --address) or local (a process "
                        "pool on this machine, no Ray needed: a bare GPU box with torch and optuna)")
    parser.add_argument("--storage", help="Optuna RDB URL, e.g. postgresql://USER@HOST/DB (password from PGPASSWORD or ~/.pgpass; "
                        "needs pip install 'rtsr-nas[postgres]') or sqlite:///PATH; default: a journal file in the run directory")
    parser.add_argument("--steps", type=int, help="proxy-training steps per trial (overrides the study file's [proxy] steps; "
                        "with [halving] it sets rung 0's steps, min_steps, and so scales every rung)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr (log lines still go to stdout)")
    parser.add_argument("--fresh", action="store_true", help="start a new run; the old run directory is kept, renamed with a timestamp")
    return parser


def driver_from_args(args: argparse.Namespace) -> SearchDriver:
    """Load the study, apply flag overrides, and set up (not start) its driver."""
    from nas.driver import SearchDriver, fresh_run_dir
    from nas.study import find_study_file, load_study
    from search_space.errors import UserError

    path = find_study_file(args.study)
    study = load_study(path)
    if study.ablation is not None:
        ab = study.ablation
        if getattr(args, "trials", None) is not None:
            raise UserError(
                f"--trials does not apply to an ablation: it runs every arm for every seed ({len(ab.arms)} x "
                f"{len(ab.seeds)} = {ab.n_trials} trials); change [ablation] seeds in {path} instead"
            )
        if getattr(args, "seed", None) is not None:
            raise UserError(f"--seed does not apply to an ablation: its training seeds are [ablation] seeds in {path}")
    overrides = {
        "budget__trials": getattr(args, "trials", None),
        "budget__workers": getattr(args, "workers", None),
        "budget__minutes": getattr(args, "time_limit", None),
        "seed": getattr(args, "seed", None),
        "data__train": getattr(args, "data", None),
        "data__val": getattr(args, "val_data", None),
        "data__test": getattr(args, "test_data", None),
    }
    steps = getattr(args, "steps", None)
    overrides["proxy__steps" if study.halving is None else "halving__min_steps"] = steps
    study = study.with_overrides(**overrides)
    study, notice = study.with_available_data(progress=not getattr(args, "no_progress", False))
    if notice:
        print(f"nas.run: {notice}", file=sys.stderr)
    run_dir = Path(args.out) if getattr(args, "out", None) else Path("runs") / study.name
    if getattr(args, "fresh", False):
        moved = fresh_run_dir(run_dir)
        if moved is not None:
            print(f"--fresh: the previous run is kept at {moved}", file=sys.stdout)
    check_out_dir(run_dir)  # before any work: an unusable --out is one line now, not a traceback later
    return SearchDriver(
        study,
        run_dir=run_dir,
        device=getattr(args, "device", "auto") or "auto",
        address=getattr(args, "address", None),
        storage=getattr(args, "storage", None),
        progress=not getattr(args, "no_progress", False),
        study_file=path,
        argv=list(sys.argv[1:]),
        executor=getattr(args, "executor", "ray") or "ray",
    )


def report_after_run(driver: SearchDriver) -> None:
    """What a finished run shows: its ablation tables, its dashboard, and where its files are.

    A report must never cost the run its result: a failure here is printed with the command that
    rebuilds it, and the run still exits 0."""
    log = driver.log
    if driver.study_spec.ablation is not None:
        log.print("")
        _ablation_tables(driver)
    log.print("")
    try:
        from reports import build_dashboard

        path = build_dashboard(driver.run_dir, storage=driver.storage_url)
        log.print(f"dashboard: {path}")
    except Exception as exc:  # noqa: BLE001
        from nas.storage import has_password, redact

        rebuild = f"run `python -m reports --run {driver.run_dir}`"
        if driver.storage_url is not None and has_password(driver.storage_url):  # run.json holds it redacted
            rebuild = (f"run `python -m reports --run {driver.run_dir} --storage URL` with the URL and its password "
                       "(or without it, with PGPASSWORD set)")
        log.print(f"dashboard: not built ({type(exc).__name__}: {redact(str(exc))}); {rebuild}")
    log.print("")
    for line in driver.output_lines():
        log.print(line)


def _ablation_tables(driver: SearchDriver) -> None:
    from reports.ablation import ablation_markdown
    from search_space.configio import atomic_write

    try:
        text = ablation_markdown(driver.run_dir, storage=driver.storage_url)
    except Exception as exc:  # noqa: BLE001 - see report_after_run
        driver.log.print(f"ablation tables: not built ({type(exc).__name__}: {exc}); "
                         f"run `python -m reports --run {driver.run_dir} --format md`")
        return
    atomic_write(driver.run_dir / "ablation.md", text)
    driver.log.print(text)


def run_and_report(driver: SearchDriver) -> int:
    """Run the driver; when the budget is done, build the reports. Returns the exit code."""
    code = driver.run()
    if code == 0:
        report_after_run(driver)
    return code


def run_from_args(args: argparse.Namespace) -> int:
    return run_and_report(driver_from_args(args))


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m nas.run") -> int:
    """Run the command; a user's mistake is one line and exit 2, Ctrl-C one line and exit 130.

    Ctrl-C inside the trial loop is the driver's (it records the running trials); here it is caught
    anywhere else (data preparation, Ray start-up, reports). Every file of a run is written
    atomically, so an interrupted run resumes when the same command is run again."""
    args = build_parser(prog=prog).parse_args(argv)
    return run_command(prog.removeprefix("python -m "), lambda: run_from_args(args))
