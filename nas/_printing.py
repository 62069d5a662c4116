"""What a search run prints besides its trials: the header, the executor line, the final front, its files.

Why a module of its own: these lines are the run's user interface (tests and users read them; the
fault-injection tests wait for "run dir:" and "latency:"), so their wording lives in one place, apart
from the rules that decide what the run does. Each function prints through `say` (the run's
`TrialLog.print`) or returns the text. Per-trial lines and the progress bar are `nas.progress`.

Words: `spec` is our study file (`nas.study.Study`), `optuna_study` an Optuna study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nas.storage import is_redacted, url_for_run_json
from search_space.configio import atomic_write

if TYPE_CHECKING:
    import optuna

    from nas.study import Study
    from trainers.recipe import Recipe

__all__ = ["executor_line", "output_lines", "print_header", "write_front"]


def print_header(spec: Study, recipes: Mapping[str, Recipe], *, run_dir: Path, resuming: bool,
                 say: Callable[[str], None]) -> None:
    """What is about to run: the study (or each ablation arm) with its recipe hash, and the run dir."""
    recipe = recipes[spec.proxy.recipe]
    qps = ", ".join(map(str, spec.data.qps))
    if spec.ablation is not None:
        ab = spec.ablation
        say(f"ablation {spec.name}: {len(ab.arms)} arms x {len(ab.seeds)} seeds ({', '.join(map(str, ab.seeds))}) "
            f"= {spec.budget.trials} trials, {spec.budget.workers} workers, reference arm {ab.reference!r}, "
            f"proxy {spec.proxy.steps} steps, QPs {qps}")
        for arm in ab.arms:
            r = recipes[ab.recipe_of(arm.name, spec.proxy.recipe)]
            dtype = f", eval {arm.eval_dtype} (re-evaluates the reference's weights)" if arm.eval_dtype != "float32" else ""
            say(f"  arm {arm.name}: {ab.arch_of(arm.name).summary()}; recipe {r.name} ({r.hash}){dtype}")
    else:
        steps = f"proxy {spec.proxy.steps} steps" if spec.halving is None else spec.halving.describe()
        say(f"study {spec.name}: {spec.budget.trials} sampled trials, {spec.budget.workers} workers, "
            f"sampler {spec.sampler.name} (seed {spec.seed}), {steps} of recipe "
            f"{recipe.name} ({recipe.hash}), QPs {qps}")
    say(f"run dir: {run_dir}" + (" (resuming)" if resuming else ""))


def executor_line(*, executor_kind: str, joined: str | None, resources: Mapping[str, float], seconds: float) -> str:
    """Where the trials run (`joined`: the Ray address joined, if any), with what, and how long starting took."""
    where = "local process pool" if executor_kind == "local" else (f"ray joined {joined}" if joined else "ray local")
    keys = [k for k in ("CPU", "GPU") if resources.get(k)]
    shown = ", ".join(f"{resources[k]:g} {k}" for k in keys)
    return f"executor: {where}, resources {shown}, started in {seconds:.1f} s"


def write_front(optuna_study: optuna.Study, spec: Study, *, note: str, run_dir: Path, device_name: str,
                say: Callable[[str], None]) -> None:
    """The Pareto front of `optuna_study`'s complete trials: written to `pareto.txt` and printed.

    `note` says which study it is when that is not the main one (successive halving's top rung)."""
    from optuna.trial import TrialState

    from nas.pareto import pareto_front, render_pareto_table

    front = pareto_front(optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    table = render_pareto_table(front, gain_name=spec.objectives.gain, latency_name=f"latency {spec.objectives.latency}",
                                device_name=device_name, note=note)
    atomic_write(run_dir / "pareto.txt", table + "\n")
    say("")
    say(table)


def output_lines(spec: Study, *, run_dir: Path, storage_url: str | None, journal: Path, latency: Path,
                 weights: Path) -> list[str]:
    """Where the run's files are, as printed at the end of a run."""
    lines = [f"run dir:  {run_dir}"]
    if storage_url is None:
        lines.append(f"journal:  {journal}  (optuna-dashboard {journal})")
    else:
        stored = url_for_run_json(storage_url)
        note = "  (password not stored: pass --storage to python -m reports)" if is_redacted(stored) else ""
        lines.append(f"storage:  {stored}{note}")
    lines += [f"latency:  {latency}", f"weights:  {weights}"]
    if spec.ablation is not None:
        lines.append(f"ablation: {run_dir / 'ablation.md'}  (python -m reports --run {run_dir} --format md)")
    else:
        lines.append(f"pareto:   {run_dir / 'pareto.txt'}")
    return lines
