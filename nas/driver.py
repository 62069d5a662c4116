"""The search driver: one Optuna ask/tell writer that runs trials on Ray and resumes from its run dir.

Why one writer: the study (a journal file by default) is the whole state of a run, so exactly one
process asks and tells. Workers only compute (`nas.executor`); they never touch the storage.

One trial, in order:
1. `study.ask()` (warm-start presets and re-queued trials come first, as WAITING trials), then
   `suggest()` -> `ArchConfig`; deploy MACs/params (`search_space.cost`, cheap, in the driver).
2. Latency, from the run's cache (`latency.jsonl`, keyed by arch hash, protocol hash, device) or
   measured in an exclusive latency batch (see `nas.executor`). Constraints are now known.
3. If a constraint is broken and the study says `train_infeasible = false`, the trial is *skipped*:
   told COMPLETE with gain `SKIPPED_GAIN_DB` and its real latency, status "skipped", and always
   infeasible, so samplers learn the region and no front ever shows it. A trial whose
   architecture already finished training in this run (same recipe, steps, seed, data) copies
   that result (status "duplicate") instead of training the same thing again.
4. Otherwise a Ray training task; its fused weights go to `weights/trial-NNNNN.pt`, then `tell`.

Resume: the run dir holds `run.json` (the study it was started with, the device and protocol),
`journal.log`, `latency.jsonl` and `weights/`. Rerunning the same command continues: trials left
RUNNING by a killed driver are failed (reason recorded) and re-queued with the same params and a
`retries` count; COMPLETE trials are never touched. Budget fields (`trials`, `workers`,
`max_retries`) may change on resume; anything else that changes the experiment (space, data,
recipe, device, latency protocol) is refused with the list of differences, unless `--fresh`.

Budget accounting: a trial counts as done when it is COMPLETE (trained, duplicate or skipped) or
FAIL for good (training failure, latency failure, or retries exhausted); failed attempts that were
re-queued do not count.

Ablations (a study with an `[ablation]` table, see `nas.study.AblationSpec`): instead of sampling,
every (arm, seed) pair is enqueued once as a fixed trial (Optuna params `arm` and `seed`; user
attrs `arm`, `seed`, `eval_dtype`), and each trial trains its arm's architecture with its arm's
recipe and seed. Everything else is the search machinery: latency batches, resume, retries,
duplicates. An eval-time arm (`eval_dtype = "float16"`) trains nothing: it re-evaluates, in the
driver process, the fused weights of the trial that trained the same (arch, recipe, seed), so its
difference to the reference is the dtype alone. Cost and latency are those of the *deployed*
network: a recipe stage that removes the biases makes the deployed arch bias-free, and (ablations
only) arms whose deployed networks are identical, e.g. a RepBlock and a plain conv, share one
latency measurement (`plain_equivalent`), so a noisy machine cannot make one network look like two.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.study import Study, load_study
from search_space.errors import UserError

__all__ = [
    "RUN_FORMAT",
    "SKIPPED_GAIN_DB",
    "SearchDriver",
    "pareto_front",
    "render_pareto_table",
    "run_from_args",
]

RUN_FORMAT = "rtsr-nas run v1"
#: Gain told for a trial that was not trained because it broke a constraint: "no better than
#: Lanczos". It is never shown as a result: such trials are infeasible and carry status "skipped".
SKIPPED_GAIN_DB = 0.0
#: How many trials are asked per latency batch, per worker (fewer exclusive-device drains).
LOOKAHEAD_PER_WORKER = 2
_POLL_S = 0.5


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, data: bytes) -> None:
    from trainers.fileio import atomic_write

    atomic_write(path, data)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    _write_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def _redact(url: str) -> str:
    """An RDB URL without its password (run.json must not store secrets)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(root)"]


def _fmt_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------------
# Optuna glue (4.x and 5.x)
# --------------------------------------------------------------------------------------------------


def _native_constraints() -> bool:
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def _constraints_from_attrs(trial: Any) -> list[float]:
    """The 4.x `constraints_func`: the vector the driver stored in user attrs (feasible when <= 0)."""
    return list(trial.user_attrs.get("constraints", [0.0]))


def _make_sampler(study: Study, *, seed: int, constrained: bool) -> Any:
    """The study's sampler, always explicit (Optuna 5 changed the multi-objective default)."""
    import optuna

    extra: dict[str, Any] = {}
    if constrained and not _native_constraints():
        extra["constraints_func"] = _constraints_from_attrs  # Optuna 4.x
    spec = study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning for multivariate/group on 4.x
        if spec.name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=spec.n_startup_trials,
                multivariate=True,
                group=True,  # the space is conditional (define-by-run)
                constant_liar=True,  # several trials are pending at once
                **extra,
            )
        if spec.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=spec.population_size, **extra)
        return optuna.samplers.RandomSampler(seed=seed)


def _set_constraints(trial: Any, named: dict[str, float]) -> None:
    """Record constraints both ways: Optuna 5's `set_constraint` and the 4.x user-attr vector."""
    trial.set_user_attr("constraint_names", list(named))
    trial.set_user_attr("constraints", [float(v) for v in named.values()])
    if _native_constraints():
        for key, value in named.items():
            trial.set_constraint(key, float(value))


# --------------------------------------------------------------------------------------------------
# Pareto table
# --------------------------------------------------------------------------------------------------


def _is_result(t: Any) -> bool:
    """A COMPLETE, trained, feasible trial: what a front may show (a duplicate repeats its original)."""
    attrs = t.user_attrs
    return attrs.get("status") == "ok" and bool(attrs.get("feasible", False)) and t.values is not None


def pareto_front(trials: Iterable[Any]) -> list[Any]:
    """Non-dominated feasible results (maximize values[0] = gain, minimize values[1] = latency),
    sorted by latency. Computed here rather than by `study.best_trials` so that it means the same
    on Optuna 4 (constraints in user attrs) and 5 (native constraints)."""
    pool = [t for t in trials if _is_result(t)]
    front = []
    for t in pool:
        g, lat = t.values
        dominated = any(
            (o.values[0] >= g and o.values[1] <= lat) and (o.values[0] > g or o.values[1] < lat) for o in pool
        )
        if not dominated:
            front.append(t)
    front.sort(key=lambda t: (t.values[1], -t.values[0], t.number))
    return front


def render_pareto_table(front: list[Any], *, gain_name: str, latency_name: str, device_name: str) -> str:
    """A plain-text table of the front (one row per trial)."""
    header = ["trial", "arch", f"{gain_name} [dB]", f"{latency_name} [ms]", "MACs [G]", "params [k]", "preset"]
    rows = []
    for t in front:
        a = t.user_attrs
        rows.append(
            [
                str(t.number),
                str(a.get("arch_summary", "")),
                f"{t.values[0]:+.3f}",
                f"{t.values[1]:.3f}",
                f"{a.get('macs', 0) / 1e9:.3f}",
                f"{a.get('params', 0) / 1e3:.1f}",
                str(a.get("preset") or "-"),
            ]
        )
    if not rows:
        return "Pareto front: no feasible trained trial yet."
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    lines = [
        f"Pareto front ({len(rows)} trial{'s' if len(rows) != 1 else ''}; latency on {device_name}):",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A trial this driver asked and has not told yet."""

    trial: Any
    arch: Any  # what is trained
    started: float
    recipe: Any = None
    seed: int = 0
    eval_dtype: str = "float32"
    deploy_arch: Any = None  # what is deployed, counted and timed (bias removal may differ from `arch`)
    attrs: dict[str, Any] = field(default_factory=dict)
    latency: Any = None
    constraints: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.deploy_arch is None:
            self.deploy_arch = self.arch


def deployed_arch(arch: Any, recipe: Any) -> Any:
    """The architecture a recipe delivers: bias-free if any stage removes the biases."""
    import dataclasses

    if arch.bias and any(stage.remove_bias for stage in recipe.stages):
        return dataclasses.replace(arch, bias=False)
    return arch


def _deploy_signature(arch: Any) -> list[tuple[str, str]]:
    """Every module of the deployed network below the root: class and configuration, in order."""
    import torch

    from search_space.network import build, deploy

    with torch.random.fork_rng():  # building initializes weights; keep the caller's RNG untouched
        net = deploy(build(arch))
    return [(f"{type(m).__module__}.{type(m).__qualname__}", m.extra_repr()) for m in list(net.modules())[1:]]


def plain_equivalent(arch: Any) -> Any:
    """The same deployed network spelled with plain-conv training forms, if there is one, else `arch`.

    Re-parameterized blocks (rep, ecb, ...) fuse to exactly the modules a plain conv deploys to, so
    e.g. RepTCN and its plain-conv twin are one network at inference. Ablation arms that differ only
    in training form therefore share one latency measurement instead of two noisy ones. Only
    `block`/`end_block` change, and the network's own forward depends on them only through its
    modules, so equal module lists (types and settings) mean the same computation."""
    import dataclasses

    candidate = dataclasses.replace(arch, block="conv", end_block="conv")
    if candidate == arch:
        return arch
    return candidate if _deploy_signature(candidate) == _deploy_signature(arch) else arch


class SearchDriver:
    """Runs one study in one run directory (see the module docstring)."""

    def __init__(
        self,
        study: Study,
        *,
        run_dir: str | os.PathLike[str],
        device: str = "auto",
        address: str | None = None,
        storage: str | None = None,
        progress: bool = True,
        study_file: Path | None = None,
        argv: list[str] | None = None,
        executor_factory: Any = None,
    ) -> None:
        self.study_spec = study
        self.run_dir = Path(run_dir)
        self.requested_device = device
        self.address = address
        self.storage_url = storage
        self.progress = progress
        self.study_file = study_file
        self.argv = argv or []
        self.out = sys.stdout
        self.executor_factory = executor_factory  # default: nas.executor.RayExecutor (tests pass fakes)

    # -- paths ------------------------------------------------------------------------------------

    @property
    def run_json(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / "journal.log"

    @property
    def latency_path(self) -> Path:
        return self.run_dir / "latency.jsonl"

    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"

    # -- entry ------------------------------------------------------------------------------------

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            return self._run()
        finally:
            lock.close()

    def _lock(self) -> Any:
        """One driver per run dir (the journal must have one writer); released even on SIGKILL."""
        import fcntl

        fh = open(self.run_dir / ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise UserError(
                f"another nas.run is already using {self.run_dir}; wait for it, or pass --out to start a separate run"
            ) from None
        return fh

    def _run(self) -> int:
        spec = self.study_spec
        previous = self._read_run_json()
        if previous is not None:
            self._check_same_experiment(previous)
        recipe = self._load_recipe()
        recipe.stage_bounds(spec.proxy.steps)  # a clear error now if the steps cannot fit the stages
        recipes = {spec.proxy.recipe: recipe}
        if spec.ablation is not None:
            for arm in spec.ablation.arms:
                name = spec.ablation.recipe_of(arm.name, spec.proxy.recipe)
                if name not in recipes:
                    recipes[name] = self._load_recipe(name)
                    recipes[name].stage_bounds(spec.proxy.steps)
            ab = spec.ablation
            self._print(f"ablation {spec.name}: {len(ab.arms)} arms x {len(ab.seeds)} seeds ({', '.join(map(str, ab.seeds))}) "
                        f"= {spec.budget.trials} trials, {spec.budget.workers} workers, reference arm {ab.reference!r}, "
                        f"proxy {spec.proxy.steps} steps, QPs {', '.join(map(str, spec.data.qps))}")
            for arm in ab.arms:
                r = recipes[ab.recipe_of(arm.name, spec.proxy.recipe)]
                dtype = f", eval {arm.eval_dtype} (re-evaluates the reference's weights)" if arm.eval_dtype != "float32" else ""
                self._print(f"  arm {arm.name}: {ab.arch_of(arm.name).summary()}; recipe {r.name} ({r.hash}){dtype}")
        else:
            self._print(f"study {spec.name}: {spec.budget.trials} trials, {spec.budget.workers} workers, "
                        f"sampler {spec.sampler.name} (seed {spec.seed}), proxy {spec.proxy.steps} steps of recipe "
                        f"{recipe.name} ({recipe.hash}), QPs {', '.join(map(str, spec.data.qps))}")
        self._print(f"run dir: {self.run_dir}" + (" (resuming)" if previous else ""))

        from trainers.proxy import ProxyData

        t0 = time.perf_counter()
        data = ProxyData.load(spec.data.train, spec.data.val, qps=spec.data.qps, progress=self.progress)
        self._print(
            f"data: {len(data.train.names)} train / {len(data.val.names)} val images "
            f"({spec.data.train} / {spec.data.val_source}), loaded in {time.perf_counter() - t0:.1f} s"
        )

        if self.executor_factory is None:
            from nas.executor import RayExecutor

            executor = RayExecutor(address=self.address)
        else:
            executor = self.executor_factory(address=self.address)
        t0 = time.perf_counter()
        executor.start()
        try:
            self._print(f"ray: {'joined ' + self.address if self.address else 'local'}, "
                        f"resources {self._fmt_resources(executor.cluster_resources())}, started in {time.perf_counter() - t0:.1f} s")
            return self._search(executor, data=data, recipes=recipes, previous=previous)
        finally:
            executor.shutdown()

    # -- run.json -----------------------------------------------------------------------------------

    def _read_run_json(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            if self.journal_path.exists():
                raise UserError(
                    f"{self.run_dir} has a journal but no run.json; it was not made by this version of nas.run. "
                    "Pass --fresh to start over (the old directory is kept) or --out another directory"
                )
            return None
        try:
            data = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.run_json} is unreadable ({exc}); pass --fresh to start a new run (the old one is kept)") from None
        if data.get("format") != RUN_FORMAT:
            raise UserError(f"{self.run_json} is not a {RUN_FORMAT!r} file; pass --fresh or another --out")
        return data

    def _check_same_experiment(self, previous: dict[str, Any]) -> None:
        spec = self.study_spec
        if previous.get("identity_hash") != spec.identity_hash:
            diff = _diff_keys(previous.get("identity", {}), spec.identity_dict())
            raise UserError(
                f"{self.run_dir} holds a run of a different experiment (changed: {', '.join(diff) or 'unknown'}); "
                "rerun with the original settings to resume, --fresh to start a new run (the old one is kept), "
                "or --out another directory"
            )
        stored = previous.get("storage")
        if self.storage_url is None and stored and stored != "journal":
            raise UserError(f"this run uses the storage {stored}; pass --storage with that URL again to resume it")

    def _write_run_json(self, previous: dict[str, Any] | None, *, device_kind: str, device_name: str, protocol: Any) -> dict[str, Any]:
        spec = self.study_spec
        entry = {"started": _now(), "argv": self.argv, "host": socket.gethostname(), "pid": os.getpid()}
        if previous is None:
            run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            doc = {
                "format": RUN_FORMAT,
                "run_id": run_id,
                "optuna_study_name": f"{spec.name}-{run_id}",
                "storage": "journal" if self.storage_url is None else _redact(self.storage_url),
                "created": _now(),
                "study": spec.to_dict(),
                "identity": spec.identity_dict(),
                "identity_hash": spec.identity_hash,
                "device_kind": device_kind,
                "device_name": device_name,
                "latency_protocol": protocol.to_dict(),
                "latency_protocol_hash": protocol.protocol_hash,
                "latency_protocol_description": protocol.describe(),
                "history": [entry],
            }
        else:
            doc = dict(previous)
            doc["study"] = spec.to_dict()  # the budget may have changed
            doc["history"] = list(previous.get("history", [])) + [entry]
        _write_json(self.run_json, doc)
        if self.study_file is not None and not (self.run_dir / "study.toml").exists():
            _write_atomic(self.run_dir / "study.toml", self.study_file.read_bytes())
        return doc

    def _check_device(self, previous: dict[str, Any] | None, *, device_kind: str, device_name: str, protocol: Any) -> None:
        if previous is None:
            return
        if previous.get("device_name") != device_name or previous.get("latency_protocol_hash") != protocol.protocol_hash:
            raise UserError(
                f"{self.run_dir} was timed on {previous.get('device_name')!r} (protocol {previous.get('latency_protocol_hash')}); "
                f"this machine times on {device_name!r} (protocol {protocol.protocol_hash}). Latencies from two devices "
                "must not share a front: resume on the original device (--device "
                f"{previous.get('device_kind')}), or pass --fresh / --out to start a separate run"
            )

    # -- setup ------------------------------------------------------------------------------------

    def _load_recipe(self, name: str | None = None) -> Any:
        """A recipe by name or path (a relative path is looked up beside the study file first)."""
        from trainers.recipe import load_recipe

        name = self.study_spec.proxy.recipe if name is None else name
        if self.study_file is not None and (name.endswith(".toml") or "/" in name) and not Path(name).is_absolute():
            beside = self.study_file.parent / name
            if beside.is_file() and not Path(name).is_file():
                return load_recipe(beside)
        return load_recipe(name)

    def _resolve_device(self, executor: Any, previous: dict[str, Any] | None) -> str:
        if self.requested_device in ("cpu", "cuda"):
            kind = self.requested_device
        elif previous is not None:
            kind = previous["device_kind"]
        else:
            kind = "cuda" if executor.has_gpu() else "cpu"
        if kind == "cuda" and not executor.has_gpu():
            raise UserError(
                "--device cuda: the Ray cluster has no GPU; run on a GPU machine (or join a cluster with GPUs via "
                "--address), or use --device cpu (CPU numbers are labelled cpu)"
            )
        return kind

    def _open_study(self, doc: dict[str, Any], *, constrained: bool) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.storage_url is None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage: Any = JournalStorage(JournalFileBackend(str(self.journal_path), lock_obj=_flock_lock(self.journal_path)))
        else:
            storage = self.storage_url
        sampler = _make_sampler(self.study_spec, seed=self.study_spec.seed, constrained=constrained)
        try:
            study = optuna.create_study(
                study_name=doc["optuna_study_name"],
                storage=storage,
                sampler=sampler,
                directions=["maximize", "minimize"],
                load_if_exists=True,
            )
        except ImportError as exc:
            raise UserError(f"--storage {_redact(self.storage_url or '')}: a database driver is missing ({exc}); install it") from None
        except Exception as exc:  # noqa: BLE001 - bad URLs surface as many SQLAlchemy types
            if self.storage_url is None:
                raise
            raise UserError(f"--storage {_redact(self.storage_url)}: cannot open ({type(exc).__name__}: {exc})") from None
        obj = self.study_spec.objectives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning on Optuna < 5
            study.set_metric_names([obj.gain, f"latency_{obj.latency}"])
        return study

    # -- the search ---------------------------------------------------------------------------------

    def _search(self, executor: Any, *, data: Any, recipes: dict[str, Any], previous: dict[str, Any] | None) -> int:
        import optuna
        from optuna.trial import TrialState

        from nas.latency import LatencyCache

        spec = self.study_spec
        kind = self._resolve_device(executor, previous)
        protocol = spec.latency.protocol(kind)
        slot = executor.latency_slot(kind)
        device_name = executor.probe(slot=slot, device=kind, threads=spec.latency.cpu_threads)
        self._check_device(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        doc = self._write_run_json(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        self._print(f"latency: {device_name}; {protocol.describe()}")
        budget_ms = spec.constraints.latency_budget(kind)
        constrained = budget_ms is not None or spec.constraints.macs_g is not None
        study = self._open_study(doc, constrained=constrained)

        self._recover_orphans(study)
        if spec.ablation is not None:
            self._enqueue_ablation(study)
        else:
            self._enqueue_warm_start(study)

        state = _State(
            driver=self,
            study=study,
            executor=executor,
            data=data,
            data_ref=executor.put(data),
            recipes=recipes,
            kind=kind,
            device_name=device_name,
            protocol=protocol,
            cache=LatencyCache(self.latency_path),
            slot=slot,
            budget_ms=budget_ms,
        )
        state.load_history()
        try:
            state.loop()
        except KeyboardInterrupt:
            state.abandon("interrupted (Ctrl-C)")
            self._print(f"\ninterrupted: {state.done} of {spec.budget.trials} trials done; rerun the same command to resume")
            return 130
        finally:
            state.close_bar()

        if spec.ablation is not None:
            self._print("")
            self._ablation_hook()
        else:
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            front = pareto_front(trials)
            table = render_pareto_table(
                front, gain_name=spec.objectives.gain, latency_name=f"latency {spec.objectives.latency}", device_name=device_name
            )
            _write_atomic(self.run_dir / "pareto.txt", (table + "\n").encode("utf-8"))
            self._print("")
            self._print(table)
        self._print("")
        self._dashboard_hook()
        self._print("")
        self._print(f"run dir:  {self.run_dir}")
        where = self.journal_path if self.storage_url is None else _redact(self.storage_url)
        self._print(f"journal:  {where}  (optuna-dashboard {where})" if self.storage_url is None else f"storage:  {where}")
        self._print(f"latency:  {self.latency_path}")
        self._print(f"weights:  {self.weights_dir}")
        if spec.ablation is not None:
            self._print(f"ablation: {self.run_dir / 'ablation.md'}  (python -m reports --run {self.run_dir} --format md)")
        else:
            self._print(f"pareto:   {self.run_dir / 'pareto.txt'}")
        del optuna
        return 0

    def _recover_orphans(self, study: Any) -> None:
        """Trials RUNNING in storage belong to a driver that died: fail them and queue them again."""
        from optuna.trial import TrialState

        storage = study._storage
        orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in orphans:
            reason = "the driver stopped while this trial ran (killed or interrupted); re-queued"
            storage.set_trial_user_attr(t._trial_id, "failure_reason", reason)
            storage.set_trial_user_attr(t._trial_id, "requeued", True)
            study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(dict(t.params), user_attrs=_retry_attrs(t))
        if orphans:
            self._print(f"resume: {len(orphans)} trial(s) left running by the previous driver were failed and re-queued "
                        f"({', '.join(str(t.number) for t in orphans)})")

    def _enqueue_warm_start(self, study: Any) -> None:
        from search_space.presets import get_preset
        from search_space.ranges import arch_to_params

        if study.user_attrs.get("warm_start_enqueued"):
            return
        for name in self.study_spec.warm_start.presets:
            params = arch_to_params(get_preset(name).arch, self.study_spec.search)
            study.enqueue_trial(params, user_attrs={"preset": name}, skip_if_exists=True)
        study.set_user_attr("warm_start_enqueued", list(self.study_spec.warm_start.presets))

    def _enqueue_ablation(self, study: Any) -> None:
        """Every (arm, seed) pair once, as a fixed trial (a resumed run finds them already queued)."""
        ab = self.study_spec.ablation
        assert ab is not None
        if study.user_attrs.get("ablation_enqueued"):
            return
        for arm, seed in ab.trial_order():
            study.enqueue_trial({"arm": arm, "seed": seed}, user_attrs={"arm": arm, "seed": seed})
        study.set_user_attr("ablation_enqueued", [[arm, seed] for arm, seed in ab.trial_order()])

    def _ablation_hook(self) -> None:
        """Print the ablation's tables and write `ablation.md` (if the `reports` package can)."""
        try:
            from reports.ablation import ablation_markdown
        except ImportError:
            self._print(f"ablation tables: run `python -m reports --run {self.run_dir} --format md`")
            return
        try:
            text = ablation_markdown(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a report must never cost the run its result
            self._print(f"ablation tables: not built ({type(exc).__name__}: {exc}); run `python -m reports --run {self.run_dir} --format md`")
            return
        _write_atomic(self.run_dir / "ablation.md", text.encode("utf-8"))
        self._print(text)

    def _dashboard_hook(self) -> None:
        """Build the run's dashboard if the `reports` package offers `build_dashboard(run_dir)`."""
        try:
            import reports
        except ImportError:
            return
        build = getattr(reports, "build_dashboard", None)
        if build is None:
            return
        try:
            path = build(self.run_dir)
            if path:
                self._print(f"dashboard: {path}")
        except Exception as exc:  # noqa: BLE001 - a report must never cost the search its result
            self._print(f"dashboard: not built ({type(exc).__name__}: {exc}); run `python -m reports --run {self.run_dir}`")

    # -- output -------------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)
        except ImportError:  # pragma: no cover
            print(text, file=self.out)
        self.out.flush()

    @staticmethod
    def _fmt_resources(res: dict[str, float]) -> str:
        keys = [k for k in ("CPU", "GPU") if res.get(k)]
        return ", ".join(f"{res[k]:g} {k}" for k in keys)


def _flock_lock(journal: Path) -> Any:
    """A journal write lock that the kernel releases when its holder dies.

    Optuna's default symlink/open-file locks stay behind when a writer is SIGKILLed mid-append, and
    the next writer then waits out their 30 s grace period. `flock` has no such state: a killed
    driver's lock is gone at once, so a resume starts immediately. (Local file systems; on NFS use
    an RDB through --storage.)
    """
    import fcntl

    from optuna.storages.journal._file import BaseJournalFileLock  # public base class, private module

    class _FlockLock(BaseJournalFileLock):
        def __init__(self, path: Path) -> None:
            self._path = path
            self._fh: Any = None

        def acquire(self) -> bool:
            self._fh = open(self._path, "a+")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            return True

        def release(self) -> None:
            if self._fh is not None:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                self._fh.close()
                self._fh = None

    return _FlockLock(journal.with_name(journal.name + ".flock"))


def _retry_attrs(t: Any) -> dict[str, Any]:
    attrs = {"retry_of": t.number, "retries": int(t.user_attrs.get("retries", 0)) + 1}
    for key in ("preset", "arm", "seed"):
        if key in t.user_attrs:
            attrs[key] = t.user_attrs[key]
    return attrs


def evaluate_weights(*, weights: bytes | Path, arch: dict[str, Any], data: Any, dtype: str, device: str, threads: int) -> dict[str, Any]:
    """`EvalReport.to_dict()` of fused weights (`torch.save` bytes or a file) of `arch` on `data.val`.

    The deploy network is rebuilt from the arch (plain convs after `deploy`), loaded strictly, and
    evaluated in `dtype` (float16: pure fp16 weights and input, as the challenge's `--fp16`)."""
    import io

    import torch

    from search_space.arch import ArchConfig
    from search_space.network import build, deploy
    from trainers.evaluate import evaluate

    source = io.BytesIO(weights) if isinstance(weights, (bytes, bytearray)) else weights
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = deploy(build(ArchConfig.from_dict(arch)))
    model.load_state_dict(state)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return evaluate(model, data.val, device=device, dtype=getattr(torch, dtype)).to_dict()
    finally:
        torch.set_num_threads(previous)


class _State:
    """The running loop's bookkeeping (kept apart from `SearchDriver` so `run()` reads top-down)."""

    def __init__(self, *, driver: SearchDriver, study: Any, executor: Any, data: Any, data_ref: Any, recipes: dict[str, Any],
                 kind: str, device_name: str, protocol: Any, cache: Any, slot: Any, budget_ms: float | None) -> None:
        self.d = driver
        self.spec = driver.study_spec
        self.study = study
        self.executor = executor
        self.data = data  # the driver's own copy: eval-time ablation arms are evaluated here
        self.data_ref = data_ref
        self.recipes = recipes  # recipe name/path -> Recipe ([proxy] recipe, plus each ablation arm's)
        self.recipe = recipes[self.spec.proxy.recipe]
        self.kind = kind
        self.device_name = device_name
        self.protocol = protocol
        self.cache = cache
        self.slot = slot
        self.budget_ms = budget_ms
        self.ready: deque[_Pending] = deque()
        self.latency_job: tuple[Any, list[_Pending]] | None = None
        self.inflight: dict[Any, _Pending] = {}
        self.done = 0
        self.best_gain: float | None = None
        self.trained: dict[str, int] = {}  # training key -> number of a trained COMPLETE trial
        self.active: set[str] = set()  # training keys queued or being trained now
        self.followers: dict[str, list[_Pending]] = {}  # same arch as an active one: wait for its result
        self.bar: Any = None
        self.started = time.perf_counter()

    # -- bookkeeping ------------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        lat = len(self.latency_job[1]) if self.latency_job else 0
        return len(self.ready) + lat + len(self.inflight) + sum(len(v) for v in self.followers.values())

    def training_key(self, arch_hash: str, recipe_hash: str, seed: int) -> str:
        """What makes two trainings the same (eval dtype is not part of it: weights are shared)."""
        s = self.spec
        return json.dumps([arch_hash, recipe_hash, s.proxy.steps, seed, s.data.train, s.data.val_source, list(s.data.qps), self.kind])

    def _key(self, p: _Pending) -> str:
        return self.training_key(p.arch.arch_hash, p.recipe.hash, p.seed)

    def load_history(self) -> None:
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get("requeued")):
                self.done += 1
            if t.state == TrialState.COMPLETE and _is_result(t):
                self._note_best(t.values[0])
            a = t.user_attrs
            if t.state == TrialState.COMPLETE and a.get("status") == "ok" and a.get("arch_hash"):
                key = self.training_key(a["arch_hash"], a.get("recipe_hash", self.recipe.hash), int(a.get("seed", self.spec.seed)))
                self.trained.setdefault(key, t.number)
        total = self.spec.budget.trials
        if self.d.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(self.done, total), desc="trials", unit="trial",
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
            self._update_bar()
        if self.done:
            self.d._print(f"resume: {self.done} trial(s) already done; budget {total}")

    def _note_best(self, gain: float) -> None:
        if self.best_gain is None or gain > self.best_gain:
            self.best_gain = gain

    def _update_bar(self) -> None:
        if self.bar is None:
            return
        best = "-" if self.best_gain is None else f"{self.best_gain:+.3f} dB"
        label = "best gain" + (f" @<= {self.budget_ms:g} ms" if self.budget_ms is not None else "")
        self.bar.set_postfix_str(f"{label}: {best}", refresh=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- the loop ---------------------------------------------------------------------------------

    def loop(self) -> None:
        budget = self.spec.budget
        workers = budget.workers
        while self.done < budget.trials or self.outstanding:
            if self.latency_job is None and not self.ready:
                room = budget.trials - self.done - self.outstanding
                if room > 0 and not self._prepare(min(room, LOOKAHEAD_PER_WORKER * workers)) and not self.outstanding:
                    # An ablation whose queue is empty although the budget is not used up: nothing
                    # is left to run (e.g. the journal was edited); stop rather than spin.
                    self.d._print(f"no queued (arm, seed) trials left; stopping with {self.done} of {budget.trials} done")
                    return
            if self.latency_job is None:
                while self.ready and len(self.inflight) < workers:
                    self._submit_training(self.ready.popleft())
            refs = list(self.inflight) + ([self.latency_job[0]] if self.latency_job else [])
            if not refs:
                continue
            for ref in self.executor.wait(refs, timeout_s=_POLL_S):
                if self.latency_job is not None and ref is self.latency_job[0]:
                    self._finish_latency_job()
                else:
                    self._finish_training(ref)

    def _waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _ask(self) -> _Pending:
        """Ask one trial: a sampled architecture, or (ablations) the queued (arm, seed) pair's."""
        from search_space.ranges import suggest

        trial = self.study.ask()
        ab = self.spec.ablation
        if ab is None:
            arch = suggest(trial, self.spec.search)
            return _Pending(trial=trial, arch=arch, started=time.perf_counter(), recipe=self.recipe, seed=self.spec.seed)
        arm_name = trial.suggest_categorical("arm", [a.name for a in ab.arms])
        seed = int(trial.suggest_categorical("seed", list(ab.seeds)))
        arm = ab.arm(arm_name)
        recipe = self.recipes[ab.recipe_of(arm_name, self.spec.proxy.recipe)]
        arch = ab.arch_of(arm_name)
        for key, value in (("arm", arm_name), ("seed", seed), ("eval_dtype", arm.eval_dtype)):
            trial.set_user_attr(key, value)
        return _Pending(trial=trial, arch=arch, started=time.perf_counter(), recipe=recipe, seed=seed, eval_dtype=arm.eval_dtype)

    def _prepare(self, n: int) -> int:
        """Ask up to `n` trials, cost them, and get their latency (cache hit, or one exclusive batch).

        Returns how many were asked: an ablation asks only trials that are queued."""
        from search_space.cost import cost

        if self.spec.ablation is not None:
            n = min(n, self._waiting())
        misses: list[_Pending] = []
        for _ in range(n):
            p = self._ask()
            trial, arch = p.trial, p.arch
            p.deploy_arch = deployed_arch(arch, p.recipe)
            if self.spec.ablation is not None:
                p.deploy_arch = plain_equivalent(p.deploy_arch)  # arms that deploy alike share a latency
            c = cost(p.deploy_arch)
            p.attrs = {
                "arch": arch.to_dict(),
                "arch_hash": arch.arch_hash,
                "arch_summary": arch.summary(),
                "recipe": p.recipe.name,
                "recipe_hash": p.recipe.hash,
                "steps": self.spec.proxy.steps,
                "seed": p.seed,
                "qps": list(self.spec.data.qps),
                "data": {"train": self.spec.data.train, "val": self.spec.data.val_source},
                "macs": int(c.macs),
                "params": int(c.params),
                "macs_g": c.macs / 1e9,
                "device_kind": self.kind,
                "latency_device": self.device_name,
                "retries": int(trial.user_attrs.get("retries", 0)),
            }
            if p.deploy_arch != arch:
                p.attrs["deploy_arch"] = p.deploy_arch.to_dict()
                p.attrs["deploy_arch_hash"] = p.deploy_arch.arch_hash
            for key, value in p.attrs.items():
                trial.set_user_attr(key, value)
            hit = self.cache.get(p.deploy_arch.arch_hash, self.protocol, self.device_name)
            if hit is not None:
                self._with_latency(p, hit)
            else:
                misses.append(p)
        if misses:
            # Unique archs only: duplicates in one batch share one measurement.
            archs = list({p.deploy_arch.arch_hash: p.deploy_arch.to_dict() for p in misses}.values())
            ref = self.executor.submit_latency(
                slot=self.slot, archs=archs, device=self.kind, protocol=self.protocol.to_dict(), threads=self.spec.latency.cpu_threads
            )
            self.latency_job = (ref, misses)
        return n

    def _finish_latency_job(self) -> None:
        from nas.executor import TaskError
        from nas.latency import LatencyResult

        assert self.latency_job is not None
        ref, pending = self.latency_job
        self.latency_job = None
        try:
            results = self.executor.get(ref)
        except TaskError as exc:
            for p in pending:
                self._crashed(p, f"latency task: {exc}")
            return
        by_hash: dict[str, dict[str, Any]] = {}
        for item in results:
            arch_hash = str(item.get("arch_hash"))
            if item.get("ok"):
                res = LatencyResult.from_dict(item["latency"])
                if res.device_name != self.device_name:  # never mix devices within one run
                    item = {"ok": False, "reason": f"latency measured on {res.device_name!r}, not the run's {self.device_name!r}"}
                else:
                    self.cache.put(res)
                    item = {"ok": True, "result": res}
            by_hash[arch_hash] = item
        for p in pending:
            entry = by_hash.get(p.deploy_arch.arch_hash)
            if entry is None or not entry.get("ok"):
                self._fail(p, (entry or {}).get("reason") or "latency not measured")
            else:
                self._with_latency(p, entry["result"])

    def _with_latency(self, p: _Pending, res: Any) -> None:
        """Record latency and constraints; then skip, copy a duplicate, or queue for training."""
        p.latency = res
        lat = {
            "mean_ms": res.mean_ms,
            "median_ms": res.median_ms,
            "p90_ms": res.p90_ms,
            "min_ms": res.min_ms,
            "std_ms": res.std_ms,
            "cv_percent": res.cv_percent,
            "n_runs": res.n_runs,
            "stopped_by": res.stopped_by,
            "device_name": res.device_name,
            "device_kind": res.device_kind,
            "protocol_hash": res.protocol_hash,
            "protocol": res.protocol.describe(),
        }
        value = float(getattr(res, self.spec.objectives.latency))
        p.attrs.update({"latency": lat, "latency_ms": value})
        named: dict[str, float] = {}
        if self.budget_ms is not None:
            named["latency_ms"] = value - self.budget_ms
        if self.spec.constraints.macs_g is not None:
            named["macs_g"] = p.attrs["macs_g"] - self.spec.constraints.macs_g
        p.constraints = named
        feasible = all(v <= 0 for v in named.values())
        p.attrs["feasible"] = feasible
        for key in ("latency", "latency_ms", "feasible"):
            p.trial.set_user_attr(key, p.attrs[key])
        _set_constraints(p.trial, named)

        if not feasible and not self.spec.constraints.train_infeasible:
            broken = [f"{k} over by {v:.3g}" for k, v in named.items() if v > 0]
            self._complete(p, gain=SKIPPED_GAIN_DB, status="skipped", extra={"skip_reason": "; ".join(broken)})
            return
        key = self._key(p)
        original = self.trained.get(key)
        if original is not None:
            self._copy_duplicate(p, original)
        elif key in self.active:
            self.followers.setdefault(key, []).append(p)  # the sampler repeated an arch in flight
        else:
            self.active.add(key)
            self.ready.append(p)

    def _release_followers(self, key: str) -> None:
        """The active trial of `key` ended: copy its result, or let the next one in line train."""
        self.active.discard(key)
        waiting = self.followers.pop(key, [])
        original = self.trained.get(key)
        if original is not None:
            for p in waiting:
                self._copy_duplicate(p, original)
        elif waiting:
            self.active.add(key)
            self.ready.append(waiting[0])
            if waiting[1:]:
                self.followers[key] = waiting[1:]

    def _copy_duplicate(self, p: _Pending, number: int) -> None:
        """Same training as trial `number`: copy its result, or re-evaluate its weights in p's dtype."""
        src = self.study.get_trials(deepcopy=False)[number]
        if src.user_attrs.get("eval_dtype", "float32") != p.eval_dtype:
            self._reevaluate(p, weights=src.user_attrs.get("weights"), arch=src.user_attrs.get("trained_arch") or src.user_attrs["arch"],
                             extra={"weights_of": number, **{k: src.user_attrs[k] for k in ("train_seconds", "final_loss", "trained_arch") if k in src.user_attrs}})
            return
        extra = {k: src.user_attrs[k] for k in ("per_qp", "gain_y", "delta_y", "train_seconds", "weights", "final_loss") if k in src.user_attrs}
        extra["duplicate_of"] = number
        self._complete(p, gain=float(src.values[0]), status="duplicate", extra=extra)

    def _reevaluate(self, p: _Pending, *, weights: Any, arch: dict[str, Any], extra: dict[str, Any]) -> None:
        """Evaluate fused weights (bytes, or a path in the run dir) in p's eval dtype, here in the driver.

        Used by eval-time ablation arms: the same trained weights, another inference dtype. It runs
        in the driver process (a second or two on the validation set) so it needs no task type of
        its own; on a cuda run it uses the driver's GPU if it has one, else the CPU (recorded)."""
        import torch

        if weights is None:
            self._fail(p, "no fused weights to re-evaluate (the training trial kept none)", extra=extra)
            return
        if isinstance(weights, str):
            weights = self.d.run_dir / weights
        device = "cuda" if self.kind == "cuda" and torch.cuda.is_available() else "cpu"
        started = time.perf_counter()
        try:
            ev = evaluate_weights(weights=weights, arch=arch, data=self.data, dtype=p.eval_dtype, device=device,
                                  threads=self.spec.proxy.threads)
        except (OSError, RuntimeError, ValueError, FloatingPointError) as exc:
            self._fail(p, f"{p.eval_dtype} evaluation: {type(exc).__name__}: {exc}", extra=extra)
            return
        gain = ev.get(self.spec.objectives.gain)
        if gain is None or not math.isfinite(gain):
            self._fail(p, f"{self.spec.objectives.gain} is {gain!r} in {p.eval_dtype}", extra=extra)
            return
        extra = {**extra, "per_qp": ev["per_qp"], "gain_y": ev.get("gain_y"), "delta_y": ev.get("delta_y"),
                 "eval_images": ev.get("images"), "eval_dtype_used": ev.get("dtype"), "eval_device": device,
                 "eval_seconds": time.perf_counter() - started}
        if isinstance(weights, Path):
            extra["weights"] = weights.relative_to(self.d.run_dir).as_posix()
        self._complete(p, gain=float(gain), status="ok", extra=extra)

    def _submit_training(self, p: _Pending) -> None:
        payload = {
            "arch": p.arch.to_dict(),
            "recipe": p.recipe.to_dict(),
            "steps": self.spec.proxy.steps,
            "seed": p.seed,
            "threads": self.spec.proxy.threads,
            "device": self.kind,
        }
        gpus = self.spec.proxy.gpus if self.kind == "cuda" else 0
        ref = self.executor.submit_train(payload=payload, data_ref=self.data_ref, num_cpus=self.spec.proxy.threads, num_gpus=gpus)
        self.inflight[ref] = p

    def _finish_training(self, ref: Any) -> None:
        p = self.inflight.pop(ref)
        try:
            self._handle_training(p, ref)
        finally:
            self._release_followers(self._key(p))

    def _handle_training(self, p: _Pending, ref: Any) -> None:
        from nas.executor import TaskError

        try:
            out = self.executor.get(ref)
        except TaskError as exc:
            self._crashed(p, f"training task: {exc}")
            return
        res = out["result"]
        extra: dict[str, Any] = {
            "train_seconds": res.get("train_seconds"),
            "eval_seconds": res.get("eval_seconds"),
            "final_loss": res.get("final_loss"),
            "fuse_max_rel_err": res.get("fuse_max_rel_err"),
            "degradation": res.get("degradation"),
            "train_host": out.get("host"),
        }
        if res.get("arch") and res["arch"] != p.attrs["arch"]:
            extra["trained_arch"] = res["arch"]  # e.g. a recipe stage removed the biases
        if res.get("status") != "ok" or res.get("eval") is None:
            self._fail(p, res.get("reason") or "training failed without a reason", extra=extra)
            return
        ev = res["eval"]
        gain = ev.get(self.spec.objectives.gain)
        if gain is None or not math.isfinite(gain):
            self._fail(p, f"{self.spec.objectives.gain} is {gain!r}", extra=extra)
            return
        extra.update({"per_qp": ev["per_qp"], "gain_y": ev.get("gain_y"), "delta_y": ev.get("delta_y"), "eval_images": ev.get("images")})
        if out.get("weights") is not None:
            rel = Path("weights") / f"trial-{p.trial.number:05d}.pt"
            _write_atomic(self.d.run_dir / rel, out["weights"])
            extra["weights"] = rel.as_posix()
        if p.eval_dtype != "float32":  # an eval-time arm that had to train its weights itself
            self.trained.setdefault(self._key(p), p.trial.number)
            extra["weights_of"] = p.trial.number
            self._reevaluate(p, weights=extra.get("weights"), arch=res.get("arch") or p.attrs["arch"], extra=extra)
            return
        self._complete(p, gain=float(gain), status="ok", extra=extra)
        self.trained.setdefault(self._key(p), p.trial.number)

    # -- endings ------------------------------------------------------------------------------------

    def _complete(self, p: _Pending, *, gain: float, status: str, extra: dict[str, Any]) -> None:
        extra = {**extra, "status": status, "trial_seconds": time.perf_counter() - p.started}
        for key, value in extra.items():
            p.trial.set_user_attr(key, value)
        latency = float(p.attrs["latency_ms"])
        self.study.tell(p.trial, [gain, latency])
        self.done += 1
        if status in ("ok", "duplicate") and p.attrs.get("feasible"):
            self._note_best(gain)
        self._log(p, status=status, gain=gain, extra=extra)

    def _fail(self, p: _Pending, reason: str, *, extra: dict[str, Any] | None = None) -> None:
        from optuna.trial import TrialState

        extra = {**(extra or {}), "status": "failed", "failure_reason": reason, "trial_seconds": time.perf_counter() - p.started}
        for key, value in extra.items():
            p.trial.set_user_attr(key, value)
        self.study.tell(p.trial, state=TrialState.FAIL)
        self.done += 1
        self._log(p, status="failed", gain=None, extra=extra)

    def _crashed(self, p: _Pending, reason: str) -> None:
        """A task died: fail this attempt with its reason; re-queue it while retries are left."""
        from optuna.trial import TrialState

        retries = int(p.trial.user_attrs.get("retries", 0))
        retry = retries < self.spec.budget.max_retries and bool(p.trial.params)
        attrs = {"status": "crashed", "failure_reason": reason, "requeued": retry, "trial_seconds": time.perf_counter() - p.started}
        for key, value in attrs.items():
            p.trial.set_user_attr(key, value)
        self.study.tell(p.trial, state=TrialState.FAIL)
        if retry:
            frozen = self.study.get_trials(deepcopy=False)[p.trial.number]
            self.study.enqueue_trial(dict(p.trial.params), user_attrs=_retry_attrs(frozen))
            self._log(p, status=f"crashed, retry {retries + 1}/{self.spec.budget.max_retries} queued", gain=None, extra=attrs)
        else:
            self.done += 1
            self._log(p, status="crashed, no retries left", gain=None, extra=attrs)

    def abandon(self, reason: str) -> None:
        """On Ctrl-C: fail and re-queue every trial this driver holds, so a rerun picks them up."""
        from optuna.trial import TrialState

        pending = list(self.ready) + list(self.inflight.values()) + (self.latency_job[1] if self.latency_job else [])
        pending += [p for waiting in self.followers.values() for p in waiting]
        for ref in list(self.inflight) + ([self.latency_job[0]] if self.latency_job else []):
            self.executor.cancel(ref)
        for p in pending:
            try:
                p.trial.set_user_attr("failure_reason", f"{reason}; re-queued")
                p.trial.set_user_attr("requeued", True)
                self.study.tell(p.trial, state=TrialState.FAIL)
                if p.trial.params:
                    frozen = self.study.get_trials(deepcopy=False)[p.trial.number]
                    self.study.enqueue_trial(dict(p.trial.params), user_attrs=_retry_attrs(frozen))
            except Exception:  # noqa: BLE001 - best effort; a rerun recovers RUNNING trials anyway
                pass
        self.ready.clear()
        self.inflight.clear()
        self.followers.clear()
        self.latency_job = None

    # -- log ----------------------------------------------------------------------------------------

    def _log(self, p: _Pending, *, status: str, gain: float | None, extra: dict[str, Any]) -> None:
        lat = p.attrs.get("latency_ms")
        parts = [f"trial {p.trial.number:>4}"]
        if self.spec.ablation is not None:
            dtype = "" if p.eval_dtype == "float32" else f" ({p.eval_dtype})"
            parts.append(f"arm {p.trial.user_attrs.get('arm', '?')} seed {p.seed}{dtype}")
        parts.append(f"{p.arch.summary():<44}")
        if status in ("ok", "duplicate"):
            parts.append(f"gain {gain:+.3f} dB")
        else:
            parts.append(f"{status}")
        if lat is not None:
            parts.append(f"latency {lat:.2f} ms ({self.device_name})")
        parts.append(f"MACs {p.attrs['macs_g']:.3f} G")
        parts.append(f"time {_fmt_time(extra.get('trial_seconds', 0.0))}")
        if p.trial.user_attrs.get("preset"):
            parts.append(f"preset {p.trial.user_attrs['preset']}")
        if status == "duplicate":
            parts.append(f"(same arch as trial {extra.get('duplicate_of')})")
        elif status == "skipped":
            parts.append(f"(not trained: {extra.get('skip_reason')})")
        elif p.attrs.get("feasible") is False:
            parts.append("(infeasible)")
        if "failure_reason" in extra:
            parts.append(f"reason: {extra['failure_reason']}")
        self.d._print("  ".join(parts))
        if self.bar is not None:
            self.bar.n = min(self.done, self.bar.total)
            self._update_bar()


# --------------------------------------------------------------------------------------------------
# Entry point (called by nas.run)
# --------------------------------------------------------------------------------------------------


def _fresh(run_dir: Path) -> Path | None:
    """Move an existing run dir aside (`NAME.YYYYmmdd-HHMMSS`) so a new run starts; nothing is deleted."""
    if not run_dir.exists():
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}")
    os.replace(run_dir, target)
    return target


def run_from_args(args: Any) -> int:
    """`python -m nas.run ...`: load the study, apply flag overrides, run or resume it."""
    from nas.study import find_study_file

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
        "seed": getattr(args, "seed", None),
        "data__train": getattr(args, "data", None),
        "data__val": getattr(args, "val_data", None),
        "proxy__steps": getattr(args, "steps", None),
    }
    try:
        study = study.with_overrides(**overrides)
    except TypeError as exc:  # pragma: no cover - a programming error in the flag table
        raise UserError(str(exc)) from None
    run_dir = Path(args.out) if getattr(args, "out", None) else Path("runs") / study.name
    if getattr(args, "fresh", False):
        moved = _fresh(run_dir)
        if moved is not None:
            print(f"--fresh: the previous run is kept at {moved}", file=sys.stdout)
    driver = SearchDriver(
        study,
        run_dir=run_dir,
        device=getattr(args, "device", "auto") or "auto",
        address=getattr(args, "address", None),
        storage=getattr(args, "storage", None),
        progress=not getattr(args, "no_progress", False),
        study_file=path,
        argv=list(sys.argv[1:]),
    )
    return driver.run()
