"""The search driver: one Optuna ask/tell writer per run directory, which it opens, checks and resumes.

Why one writer: the study (a journal file by default) is the whole state of a run, so exactly one
process asks and tells. Workers only compute (`nas.executor`); they never touch the storage.

The driver owns the run directory: the lock (one driver at a time), `run.json` (what the run is, so
that a changed experiment is refused instead of mixed in), opening the Optuna study, loading the
data, starting the executor, and re-queuing trials a killed driver left RUNNING. The trials
themselves are scheduled by `nas.scheduler.TrialScheduler`; what each stores is `nas.trial_record`.
Reports are not built here: the command layer (`rtsr.search`) builds them after `run()` returns.

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

import json
import os
import socket
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.device import DeviceKind
from nas.progress import TrialLog
from nas.storage import has_password, is_redacted, open_rdb_storage, redact, url_for_run_json, without_redacted_password
from nas.study import Study
from nas.trial_record import Key, retry_attrs
from search_space.configio import atomic_write, diff_keys
from search_space.errors import UserError

__all__ = ["RUN_FORMAT", "SearchDriver", "fresh_run_dir", "hold_run_lock", "redact"]

#: v2: anchored networks start at their anchor, and every trial is also evaluated on a test split;
#: a v1 run's numbers are not comparable, so it is not resumed.
RUN_FORMAT = "rtsr-nas run v2"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def hold_run_lock(run_dir: Path, *, why: str = "") -> Any:
    """Take the run dir's lock (`.lock`, flock) or raise a UserError naming the driver that holds it.

    One driver per run dir: the journal must have one writer, and a directory must not be moved
    under a live driver. The kernel releases the lock when its holder dies, even on SIGKILL. The
    holder writes its pid and host into the file, so the refusal can say who it is."""
    import fcntl

    path = run_dir / ".lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        holder = path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""
        who = f" (pid {holder})" if holder else ""
        raise UserError(
            f"another nas.run{who} is using {run_dir}{why}; wait for it or stop it (Ctrl-C), "
            "or pass --out to start a separate run"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    return fh


def fresh_run_dir(run_dir: Path) -> Path | None:
    """Move an existing run dir aside (`NAME.YYYYmmdd-HHMMSS`) so a new run starts; nothing is deleted.

    Refused while a driver runs in it: moving a live run would split its trials between two journals.
    A path that is not a folder is left alone (the command's --out check reports it)."""
    if not run_dir.is_dir():
        return None
    lock = hold_run_lock(run_dir, why="; --fresh cannot move a running study aside")
    try:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = run_dir.with_name(f"{run_dir.name}.{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}")
        os.replace(run_dir, target)
    finally:
        lock.close()
    return target


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
        self._rdb_storage: Any = None  # the connected `--storage` database (`_connect_storage`)
        self._data_identity: dict[str, Any] | None = None  # each split's source and pixel hash, recorded in run.json

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
        """Run or resume the study; 0 when the budget is done, 130 after Ctrl-C."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            return self._run()
        finally:
            lock.close()

    def _lock(self) -> Any:
        """One driver per run dir (`hold_run_lock`)."""
        return hold_run_lock(self.run_dir)

    def _run(self) -> int:
        spec = self.study_spec
        previous = self._read_run_json()
        if previous is not None:
            self._check_same_experiment(previous)
        recipes = self._load_recipes()
        if previous is not None:
            self._check_same_recipes(previous, recipes)
        self._recipe_hashes = {name: recipe.hash for name, recipe in recipes.items()}
        self._print_header(recipes, resuming=previous is not None)
        # A database is connected to before the data is loaded and the workers start: a wrong URL, a
        # missing password or driver then fails in a second. (A journal needs no check: it is a file.)
        self._rdb_storage = self._connect_storage()

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
            where = "local process pool" if self.executor_kind == "local" else (f"ray joined {joined}" if joined else "ray local")
            self.log.print(f"executor: {where}, resources {_fmt_resources(executor.cluster_resources())}, "
                           f"started in {time.perf_counter() - t0:.1f} s")
            return self._search(executor, data=data, recipes=recipes, previous=previous)
        finally:
            executor.shutdown()

    def _make_executor(self) -> Any:
        if self.executor_factory is not None:
            return self.executor_factory(address=self.address)
        if self.executor_kind == "local":
            from nas.local_executor import LocalExecutor

            return LocalExecutor(workers=self.study_spec.budget.workers, address=self.address)
        from nas.executor import RayExecutor

        return RayExecutor(address=self.address, log_dir=self.run_dir / "worker_logs", say=self.log.print)

    def _load_recipes(self) -> dict[str, Any]:
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

    def _load_recipe(self, name: str) -> Any:
        """A recipe by name or path (a relative path is looked up beside the study file first)."""
        from trainers.recipe import load_recipe

        if self.study_file is not None and (name.endswith(".toml") or "/" in name) and not Path(name).is_absolute():
            beside = self.study_file.parent / name
            if beside.is_file() and not Path(name).is_file():
                return load_recipe(beside)
        return load_recipe(name)

    def _print_header(self, recipes: dict[str, Any], *, resuming: bool) -> None:
        spec = self.study_spec
        recipe = recipes[spec.proxy.recipe]
        qps = ", ".join(map(str, spec.data.qps))
        if spec.ablation is not None:
            ab = spec.ablation
            self.log.print(f"ablation {spec.name}: {len(ab.arms)} arms x {len(ab.seeds)} seeds ({', '.join(map(str, ab.seeds))}) "
                           f"= {spec.budget.trials} trials, {spec.budget.workers} workers, reference arm {ab.reference!r}, "
                           f"proxy {spec.proxy.steps} steps, QPs {qps}")
            for arm in ab.arms:
                r = recipes[ab.recipe_of(arm.name, spec.proxy.recipe)]
                dtype = f", eval {arm.eval_dtype} (re-evaluates the reference's weights)" if arm.eval_dtype != "float32" else ""
                self.log.print(f"  arm {arm.name}: {ab.arch_of(arm.name).summary()}; recipe {r.name} ({r.hash}){dtype}")
        else:
            steps = f"proxy {spec.proxy.steps} steps" if spec.halving is None else spec.halving.describe()
            self.log.print(f"study {spec.name}: {spec.budget.trials} sampled trials, {spec.budget.workers} workers, "
                           f"sampler {spec.sampler.name} (seed {spec.seed}), {steps} of recipe "
                           f"{recipe.name} ({recipe.hash}), QPs {qps}")
        self.log.print(f"run dir: {self.run_dir}" + (" (resuming)" if resuming else ""))

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
        if data.get("format") == "rtsr-nas run v1":
            raise UserError(
                f"{self.run_dir} was made by an earlier rtsr-nas (run v1: anchored networks did not start at their "
                "anchor, no test split), so its trials cannot be mixed with new ones; pass --fresh to start over "
                "(the old run is kept and still readable by reports) or --out another directory"
            )
        if data.get("format") != RUN_FORMAT:
            raise UserError(f"{self.run_json} is not a {RUN_FORMAT!r} file; pass --fresh or another --out")
        return data

    def _check_same_experiment(self, previous: dict[str, Any]) -> None:
        spec = self.study_spec
        if previous.get("identity_hash") != spec.identity_hash:
            diff = diff_keys(previous.get("identity", {}), spec.identity_dict())
            raise UserError(
                f"{self.run_dir} holds a run of a different experiment (changed: {', '.join(diff) or 'unknown'}); "
                "rerun with the original settings to resume, --fresh to start a new run (the old one is kept), "
                "or --out another directory"
            )
        stored = previous.get("storage")
        if self.storage_url is None and stored and stored != "journal":
            if is_redacted(stored):
                raise UserError(f"this run uses the storage {stored}; pass --storage with that URL again to resume it "
                                "(or without the password, set in PGPASSWORD or ~/.pgpass)")
            self.storage_url = stored  # it holds no secret: resume from what run.json recorded
            self.log.print(f"storage: {stored} (recorded in {self.run_json.name})")

    def _check_same_recipes(self, previous: dict[str, Any], recipes: dict[str, Any]) -> None:
        """Refuse to resume when a recipe's *contents* changed (the study names it, so the identity
        hash alone misses an edited file): one run, one front, one training recipe.

        A run.json from before recipes were recorded is accepted, with a note."""
        stored = previous.get("recipe_hashes")
        if stored is None:
            self.log.print(f"note: {self.run_json.name} does not record its recipes' contents (made by an older rtsr-nas); "
                           "assuming they are unchanged, and recording them from now on")
            return
        changed = [f"{name} ({stored[name]} -> {recipe.hash})" for name, recipe in recipes.items()
                   if name in stored and stored[name] != recipe.hash]
        if changed:
            raise UserError(
                f"{self.run_dir} was trained with other contents of recipe {', '.join(changed)}; its trials and new "
                "ones would mix two recipes. Restore the recipe file to resume, or pass --fresh / --out to start a run "
                "with the edited recipe (save it under a new name to keep both)"
            )

    def _write_run_json(self, previous: dict[str, Any] | None, *, device_kind: str, device_name: str, protocol: Any) -> dict[str, Any]:
        from nas.latency.software import SoftwareStack

        spec = self.study_spec
        # argv is stored redacted: a `--storage` URL with a password (either `--storage URL` or
        # `--storage=URL`) must not reach a 0644 file that is copied around with the run.
        entry = {"started": _now(), "argv": [redact(a) for a in self.argv], "host": socket.gethostname(), "pid": os.getpid()}
        if previous is None:
            run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            doc = {
                "format": RUN_FORMAT,
                "run_id": run_id,
                "optuna_study_name": f"{spec.name}-{run_id}",
                "storage": "journal" if self.storage_url is None else url_for_run_json(self.storage_url),
                "created": _now(),
                "study": spec.to_dict(),
                "identity": spec.identity_dict(),
                "identity_hash": spec.identity_hash,
                "device_kind": device_kind,
                "device_name": device_name,
                "latency_protocol": protocol.to_dict(),
                "latency_protocol_hash": protocol.protocol_hash,
                "latency_protocol_description": protocol.describe(),
                "latency_software": SoftwareStack.current(device_kind).to_dict(),
                "history": [entry],
            }
        else:
            doc = dict(previous)
            doc.setdefault("latency_software", SoftwareStack.current(device_kind).to_dict())  # runs made before it was recorded
            doc["study"] = spec.to_dict()  # the budget may have changed
            # earlier versions stored argv verbatim: scrub their entries too
            history = [{**h, "argv": [redact(str(a)) for a in h.get("argv", [])]} if isinstance(h, dict) else h
                       for h in previous.get("history", [])]
            doc["history"] = history + [entry]
            stored = str(previous.get("storage", "journal"))
            if self.storage_url is not None and is_redacted(stored) and not has_password(self.storage_url) \
                    and url_for_run_json(self.storage_url) == without_redacted_password(stored):
                # the same database, now with the password from the environment: store the URL that
                # opens it, so `python -m reports --run` needs no --storage
                doc["storage"] = url_for_run_json(self.storage_url)
        doc["recipe_hashes"] = {**doc.get("recipe_hashes", {}), **self._recipe_hashes}  # checked on resume
        if self._data_identity is not None:
            if previous is not None and previous.get("data") not in (None, self._data_identity):
                self.log.print(f"note: the images differ from those {self.run_json.name} recorded (data: source and pixel hash "
                               "per split); this run's trials mix two datasets")
            doc["data"] = self._data_identity
        _write_json(self.run_json, doc)
        if self.study_file is not None and not (self.run_dir / "study.toml").exists():
            atomic_write(self.run_dir / "study.toml", self.study_file.read_bytes())
        return doc

    def _check_device(self, previous: dict[str, Any] | None, *, device_kind: str, device_name: str, protocol: Any) -> None:
        """Refuse to resume on another device, protocol or torch/CUDA/cuDNN stack: their latencies
        must not share a front. A run.json from before the stack was recorded is accepted, with a note."""
        from nas.latency.software import SoftwareStack

        if previous is None:
            return
        if previous.get("device_name") != device_name or previous.get("latency_protocol_hash") != protocol.protocol_hash:
            raise UserError(
                f"{self.run_dir} was timed on {previous.get('device_name')!r} (protocol {previous.get('latency_protocol_hash')}); "
                f"this machine times on {device_name!r} (protocol {protocol.protocol_hash}). Latencies from two devices "
                "must not share a front: resume on the original device (--device "
                f"{previous.get('device_kind')}), or pass --fresh / --out to start a separate run"
            )
        current = SoftwareStack.current(device_kind)
        recorded = previous.get("latency_software")
        if recorded is None:
            self.log.print(f"note: {self.run_json.name} does not record the software stack its latencies were timed with "
                           f"(made by an older rtsr-nas); assuming {current.label()}, and recording it from now on")
            return
        try:
            stack = SoftwareStack.from_dict(recorded)
        except TypeError:
            raise UserError(f"{self.run_json}: latency_software is malformed ({recorded!r}); pass --fresh or another --out") from None
        if stack.key != current.key:
            raise UserError(
                f"{self.run_dir} was timed with {stack.label()}; this machine has {current.label()}. Latencies from two "
                "software stacks must not share a front: resume with the original versions installed, or pass --fresh / "
                "--out to start a separate run"
            )

    # -- setup ------------------------------------------------------------------------------------

    def _resolve_device(self, executor: Any, previous: dict[str, Any] | None) -> DeviceKind:
        from nas.device import choose_device

        return choose_device(self.requested_device, has_cuda=executor.has_gpu(),
                             recorded=None if previous is None else previous.get("device_kind"), where="the Ray cluster",
                             fix="run on a GPU machine (or join a cluster with GPUs via --address), or ")

    def _connect_storage(self) -> Any:
        """The `--storage` database, connected now (None for the default journal); a UserError that
        names the fix when the URL, the server, the password or the driver is wrong."""
        if self.storage_url is None:
            return None
        storage = open_rdb_storage(self.storage_url)
        # loading the data can take minutes: hold no idle connection through it (a server or a
        # firewall may drop it); the engine reconnects when the study is opened
        storage.engine.dispose()
        return storage

    def _open_study(self, doc: dict[str, Any], *, constrained: bool) -> Any:
        import optuna

        from nas.optuna_compat import flock_lock, make_sampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.storage_url is None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage: Any = JournalStorage(JournalFileBackend(str(self.journal_path), lock_obj=flock_lock(self.journal_path)))
        else:
            if self._rdb_storage is None:  # `_run` connects first; this is for callers that skip it
                self._rdb_storage = self._connect_storage()
            storage = self._rdb_storage
        sampler = make_sampler(self.study_spec, seed=self.study_spec.seed, constrained=constrained)
        try:
            study = optuna.create_study(
                study_name=doc["optuna_study_name"],
                storage=storage,
                sampler=sampler,
                directions=["maximize", "minimize"],
                load_if_exists=True,
            )
        except Exception as exc:  # noqa: BLE001 - a database that dropped mid-way surfaces as many SQLAlchemy types
            if self.storage_url is None:
                raise
            raise UserError(f"--storage {redact(self.storage_url)}: cannot open the study "
                            f"({type(exc).__name__}: {redact(' '.join(str(exc).split()))})") from None
        obj = self.study_spec.objectives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning on Optuna < 5
            study.set_metric_names([obj.gain, f"latency_{obj.latency}"])
        return study

    # -- the search ---------------------------------------------------------------------------------

    def _search(self, executor: Any, *, data: Any, recipes: dict[str, Any], previous: dict[str, Any] | None) -> int:
        from nas.latency import LatencyCache
        from nas.pareto import pareto_front, render_pareto_table
        from nas.scheduler import RunContext, TrialScheduler

        spec = self.study_spec
        kind = self._resolve_device(executor, previous)
        protocol = spec.latency.protocol(kind)
        slot = executor.latency_slot(kind)
        device_name = executor.probe(slot=slot, device=kind, threads=spec.latency.cpu_threads)
        self._check_device(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        doc = self._write_run_json(previous, device_kind=kind, device_name=device_name, protocol=protocol)
        self.device_name = device_name
        self.log.print(f"latency: {device_name}; {protocol.describe()}")
        budget_ms = spec.constraints.latency_budget(kind)
        study = self._open_study(doc, constrained=budget_ms is not None or spec.constraints.macs_g is not None)

        self._recover_orphans(study)
        if spec.ablation is not None:
            self._enqueue_ablation(study)
        else:
            self._enqueue_warm_start(study)

        self.log.device_name, self.log.budget_ms = device_name, budget_ms
        ctx = RunContext(spec=spec, run_dir=self.run_dir, optuna_study=study, executor=executor, data=data,
                         data_ref=executor.put(data), recipes=recipes, kind=kind, device_name=device_name,
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
            from optuna.trial import TrialState

            shown, note = study, ""
            if scheduler.ladder is not None:
                shown, note = scheduler.ladder.front_study()
            front = pareto_front(shown.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            table = render_pareto_table(front, gain_name=spec.objectives.gain, latency_name=f"latency {spec.objectives.latency}",
                                        device_name=device_name, note=note)
            atomic_write(self.run_dir / "pareto.txt", table + "\n")
            self.log.print("")
            self.log.print(table)
        return 0

    def output_lines(self) -> list[str]:
        """Where the run's files are, as printed at the end of a run."""
        lines = [f"run dir:  {self.run_dir}"]
        if self.storage_url is None:
            lines.append(f"journal:  {self.journal_path}  (optuna-dashboard {self.journal_path})")
        else:
            stored = url_for_run_json(self.storage_url)
            note = "  (password not stored: pass --storage to python -m reports)" if is_redacted(stored) else ""
            lines.append(f"storage:  {stored}{note}")
        lines += [f"latency:  {self.latency_path}", f"weights:  {self.weights_dir}"]
        if self.study_spec.ablation is not None:
            lines.append(f"ablation: {self.run_dir / 'ablation.md'}  (python -m reports --run {self.run_dir} --format md)")
        else:
            lines.append(f"pareto:   {self.run_dir / 'pareto.txt'}")
        return lines

    def _recover_orphans(self, study: Any) -> None:
        """Trials RUNNING in storage belong to a driver that died: fail them and queue them again."""
        from optuna.trial import TrialState

        from nas.optuna_compat import set_frozen_user_attr

        orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in orphans:
            reason = "the driver stopped while this trial ran (killed or interrupted); re-queued"
            set_frozen_user_attr(study, t, Key.FAILURE_REASON, reason)
            set_frozen_user_attr(study, t, Key.REQUEUED, True)
            study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(dict(t.params), user_attrs=retry_attrs(t.number, t.user_attrs))
        if orphans:
            self.log.print(f"resume: {len(orphans)} trial(s) left running by the previous driver were failed and re-queued "
                           f"({', '.join(str(t.number) for t in orphans)})")

    def _enqueue_warm_start(self, study: Any) -> None:
        from search_space.presets import get_preset
        from search_space.ranges import arch_to_params

        if study.user_attrs.get("warm_start_enqueued"):
            return
        for name in self.study_spec.warm_start.presets:
            params = arch_to_params(get_preset(name).arch, self.study_spec.search)
            study.enqueue_trial(params, user_attrs={Key.PRESET: name}, skip_if_exists=True)
        study.set_user_attr("warm_start_enqueued", list(self.study_spec.warm_start.presets))

    def _enqueue_ablation(self, study: Any) -> None:
        """Every (arm, seed) pair once, as a fixed trial (a resumed run finds them already queued)."""
        ab = self.study_spec.ablation
        assert ab is not None
        if study.user_attrs.get("ablation_enqueued"):
            return
        for arm, seed in ab.trial_order():
            study.enqueue_trial({"arm": arm, "seed": seed}, user_attrs={Key.ARM: arm, Key.SEED: seed})
        study.set_user_attr("ablation_enqueued", [[arm, seed] for arm, seed in ab.trial_order()])


def _fmt_resources(res: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if res.get(k)]
    return ", ".join(f"{res[k]:g} {k}" for k in keys)
