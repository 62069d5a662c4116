"""`python -m nas.export --run runs/rtsr --pareto | --trial N`: winning designs as full-training configs.

Each chosen trial becomes `<run>/export/trial-NNNN.toml`, a `trainers.runconfig.RunConfig` that
`python -m trainers.full --config FILE` runs unchanged, plus `trial-NNNN.pt`, the trial's
proxy-trained fused weights (a deploy-form state dict), copied from `<run>/weights/`.

Why a config and not just an arch: the search only ranked designs with a short proxy training, so
what a winner needs next is a long multi-stage recipe (default: the shipped `recipes/full.toml`,
or `--recipe NAME|PATH`) and the data settings of the study, together with where it came from
(study, trial, arch hash, proxy metrics per QP, latency and its device, MACs, params) so that the
final result can be compared with the proxy numbers.

Which architecture is exported: the one that was timed and counted. A search whose proxy recipe
removed the biases deployed a bias-free network; the full recipe does not remove biases, so the
export then says `bias = false` (unless `--recipe` removes them itself, in which case the trained
architecture is exported and the recipe makes it bias-free again).

The run is read with `nas.runstate.load_run` (a private copy of the journal), so exporting is safe
while `nas.run` is still running; only `<run>/export/` (or `--out`) is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.runstate import RunState, TrialRecord, load_run, write_output
from search_space.errors import UserError

__all__ = ["DEFAULT_RECIPE", "ExportResult", "build_parser", "export_trials", "main", "run_config_for"]

#: The shipped full-training recipe used unless `--recipe` says otherwise.
DEFAULT_RECIPE = "full"


@dataclass(frozen=True)
class ExportResult:
    """One exported trial: the config file and the copied weights (None if the trial kept none)."""

    trial: int
    config: Path
    weights: Path | None


def _check_exportable(t: TrialRecord, state: RunState) -> None:
    """A clear error for a trial that has no trained result to export."""
    where = f"trial {t.number} of run {state.run_dir}"
    front = ", ".join(str(p.number) for p in state.pareto()) or "none yet"
    hint = f"export a trained trial (Pareto trials: {front}), or use --pareto"
    if t.state in ("RUNNING", "WAITING"):
        raise UserError(f"{where} has not finished yet ({t.state.lower()}); wait for it, or {hint}")
    if t.state == "FAIL" or t.status in ("failed", "crashed"):
        raise UserError(f"{where} failed ({t.reason or 'no reason recorded'}); there is nothing to export: {hint}")
    if t.status == "skipped":
        raise UserError(f"{where} was not trained (it broke a constraint: {t.reason or 'infeasible'}); {hint}")
    if not t.trained or not t.attrs.get("arch"):
        raise UserError(f"{where} has no trained result (state {t.state}, status {t.status}); {hint}")


def _export_arch(t: TrialRecord, recipe: Any) -> Any:
    """The architecture to train in full (see the module docstring: the one that was timed)."""
    from search_space.arch import ArchConfig

    trained = ArchConfig.from_dict(t.attrs["arch"])
    deployed = ArchConfig.from_dict(t.attrs.get("deploy_arch") or t.attrs.get("trained_arch") or t.attrs["arch"])
    removes_bias = any(getattr(stage, "remove_bias", False) for stage in recipe.stages)
    return trained if removes_bias else deployed


def _check_patches(recipe: Any, arch: Any, *, trial: int) -> None:
    """The network only accepts inputs divisible by its down factor: so must every training patch.

    Checked here because otherwise `trainers.full` stops at its first step, possibly hours later
    on a queued cluster job.
    """
    bad = [f"stage {i}: {stage.patch} px" for i, stage in enumerate(recipe.stages, start=1) if stage.patch % arch.down_factor]
    if bad:
        raise UserError(
            f"recipe {recipe.name!r} trains on LR patches ({', '.join(bad)}) that trial {trial}'s down factor "
            f"{arch.down_factor} does not divide; pass --recipe with patch sizes divisible by {arch.down_factor} "
            "(multiples of 12 fit every design of the search space)"
        )


def _provenance(t: TrialRecord, state: RunState, *, weights_name: str | None) -> dict[str, Any]:
    a = t.attrs
    study = state.study
    lat = dict(a.get("latency") or {})
    prov: dict[str, Any] = {
        "source": "nas.export",
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": state.study_name,
        "study_identity_hash": state.info.get("identity_hash"),
        "optuna_study": state.info.get("optuna_study_name"),
        "run_dir": str(state.run_dir.resolve()),
        "run_id": state.run_id,
        "trial": t.number,
        "status": t.status,
        "duplicate_of": a.get("duplicate_of"),
        "pareto": t.pareto,
        "feasible": t.feasible,
        "preset": t.preset,
        "arch_hash": t.arch_hash,
        "arch_summary": t.arch_summary,
        "deploy_arch_hash": a.get("deploy_arch_hash"),
        "macs": t.macs,
        "params": t.n_params,
        "macs_g": None if t.macs is None else t.macs / 1e9,
        "proxy": {
            "recipe": a.get("recipe"),
            "recipe_hash": a.get("recipe_hash"),
            "steps": a.get("steps"),
            "seed": a.get("seed"),
            "data": a.get("data") or {"train": study.get("data", {}).get("train")},
            "qps": list(a.get("qps") or state.qps),
        },
        "proxy_metrics": {
            "objective": state.gain_metric,
            "gain_db": t.gain_db,
            "gain_y": a.get("gain_y"),
            "delta_y": a.get("delta_y"),
            "per_qp_gain_db": {str(q): g for q, g in t.per_qp_gain.items()},
            "per_qp": a.get("per_qp"),
        },
        "latency": {
            "value_ms": t.latency_ms,
            "statistic": state.latency_stat,
            "device": a.get("latency_device") or state.device_name,
            "device_kind": lat.get("device_kind") or state.device_kind,
            "protocol_hash": lat.get("protocol_hash"),
            "mean_ms": lat.get("mean_ms"),
            "median_ms": lat.get("median_ms"),
            "p90_ms": lat.get("p90_ms"),
        },
        "weights": weights_name,
        "weights_arch": a.get("trained_arch") or a.get("deploy_arch") or a.get("arch"),
    }
    return prov


def run_config_for(t: TrialRecord, state: RunState, *, recipe: Any, steps: int | None = None, weights_name: str | None = None) -> Any:
    """The `RunConfig` that trains trial `t` in full with `recipe` (see the module docstring)."""
    from trainers.runconfig import RunConfig

    _check_exportable(t, state)
    arch = _export_arch(t, recipe)
    _check_patches(recipe, arch, trial=t.number)
    data = state.study.get("data", {})
    kwargs: dict[str, Any] = {
        "arch": arch,
        "recipe": recipe,
        "seed": int(state.study.get("seed", 0)),
        "data": str(data.get("train", "builtin")),
        "val_data": str(data.get("val") or ""),
        "qps": tuple(state.qps) or (31, 63),
        "provenance": {**_provenance(t, state, weights_name=weights_name), "exported_arch_hash": arch.arch_hash},
    }
    if steps is not None:
        kwargs["steps"] = steps
    config = RunConfig(**kwargs)
    recipe.stage_bounds(config.steps)  # a clear error now if the budget cannot fit the stages
    return config


def _chosen(state: RunState, *, numbers: Sequence[int] | None, pareto: bool) -> list[TrialRecord]:
    if pareto:
        front = state.pareto()
        if not front:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(state.counts().items())) or "no trials yet"
            raise UserError(
                f"run {state.run_dir} has no feasible trained trial yet, so its Pareto set is empty ({counts}); "
                "wait for the search to train some, relax the study's [constraints], or export one trial with --trial N"
            )
        return front
    if not numbers:
        raise UserError("choose what to export: --pareto, or --trial N (repeatable)")
    chosen = [state.trial(n) for n in dict.fromkeys(numbers)]
    for t in chosen:
        _check_exportable(t, state)
    return chosen


def export_trials(
    run_dir: str | Path,
    *,
    numbers: Sequence[int] | None = None,
    pareto: bool = False,
    recipe: str = DEFAULT_RECIPE,
    steps: int | None = None,
    out_dir: str | Path | None = None,
    storage: str | None = None,
) -> list[ExportResult]:
    """Export the Pareto trials (`pareto=True`) or the trials `numbers` of a run; returns what was written.

    Every check happens before the first file is written, so a bad choice leaves nothing behind.
    """
    from trainers.recipe import load_recipe
    from trainers.runconfig import save_run_config

    state = load_run(run_dir, storage=storage)
    chosen = _chosen(state, numbers=numbers, pareto=pareto)
    full = load_recipe(recipe)
    target = Path(out_dir) if out_dir is not None else state.run_dir / "export"
    plans = []
    for t in chosen:
        src = state.run_dir / t.weights if t.weights else None
        weights_name = f"trial-{t.number:04d}.pt" if src is not None and src.is_file() else None
        plans.append((t, src if weights_name else None, run_config_for(t, state, recipe=full, steps=steps, weights_name=weights_name)))
    results = []
    for t, src, config in plans:
        config_path = save_run_config(config, target / f"trial-{t.number:04d}.toml")
        config_path.chmod(0o644)
        weights_path = None
        if src is not None:
            weights_path = write_output(target / f"trial-{t.number:04d}.pt", src.read_bytes())
        results.append(ExportResult(trial=t.number, config=config_path, weights=weights_path))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nas.export",
        description="Write one full-training config (trainers.full --config) per chosen trial of a nas.run "
        "directory, with its provenance and proxy-trained fused weights. Safe while the run is in progress.",
    )
    parser.add_argument("--run", required=True, help="run directory written by nas.run (e.g. runs/rtsr)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pareto", action="store_true", help="export every trial of the Pareto front")
    which.add_argument("--trial", type=int, action="append", metavar="N", help="export trial N (repeatable)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"full-training recipe: a shipped name or a .toml path (default: {DEFAULT_RECIPE})")
    parser.add_argument("--steps", type=int, help="full-training steps written to [run].steps (default: the run config's default)")
    parser.add_argument("--out", help="output folder (default: <run>/export)")
    parser.add_argument("--storage", help="Optuna storage URL, only for runs started with nas.run --storage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.steps is not None and args.steps < 1:
            raise UserError(f"--steps must be a positive integer, got {args.steps}")
        results = export_trials(args.run, numbers=args.trial, pareto=args.pareto, recipe=args.recipe, steps=args.steps,
                                out_dir=args.out, storage=args.storage)
    except UserError as exc:
        print(f"nas.export: error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        extra = f" + {r.weights.name}" if r.weights is not None else " (no proxy weights kept for this trial)"
        print(f"trial {r.trial:>4} -> {r.config}{extra}")
    if results:
        print(f"train one with: python -m trainers.full --config {results[0].config} [--data ~/DIV2K_train_HR --device cuda]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
