"""Winning designs as full-training configs (the command is `rtsr export` / `python -m nas.export`).

Each chosen trial becomes `<run>/export/trial-NNNNN.toml`, a `trainers.runconfig.RunConfig` that
`python -m trainers.full --config FILE` runs unchanged, plus `trial-NNNNN.pt`, the trial's
proxy-trained fused weights (a deploy-form state dict), copied from `<run>/weights/` (the same
five-digit trial numbers as the run's own files).

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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.deployment import removes_bias
from nas.runstate import RunState, load_run, write_output
from nas.trial_record import Key, TrialRecord, TrialStatus
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from search_space.arch import ArchConfig
    from trainers.recipe import Recipe
    from trainers.runconfig import RunConfig

__all__ = ["DEFAULT_RECIPE", "ExportResult", "export_file_stem", "export_trials", "run_config_for"]

#: The shipped full-training recipe used unless `--recipe` says otherwise.
DEFAULT_RECIPE = "full"


def export_file_stem(number: int) -> str:
    """'trial-00042': the same five-digit name the run gives the trial's weights."""
    return f"trial-{number:05d}"


@dataclass(frozen=True)
class ExportResult:
    """One exported trial: the config file and the copied weights (None if the trial kept none)."""

    trial: int
    config: Path
    weights: Path | None
    onnx: Path | None = None  # with export_trials(onnx=True) and weights kept


def _check_exportable(t: TrialRecord, state: RunState) -> None:
    """A clear error for a trial that has no trained result to export."""
    where = f"trial {t.source_trial} of run {state.run_dir}"
    front = ", ".join(str(p.source_trial) for p in state.pareto()) or "none yet"
    hint = f"export a trained trial (Pareto trials: {front}), or use --pareto"
    if t.state in ("RUNNING", "WAITING"):
        raise UserError(f"{where} has not finished yet ({t.state.lower()}); wait for it, or {hint}")
    if t.state == "FAIL" or t.status in (TrialStatus.FAILED, TrialStatus.CRASHED):
        raise UserError(f"{where} failed ({t.reason or 'no reason recorded'}); there is nothing to export: {hint}")
    if t.status == TrialStatus.SKIPPED:
        raise UserError(f"{where} was not trained (it broke a constraint: {t.reason or 'infeasible'}); {hint}")
    if not t.trained or not t.attrs.get(Key.ARCH):
        raise UserError(f"{where} has no trained result (state {t.state}, status {t.status}); {hint}")


def _export_arch(t: TrialRecord, recipe: Recipe) -> ArchConfig:
    """The architecture to train in full (see the module docstring: the one that was timed)."""
    from search_space.arch import ArchConfig

    a = t.attrs
    trained = ArchConfig.from_dict(a[Key.ARCH])
    deployed = ArchConfig.from_dict(a.get(Key.DEPLOY_ARCH) or a.get(Key.TRAINED_ARCH) or a[Key.ARCH])
    return trained if removes_bias(recipe) else deployed


def _check_patches(recipe: Recipe, arch: ArchConfig, *, trial: int) -> None:
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


def _provenance(t: TrialRecord, state: RunState, *, weights_name: str | None) -> JSONDict:
    a = t.attrs
    study = state.study
    lat = dict(a.get(Key.LATENCY) or {})
    prov: JSONDict = {
        "source": "nas.export",
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": state.study_name,
        "study_identity_hash": state.info.get("identity_hash"),
        "optuna_study": state.info.get("optuna_study_name"),
        "run_dir": str(state.run_dir.resolve()),
        "run_id": state.run_id,
        "trial": t.source_trial,
        "rung": t.rung,
        "rung_steps": a.get(Key.RUNG_STEPS),
        "status": str(t.status),
        "duplicate_of": a.get(Key.DUPLICATE_OF),
        "pareto": t.pareto,
        "feasible": t.feasible,
        "preset": t.preset,
        "arch_hash": t.arch_hash,
        "arch_summary": t.arch_summary,
        "deploy_arch_hash": a.get(Key.DEPLOY_ARCH_HASH),
        "macs": t.macs,
        "params": t.n_params,
        "macs_g": None if t.macs is None else t.macs / 1e9,
        "proxy": {
            "recipe": a.get(Key.RECIPE),
            "recipe_hash": a.get(Key.RECIPE_HASH),
            "steps": a.get(Key.STEPS),
            "seed": a.get(Key.SEED),
            "data": a.get(Key.DATA) or {"train": study.get("data", {}).get("train")},
            "qps": list(a.get(Key.QPS) or state.qps),
        },
        "proxy_metrics": {
            "objective": state.gain_metric,
            "gain_db": t.gain_db,
            "split": "val",
            "gain_y": a.get(Key.GAIN_Y),
            "delta_y": a.get(Key.DELTA_Y),
            "gain_linear_y": a.get(Key.GAIN_LINEAR_Y),
            "delta_linear_y": a.get(Key.DELTA_LINEAR_Y),
            "per_qp_gain_db": {str(q): g for q, g in t.per_qp_gain().items()},
            "per_qp": a.get(Key.PER_QP),
            "test": a.get(Key.TEST),  # the same metrics on the held-out test split: what to quote
        },
        "latency": {
            "value_ms": t.latency_ms,
            "statistic": state.latency_stat,
            "device": a.get(Key.LATENCY_DEVICE) or state.device_name,
            "device_kind": lat.get("device_kind") or state.device_kind,
            "protocol_hash": lat.get("protocol_hash"),
            "mean_ms": lat.get("mean_ms"),
            "median_ms": lat.get("median_ms"),
            "p90_ms": lat.get("p90_ms"),
        },
        "weights": weights_name,
        "weights_arch": a.get(Key.TRAINED_ARCH) or a.get(Key.DEPLOY_ARCH) or a.get(Key.ARCH),
    }
    return prov


def run_config_for(t: TrialRecord, state: RunState, *, recipe: Recipe, steps: int | None = None, weights_name: str | None = None) -> RunConfig:
    """The `RunConfig` that trains trial `t` in full with `recipe` (see the module docstring)."""
    from trainers.runconfig import RunConfig

    _check_exportable(t, state)
    arch = _export_arch(t, recipe)
    _check_patches(recipe, arch, trial=t.source_trial)
    data = state.study.get("data", {})
    kwargs: JSONDict = {
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
    chosen = [_furthest(state, n) for n in dict.fromkeys(numbers)]
    for t in chosen:
        _check_exportable(t, state)
    return chosen


def _furthest(state: RunState, number: int) -> TrialRecord:
    """Trial `number` as trained furthest: its highest-rung record under successive halving."""
    for k in sorted(state.rungs, reverse=True):
        record = state.rung_results(k).get(number) if k else None
        if record is not None:
            return record
    return state.trial(number)


def export_trials(
    run_dir: str | Path,
    *,
    numbers: Sequence[int] | None = None,
    pareto: bool = False,
    recipe: str = DEFAULT_RECIPE,
    steps: int | None = None,
    out_dir: str | Path | None = None,
    storage: str | None = None,
    onnx: bool = False,
) -> list[ExportResult]:
    """Export the Pareto trials (`pareto=True`) or the trials `numbers` of a run; returns what was written.

    `onnx`: also write `trial-NNNNN.onnx`, the trial's proxy-trained fused weights as an ONNX graph
    checked in ONNX Runtime (`trainers.deploy_export.export_onnx`; needs the deploy extra), for
    trials that kept weights. Every check happens before the first file is written, so a bad choice
    leaves nothing behind.
    """
    if onnx:
        from trainers.deploy_export import require_onnx

        require_onnx()
    from trainers.recipe import load_recipe
    from trainers.runconfig import save_run_config

    state = load_run(run_dir, storage=storage)
    chosen = _chosen(state, numbers=numbers, pareto=pareto)
    full = load_recipe(recipe)
    target = Path(out_dir) if out_dir is not None else state.run_dir / "export"
    plans = []
    for t in chosen:
        src = state.run_dir / t.weights if t.weights else None
        weights_name = f"{export_file_stem(t.source_trial)}.pt" if src is not None and src.is_file() else None
        plans.append((t, src if weights_name else None, run_config_for(t, state, recipe=full, steps=steps, weights_name=weights_name)))
    results = []
    for t, src, config in plans:
        config_path = save_run_config(config, target / f"{export_file_stem(t.source_trial)}.toml")
        config_path.chmod(0o644)
        weights_path = None
        if src is not None:
            weights_path = write_output(target / f"{export_file_stem(t.source_trial)}.pt", src.read_bytes())
        onnx_path = None
        if onnx and weights_path is not None:
            onnx_path = _export_onnx(weights_path, config.provenance["weights_arch"], target / f"{export_file_stem(t.source_trial)}.onnx")
        results.append(ExportResult(trial=t.source_trial, config=config_path, weights=weights_path, onnx=onnx_path))
    return results


def _export_onnx(weights: Path, arch: JSONDict, path: Path) -> Path:
    """The fused deploy network of `arch` with the state dict in `weights`, as ONNX at `path`."""
    import torch

    from search_space.arch import ArchConfig
    from search_space.network import build, deploy
    from trainers.deploy_export import export_onnx

    config = ArchConfig.from_dict(arch)
    model = deploy(build(config))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return export_onnx(model, path, down_factor=config.down_factor).path
