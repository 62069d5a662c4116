"""The search driver: one Optuna ask/tell writer per run directory, which it opens, checks and resumes.

Why one writer: the study (a journal file by default) is the whole state of a run, so exactly one
process asks and tells. Workers only compute (`nas.executor`); they never touch the storage.

The driver owns the run directory: the lock (one driver at a time), `run.json` (what the run is, so
that a changed experiment is refused instead of mixed in), opening the Optuna study, loading the
data, starting the executor, and re-queuing trials a killed driver left RUNNING. The trials
themselves are scheduled by `nas.scheduler.TrialScheduler`; what each stores is `nas.trial_record`.
Reports are not built here: the command layer (`rtsr.search`) builds them after `run()` returns.
The work of each step lives in a private module: `nas._run_dir` (lock, files, run.json rules),
`nas._optuna_studies` (storage, the Optuna study, queued trials), `nas._printing` (the run's lines).
Words: `spec` is our study file (`nas.study.Study`), `optuna_study` the Optuna study it runs in.

Resume: rerunning the same command continues: trials left RUNNING by a killed driver are failed
(reason recorded) and re-queued with the same params and a `retries` count; COMPLETE trials are
never touched. Budget fields (`trials`, `workers`, `max_retries`) may change on resume; anything else
that changes the experiment (space, data, recipe, device, latency protocol) is refused with the list
of differences, unless `--fresh`.

Ablations (a study with an `[ablation]` table, see `nas.ablation_spec.AblationSpec`): instead of
sampling, every (arm, seed) pair is enqueued once as a fixed trial (Optuna params `arm` and `seed`),
and each trial trains its arm's architecture with its arm's recipe and seed. Everything else is the
search machinery: latency batches, resume, retries, duplicates.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nas._optuna_studies import connect_storage, enqueue_fixed_trials, open_optuna_study, recover_orphans
from nas._printing import executor_line, output_lines, print_header, write_front
from nas._run_dir import RUN_FORMAT, RunDir, fresh_run_dir, hold_run_lock
from nas.progress import TrialLog
from nas.storage import redact

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

    from nas.device import DeviceKind
    from nas.executor import Executor
    from nas.latency import LatencyProtocol
    from nas.study import Study
    from nas.task import JSONDict
    from trainers.proxy import ProxyData
    from trainers.recipe import Recipe

__all__ = ["RUN_FORMAT", "SearchDriver", "fresh_run_dir", "hold_run_lock", "redact"]


class SearchDriver:
    """Runs one study in one run directory (see the module docstring).

    A coordinator: each step's work lives in a private module (`nas._run_dir`, `nas._optuna_studies`,
    `nas._printing`); this class holds what the steps share and calls them in order."""

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
        executor_factory: Callable[..., Executor] | None = None,
        executor: str = "ray",
    ) -> None:
        self.study_spec = study
        self.run_dir = Path(run_dir)
        self.requested_device = device
        self.address = address
        self.storage_url = storage
        self.study_file = study_file
        self.argv = argv or []
        self.executor_factory = executor_factory  # default: by `executor` (tests pass fakes)
        self.executor_kind = executor  # "ray" (default; --address joins a cluster) | "local" (a process pool, no Ray)
        self.log = TrialLog(out=sys.stdout, progress=progress, ablation=study.ablation is not None)
        self.device_name = ""  # the latency device, known once the executor has probed it
        self._recipe_hashes: dict[str, str] = {}  # recipe name -> content hash, recorded in run.json
        self._rdb_storage: RDBStorage | None = None  # the connected `--storage` database (`connect_storage`)
        self._data_identity: JSONDict | None = None  # each split's source and pixel hash, recorded in run.json

    # -- paths ------------------------------------------------------------------------------------

    @property
    def _dir(self) -> RunDir:
        """The run dir's files and run.json rules (built from `run_dir`, so a caller may still set it)."""
        return RunDir(self.run_dir, say=self.log.print)

    @property
    def run_json(self) -> Path:
        return self._dir.run_json

    @property
    def journal_path(self) -> Path:
        return self._dir.journal

    @property
    def latency_path(self) -> Path:
        return self._dir.latency

    @property
    def weights_dir(self) -> Path:
        return self._dir.weights

    # -- entry ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run or resume the study; 0 when the budget is done, 130 after Ctrl-C."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            return self._run()
        finally:
            lock.close()

    def _lock(self) -> IO[str]:
        """One driver per run dir (`hold_run_lock`)."""
        return self._dir.lock()

    def _run(self) -> int:
        spec = self.study_spec
        previous = self._dir.read()
        if previous is not None:
            self.storage_url = self._dir.check_same_experiment(previous, spec, storage_url=self.storage_url)
        recipes = self._load_recipes()
        self._recipe_hashes = {name: recipe.hash for name, recipe in recipes.items()}
        if previous is not None:
            self._dir.check_same_recipes(previous, self._recipe_hashes)
        print_header(spec, recipes, run_dir=self.run_dir, resuming=previous is not None, say=self.log.print)
        # A database is connected to before the data is loaded and the workers start: a wrong URL, a
        # missing password or driver then fails in a second. (A journal needs no check: it is a file.)
        self._rdb_storage = connect_storage(self.storage_url)

        from trainers.proxy import ProxyData

        t0 = time.perf_counter()
        data = ProxyData.load(spec.data.train, spec.data.val, spec.data.test, qps=spec.data.qps, progress=self.log.progress)
        self.log.print(f"{data.summary()}; loaded in {time.perf_counter() - t0:.1f} s")
        from trainers.splits import data_identity

        self._data_identity = data_identity({"train": data.train, "val": data.val, "test": data.test})

        executor = self._make_executor()
        t0 = time.perf_counter()
        executor.start()
        try:
            joined = getattr(executor, "joined", None) or self.address  # RAY_ADDRESS / auto resolve to an address
            self.log.print(executor_line(executor_kind=self.executor_kind, joined=joined,
                                         resources=executor.cluster_resources(), seconds=time.perf_counter() - t0))
            return self._search(executor, data=data, recipes=recipes, previous=previous)
        finally:
            executor.shutdown()

    def _make_executor(self) -> Executor:
        if self.executor_factory is not None:
            return self.executor_factory(address=self.address)
        if self.executor_kind == "local":
            from nas.local_executor import LocalExecutor

            return LocalExecutor(workers=self.study_spec.budget.workers, address=self.address)
        from nas.executor import RayExecutor

        return RayExecutor(address=self.address, log_dir=self.run_dir / "worker_logs", say=self.log.print)

    def _load_recipes(self) -> dict[str, Recipe]:
        """The [proxy] recipe and each ablation arm's, by name; a clear error now if steps cannot fit."""
        spec = self.study_spec
        recipes = {spec.proxy.recipe: self._load_recipe(spec.proxy.recipe)}
        if spec.ablation is not None:
            for arm in spec.ablation.arms:
                name = spec.ablation.recipe_of(arm.name, spec.proxy.recipe)
                if name not in recipes:
                    recipes[name] = self._load_recipe(name)
        if spec.halving is not None:
            from trainers.continuation import check_continuable

            check_continuable(recipes[spec.proxy.recipe])
        else:
            for recipe in recipes.values():
                recipe.stage_bounds(spec.proxy.steps)
        return recipes

    def _load_recipe(self, name: str) -> Recipe:
        """A recipe by name or path (a relative path is looked up beside the study file first)."""
        from trainers.recipe import load_recipe

        if self.study_file is not None and (name.endswith(".toml") or "/" in name) and not Path(name).is_absolute():
            beside = self.study_file.parent / name
            if beside.is_file() and not Path(name).is_file():
                return load_recipe(beside)
        return load_recipe(name)

    # -- run.json -----------------------------------------------------------------------------------

    def _write_run_json(self, previous: JSONDict | None, *, device_kind: str, device_name: str,
                        protocol: LatencyProtocol) -> JSONDict:
        """run.json for this start (`RunDir.write`), with what this driver learnt: recipes, data, storage."""
        return self._dir.write(previous, self.study_spec, storage_url=self.storage_url, argv=self.argv,
                               recipe_hashes=self._recipe_hashes, data_identity=self._data_identity,
                               device_kind=device_kind, device_name=device_name, protocol=protocol,
                               study_file=self.study_file)

    # -- setup ------------------------------------------------------------------------------------

    def _resolve_device(self, executor: Executor, previous: JSONDict | None) -> DeviceKind:
        from nas.device import choose_device

        return choose_device(self.requested_device, has_cuda=executor.has_gpu(),
                             recorded=None if previous is None else previous.get("device_kind"), where="the Ray cluster",
                             fix="run on a GPU machine (or join a cluster with GPUs via --address), or ")

    def _open_optuna_study(self, doc: JSONDict, *, constrained: bool) -> optuna.Study:
        """The run's Optuna study, named in run.json, in the journal or the `--storage` database."""
        if self.storage_url is not None and self._rdb_storage is None:  # `_run` connects first; this is for callers that skip it
            self._rdb_storage = connect_storage(self.storage_url)
        return open_optuna_study(self.study_spec, name=doc["optuna_study_name"], journal_path=self.journal_path,
                                 storage_url=self.storage_url, rdb_storage=self._rdb_storage, constrained=constrained)

    # -- the search ---------------------------------------------------------------------------------

    def _search(self, executor: Executor, *, data: ProxyData, recipes: dict[str, Recipe], previous: JSONDict | None) -> int:
        from nas.latency import LatencyCache
        from nas.scheduler import RunContext, TrialScheduler

        spec = self.study_spec
        kind = self._resolve_device(executor, previous)
        protocol = spec.latency.protocol(kind)
        slot = executor.latency_slot(kind)
        # The data goes to the executor before the probe: the local executor hands it to a worker
        # process when the process starts, so a pool started for the probe alone was replaced at
        # the first task (every worker spawned and imported torch twice, ~1.5 s per run).
        data_ref = executor.put(data)
        device_name = executor.probe(slot=slot, device=kind, threads=spec.latency.cpu_threads)
        self._dir.check_same_device(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        doc = self._write_run_json(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        self.device_name = device_name
        self.log.print(f"latency: {device_name}; {protocol.describe()}")
        budget_ms = spec.constraints.latency_budget(kind)
        optuna_study = self._open_optuna_study(doc, constrained=budget_ms is not None or spec.constraints.macs_g is not None)

        recover_orphans(optuna_study, say=self.log.print)
        enqueue_fixed_trials(optuna_study, spec)

        self.log.device_name, self.log.budget_ms = device_name, budget_ms
        ctx = RunContext(spec=spec, run_dir=self.run_dir, optuna_study=optuna_study, executor=executor, data=data,
                         data_ref=data_ref, recipes=recipes, kind=kind, device_name=device_name,
                         protocol=protocol, cache=LatencyCache(self.latency_path), slot=slot, budget_ms=budget_ms, log=self.log)
        scheduler = TrialScheduler(ctx)
        scheduler.load_history()
        try:
            scheduler.loop()
        except KeyboardInterrupt:
            scheduler.abandon("interrupted (Ctrl-C)")
            self.log.print(f"\ninterrupted: {scheduler.done} of {spec.budget.trials} trials done; rerun the same command to resume")
            return 130
        finally:
            self.log.close_bar()

        if spec.ablation is None:
            shown, note = optuna_study, ""
            if scheduler.ladder is not None:
                shown, note = scheduler.ladder.front_study()
            from nas.latency.protocol import with_runtime

            write_front(shown, spec, note=note, run_dir=self.run_dir, device_name=with_runtime(device_name, protocol.runtime),
                        say=self.log.print)
        return 0

    def output_lines(self) -> list[str]:
        """Where the run's files are, as printed at the end of a run."""
        return output_lines(self.study_spec, run_dir=self.run_dir, storage_url=self.storage_url, journal=self.journal_path,
                            latency=self.latency_path, weights=self.weights_dir)
