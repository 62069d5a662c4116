"""Read a run directory without touching it: the shared input of reports and `nas.export`.

Why a separate reader: a dashboard is built while `nas.run` is still writing the same run, and an
export may run next to it. The driver is the journal's only writer (it holds `.lock` and the
journal's flock), so a reader must never take those locks nor write into the run. `load_run`
therefore copies `journal.log` (up to its last complete line) into a private temp folder and loads
the Optuna study from the copy; `run.json` is read as plain JSON. Everything a report or an export
needs is flattened into `TrialRecord`s, so callers do not depend on Optuna's trial objects or on the
driver's user-attr spelling (beyond this module).

The Pareto front is `nas.pareto.pareto_front` (COMPLETE, trained (`TrialStatus.OK`), feasible,
non-dominated for max gain / min latency), the same one the driver writes to `pareto.txt`, so the
front in a dashboard, in `pareto.txt` and in an export always agree. Trials are `TrialRecord`s
(`nas.trial_record`), the one definition of what a trial stores.

A successive-halving run (run.json's study has a `halving` table, `nas.halving`) keeps rung 0 in the
sampler's study (`trials`) and rung k >= 1 in the studies `rung_study_name(main, k)` of the same
storage (`rungs`). Its front is the one of the highest rung that has trained records: the longest
trainings are the ones whose ranking can be trusted, so only they may be called Pareto.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.halving import rung_study_name
from nas.pareto import pareto_front
from nas.storage import is_redacted, open_rdb_storage, redact
from nas.trial_record import TRAINED_STATUSES, Key, TrialRecord, TrialStatus, finite_or_none
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = ["TRAINED_STATUSES", "RunState", "TrialRecord", "load_run", "write_output"]


@dataclass(frozen=True)
class RunState:
    """A snapshot of one run directory: run.json plus every trial, read without locks."""

    run_dir: Path
    info: Mapping[str, Any]
    trials: tuple[TrialRecord, ...]  # rung 0: the sampler study's trials (all trials of a single-fidelity run)
    frozen: tuple[FrozenTrial, ...] = field(repr=False, default=())  # Optuna FrozenTrials of `trials` (for optuna tools)
    upper_rungs: Mapping[int, tuple[TrialRecord, ...]] = field(repr=False, default_factory=dict)  # halving: rung k >= 1

    # -- the study ----------------------------------------------------------------------------------

    @property
    def study(self) -> Mapping[str, Any]:
        return self.info.get("study", {})

    @property
    def study_name(self) -> str:
        return str(self.study.get("name", self.run_dir.name))

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id", ""))

    @property
    def device_name(self) -> str:
        """The latency device label, e.g. 'cpu: AMD EPYC (1 thread)' or 'cuda: NVIDIA H100'."""
        from nas.latency.protocol import with_runtime

        names = {str(t.attrs[Key.LATENCY_DEVICE]) for t in self.trials if t.attrs.get(Key.LATENCY_DEVICE)}
        name = names.pop() if len(names) == 1 else str(self.info.get("device_name", "unknown device"))
        return with_runtime(name, (self.info.get("latency_protocol") or {}).get("runtime"))

    @property
    def device_kind(self) -> str:
        return str(self.info.get("device_kind", ""))

    @property
    def gain_metric(self) -> str:
        return str(self.study.get("objectives", {}).get("gain", "gain_y"))

    @property
    def latency_stat(self) -> str:
        return str(self.study.get("objectives", {}).get("latency", "mean_ms"))

    @property
    def qps(self) -> tuple[int, ...]:
        return tuple(int(q) for q in self.study.get("data", {}).get("qps", ()))

    @property
    def latency_budget_ms(self) -> float | None:
        """The study's latency budget for this run's device kind (None: unconstrained)."""
        table = self.study.get("constraints", {}).get("latency_ms", {})
        if isinstance(table, Mapping):
            return finite_or_none(table.get(self.device_kind))
        return finite_or_none(table)

    @property
    def macs_budget_g(self) -> float | None:
        return finite_or_none(self.study.get("constraints", {}).get("macs_g"))

    @property
    def budget_trials(self) -> int | None:
        value = self.study.get("budget", {}).get("trials")
        return None if value is None else int(value)

    # -- successive halving -------------------------------------------------------------------------

    @property
    def halving(self) -> Mapping[str, Any] | None:
        """The study's `[halving]` table (min_steps, eta, rungs, decay, top_seeds), or None for a
        single-fidelity run."""
        value = self.study.get("halving")
        return value if isinstance(value, Mapping) else None

    @property
    def rungs(self) -> dict[int, tuple[TrialRecord, ...]]:
        """The records of each rung that has a study, rung 0 (= `trials`) first."""
        return {0: self.trials, **{k: self.upper_rungs[k] for k in sorted(self.upper_rungs)}}

    @property
    def planned_top_rung(self) -> int:
        """The rung the study's `[halving]` table ends at (the top seeds train there); 0 without halving."""
        if self.halving is None:
            return 0
        try:
            return max(int(self.halving["rungs"]) - 1, max(self.rungs))
        except (KeyError, TypeError, ValueError):
            return max(self.rungs)

    @property
    def top_rung_trials(self) -> tuple[int, tuple[TrialRecord, ...]]:
        """(rung, records) of the highest rung with a trained record: the rung the front is from.

        While a halving run has promoted nothing yet this is rung 0; a single-fidelity run is always
        (0, `trials`)."""
        for k, records in sorted(self.rungs.items(), reverse=True):
            if any(t.trained for t in records):
                return k, records
        return 0, self.trials

    def rung_steps(self, rung: int) -> int | None:
        """Stable-phase training steps at the end of `rung`: what the records say they trained (the
        command line may override the study's min_steps), else the `[halving]` table's rule."""
        seen = [int(t.attrs[Key.RUNG_STEPS]) for t in self.rungs.get(rung, ()) if t.attrs.get(Key.RUNG_STEPS) is not None]
        if seen:
            return max(set(seen), key=seen.count)
        table = self.halving
        try:
            return int(table["min_steps"]) * int(table["eta"]) ** rung if table is not None else None
        except (KeyError, TypeError, ValueError):
            return None

    def rung_results(self, rung: int) -> dict[int, TrialRecord]:
        """The records of `rung` trained in this run (status ok), keyed by their rung-0 trial number.

        A trial is promoted at most once per rung; should a retried record train again, the one that
        finished last wins."""
        done = [t for t in self.rungs.get(rung, ()) if t.trained and t.status == TrialStatus.OK]
        return {t.source_trial: t for t in sorted(done, key=lambda t: (t.completed or "", t.number))}

    # -- trials -------------------------------------------------------------------------------------

    def pareto(self) -> list[TrialRecord]:
        """The Pareto trials, by increasing latency (the driver's definition); for a halving run the
        records of `top_rung_trials` (their `source_trial` is the trial's rung-0 number)."""
        pool = self.trials if not self.upper_rungs else [t for records in self.rungs.values() for t in records]
        return sorted((t for t in pool if t.pareto), key=lambda t: (t.latency_ms or 0.0, -(t.gain_db or 0.0), t.number))

    def trial(self, number: int) -> TrialRecord:
        """Trial `number`, or a UserError that says which trials exist."""
        for t in self.trials:
            if t.number == number:
                return t
        have = f"trials 0..{max(t.number for t in self.trials)}" if self.trials else "no trials yet"
        raise UserError(f"trial {number} is not in run {self.run_dir} ({have}); pick a trial number from `python -m reports --run {self.run_dir} --format md` or trials.csv")

    def counts(self) -> dict[str, int]:
        """Trials per status, e.g. {'ok': 12, 'skipped': 3, 'failed': 1, 'running': 2}."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[str(t.status)] = out.get(str(t.status), 0) + 1
        return out

    @property
    def finished(self) -> int:
        """Trials that count against the budget (as the driver counts them)."""
        return sum(1 for t in self.trials if t.counts_against_budget)

    @property
    def in_progress(self) -> bool:
        """True while trials (or, in a halving run, promotions) are running or queued, or the budget
        is not used up."""
        if any(t.state in ("RUNNING", "WAITING") for records in self.rungs.values() for t in records):
            return True
        return self.budget_trials is not None and self.finished < self.budget_trials

    def optuna_study(self, *, numbers: Iterable[int] | None = None) -> optuna.Study:
        """An in-memory Optuna study holding copies of this run's COMPLETE trials (all, or those
        in `numbers`), for Optuna's analysis tools; never connected to the run's storage."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize"])
        wanted = None if numbers is None else set(numbers)
        study.add_trials([f for f in self.frozen if f.state.name == "COMPLETE" and (wanted is None or f.number in wanted)])
        return study


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _read_run_json(run_dir: Path) -> JSONDict:
    if not run_dir.exists():
        raise UserError(f"run directory {str(run_dir)!r} does not exist; pass --run with the folder nas.run wrote (e.g. runs/rtsr)")
    if not run_dir.is_dir():
        raise UserError(f"--run {str(run_dir)!r} is a file, not a run directory; pass the folder nas.run wrote (e.g. runs/rtsr)")
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(
            f"{run_dir} has no run.json, so it is not a nas.run directory (or the run has not started yet); "
            "pass the folder given to nas.run --out (default runs/<study>)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); it should be the JSON file nas.run writes") from None
    if not isinstance(info, dict) or "optuna_study_name" not in info:
        raise UserError(f"{path} is not a nas.run run file (no optuna_study_name); pass a run directory made by nas.run")
    return info


def _copy_journal(src: Path, dst: Path) -> None:
    """Copy the journal up to its last complete line (the writer may be mid-append)."""
    with open(src, "rb") as fh:
        data = fh.read()
    cut = data.rfind(b"\n")
    dst.write_bytes(data[: cut + 1] if cut >= 0 else b"")


def _rung_trials(storage: BaseStorage, main: str) -> dict[int, list[FrozenTrial]]:
    """The trials of each rung study (k >= 1) of `main` in `storage` (a URL or a storage object).

    Rung k's study exists only once a trial reached rung k - 1, so the rungs are numbered without gaps."""
    import optuna

    names = set(optuna.get_all_study_names(storage=storage))
    out: dict[int, list[FrozenTrial]] = {}
    while rung_study_name(main, len(out) + 1) in names:
        rung = len(out) + 1
        study = optuna.load_study(study_name=rung_study_name(main, rung), storage=storage)
        out[rung] = list(study.get_trials(deepcopy=False))
    return out


def _is_halving(info: Mapping[str, Any]) -> bool:
    study = info.get("study")
    return isinstance(study, Mapping) and isinstance(study.get("halving"), Mapping)


def _frozen_trials(run_dir: Path, info: Mapping[str, Any], storage: str | None) -> dict[int, list[FrozenTrial]]:
    """The Optuna trials of each rung: {0: the sampler study's} plus rung k >= 1 for a halving run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = str(info["optuna_study_name"])
    halving = _is_halving(info)
    stored = str(info.get("storage", "journal"))
    source = "--storage"
    if storage is None and stored != "journal":
        # run.json stores the URL only without a secret: reopen it as it stands, unless its
        # password was redacted (then only the user has it)
        if is_redacted(stored):
            raise UserError(
                f"run {run_dir} keeps its trials in {stored} and run.json does not store its password; pass --storage "
                "with that URL, password included (or without it when PGPASSWORD or ~/.pgpass holds it)"
            )
        storage, source = stored, f"{run_dir / 'run.json'}: storage"
    if storage is not None:
        rdb = open_rdb_storage(storage, source=source, create=False)
        try:
            study = optuna.load_study(study_name=name, storage=rdb)
            upper = _rung_trials(rdb, name) if halving else {}
        except KeyError:
            return {0: []}
        except Exception as exc:  # noqa: BLE001 - bad URLs surface as many SQLAlchemy types
            raise UserError(f"{source} {redact(storage)}: cannot read study {name!r} "
                            f"({type(exc).__name__}: {redact(' '.join(str(exc).split()))})") from None
        return {0: list(study.get_trials(deepcopy=False)), **upper}

    journal = run_dir / "journal.log"
    if not journal.is_file():
        return {0: []}  # started, but no trial asked yet
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tmp = Path(tempfile.mkdtemp(prefix="rtsr-runread-"))
    try:
        copy = tmp / "journal.log"
        _copy_journal(journal, copy)
        try:
            journal_storage = JournalStorage(JournalFileBackend(str(copy)))
            study = optuna.load_study(study_name=name, storage=journal_storage)
            upper = _rung_trials(journal_storage, name) if halving else {}
        except KeyError:
            return {0: []}  # run.json written, study not created yet
        except ValueError as exc:
            raise UserError(f"{journal} is damaged ({exc}); it cannot be read as an Optuna journal") from None
        return {0: list(study.get_trials(deepcopy=False)), **upper}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_run(run_dir: str | os.PathLike[str], *, storage: str | None = None) -> RunState:
    """Snapshot the run in `run_dir` read-only (works while `nas.run` is still writing it).

    `storage` is needed only for runs started with `nas.run --storage URL` whose URL held a password
    (run.json stores it redacted); a URL without one (SQLite, or PostgreSQL with the password in
    PGPASSWORD / ~/.pgpass) is reopened from run.json.
    """
    root = Path(run_dir).expanduser()
    info = _read_run_json(root)
    by_rung = _frozen_trials(root, info, storage)
    frozen = by_rung[0]
    if len(by_rung) == 1:  # single-fidelity (or nothing promoted yet): the front is rung 0's
        return RunState(run_dir=root, info=info, trials=_records(frozen, rung=0, front=True), frozen=tuple(frozen))
    plain = {k: _records(trials, rung=k, front=False) for k, trials in by_rung.items()}
    top = max((k for k, records in plain.items() if any(t.trained for t in records)), default=0)
    rungs = {k: _records(by_rung[k], rung=k, front=True) if k == top else records for k, records in plain.items()}
    return RunState(run_dir=root, info=info, trials=rungs.pop(0), frozen=tuple(frozen), upper_rungs=rungs)


def _records(frozen: list[FrozenTrial], *, rung: int, front: bool) -> tuple[TrialRecord, ...]:
    """The records of one rung's Optuna trials, by number; `front`: flag this rung's Pareto trials.

    A rung k >= 1 record that does not say its rung yet (attributes of an unfinished trial may be
    partial) gets the rung of the study it was read from."""
    on_front = {t.number for t in pareto_front(t for t in frozen if t.state.name == "COMPLETE")} if front else set()
    records = []
    for t in frozen:
        record = TrialRecord.from_frozen(t, pareto=t.number in on_front)
        if rung and record.attrs.get(Key.RUNG) is None:
            record = replace(record, attrs={**record.attrs, Key.RUNG: rung})
        records.append(record)
    return tuple(sorted(records, key=lambda r: r.number))


def write_output(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write one of a reader's own outputs (dashboard, CSV, export) atomically and world-readable.

    The only kind of write a reader makes: a new file of its own, replaced in one step, so a browser
    or a second reader never sees half a file, and mode 0644 like the driver's run files.
    """
    from search_space.configio import atomic_write

    return atomic_write(path, data)
