"""Read a run directory without touching it: the shared input of reports and `nas.export`.

Why a separate reader: a dashboard is built while `nas.run` is still writing the same run, and an
export may run next to it. The driver is the journal's only writer (it holds `.lock` and the
journal's flock), so a reader must never take those locks nor write into the run. `load_run`
therefore copies `journal.log` (up to its last complete line) into a private temp folder and loads
the Optuna study from the copy; `run.json` is read as plain JSON. Everything a report or an export
needs is flattened into `TrialRecord`s, so callers do not depend on Optuna's trial objects or on the
driver's user-attr spelling (beyond this module).

The Pareto front is the driver's own definition (`nas.driver.pareto_front`: COMPLETE, trained
(status "ok"), feasible, non-dominated for max gain / min latency), so the front in a dashboard,
in `pareto.txt` and in an export always agree.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.errors import UserError

__all__ = ["TRAINED_STATUSES", "RunState", "TrialRecord", "load_run", "write_output"]

#: Driver statuses of trials that were actually trained (a duplicate copies a trained original).
TRAINED_STATUSES: tuple[str, ...] = ("ok", "duplicate")


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a run, flattened from Optuna's FrozenTrial and the driver's user attrs.

    `gain_db` is set only for trained trials: a skipped trial is told a placeholder gain that is not
    a measurement, so it is None here and never plotted as one.
    """

    number: int
    state: str  # Optuna's state name: COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    status: str  # the driver's: ok, duplicate, skipped, failed, crashed; else the state in lower case
    gain_db: float | None
    latency_ms: float | None
    feasible: bool | None
    pareto: bool
    attrs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    started: str | None = None  # ISO time
    completed: str | None = None  # ISO time

    @property
    def trained(self) -> bool:
        return self.state == "COMPLETE" and self.status in TRAINED_STATUSES and self.gain_db is not None

    @property
    def arch_summary(self) -> str:
        return str(self.attrs.get("arch_summary", ""))

    @property
    def arch_hash(self) -> str:
        return str(self.attrs.get("arch_hash", ""))

    @property
    def preset(self) -> str | None:
        value = self.attrs.get("preset")
        return str(value) if value else None

    @property
    def macs(self) -> int | None:
        value = self.attrs.get("macs")
        return None if value is None else int(value)

    @property
    def n_params(self) -> int | None:
        value = self.attrs.get("params")
        return None if value is None else int(value)

    @property
    def per_qp_gain(self) -> dict[int, float]:
        """PSNR-Y gain over Lanczos per QP in dB (empty unless trained)."""
        out: dict[int, float] = {}
        for qp, m in dict(self.attrs.get("per_qp") or {}).items():
            gain = m.get("gain_y")
            if gain is None and "psnr_y" in m and "lanczos_psnr_y" in m:
                gain = m["psnr_y"] - m["lanczos_psnr_y"]
            value = _finite(gain)
            if value is not None:
                out[int(qp)] = value
        return dict(sorted(out.items()))

    @property
    def reason(self) -> str:
        """Why the trial has no result (failure or skip reason), or ''."""
        return str(self.attrs.get("failure_reason") or self.attrs.get("skip_reason") or "")

    @property
    def weights(self) -> str | None:
        """The fused proxy weights, relative to the run dir (e.g. 'weights/trial-00003.pt')."""
        value = self.attrs.get("weights")
        return str(value) if value else None


@dataclass(frozen=True)
class RunState:
    """A snapshot of one run directory: run.json plus every trial, read without locks."""

    run_dir: Path
    info: Mapping[str, Any]
    trials: tuple[TrialRecord, ...]
    frozen: tuple[Any, ...] = field(repr=False, default=())  # Optuna FrozenTrials (for optuna tools)

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
        names = {str(t.attrs["latency_device"]) for t in self.trials if t.attrs.get("latency_device")}
        if len(names) == 1:
            return names.pop()
        return str(self.info.get("device_name", "unknown device"))

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
            return _finite(table.get(self.device_kind))
        return _finite(table)

    @property
    def macs_budget_g(self) -> float | None:
        return _finite(self.study.get("constraints", {}).get("macs_g"))

    @property
    def budget_trials(self) -> int | None:
        value = self.study.get("budget", {}).get("trials")
        return None if value is None else int(value)

    # -- trials -------------------------------------------------------------------------------------

    def pareto(self) -> list[TrialRecord]:
        """The Pareto trials, by increasing latency (the driver's definition)."""
        return sorted((t for t in self.trials if t.pareto), key=lambda t: (t.latency_ms or 0.0, -(t.gain_db or 0.0), t.number))

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
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def finished(self) -> int:
        """Trials that count against the budget (as the driver counts them)."""
        return sum(
            1
            for t in self.trials
            if t.state == "COMPLETE" or (t.state == "FAIL" and not t.attrs.get("requeued"))
        )

    @property
    def in_progress(self) -> bool:
        """True while trials are running or queued, or the budget is not used up."""
        if any(t.state in ("RUNNING", "WAITING") for t in self.trials):
            return True
        return self.budget_trials is not None and self.finished < self.budget_trials

    def optuna_study(self, *, numbers: Iterable[int] | None = None) -> Any:
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


def _read_run_json(run_dir: Path) -> dict[str, Any]:
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


def _frozen_trials(run_dir: Path, info: Mapping[str, Any], storage: str | None) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = str(info["optuna_study_name"])
    stored = str(info.get("storage", "journal"))
    if storage is None and stored != "journal":
        raise UserError(f"run {run_dir} keeps its trials in {stored}; pass --storage with that URL (password included) to read it")
    if storage is not None:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return []
        except Exception as exc:  # noqa: BLE001 - bad URLs surface as many SQLAlchemy types
            raise UserError(f"--storage: cannot read study {name!r} ({type(exc).__name__}: {exc})") from None
        return list(study.get_trials(deepcopy=False))

    journal = run_dir / "journal.log"
    if not journal.is_file():
        return []  # started, but no trial asked yet
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tmp = Path(tempfile.mkdtemp(prefix="rtsr-runread-"))
    try:
        copy = tmp / "journal.log"
        _copy_journal(journal, copy)
        try:
            study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(copy))))
        except KeyError:
            return []  # run.json written, study not created yet
        except ValueError as exc:
            raise UserError(f"{journal} is damaged ({exc}); it cannot be read as an Optuna journal") from None
        return list(study.get_trials(deepcopy=False))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _record(t: Any, *, pareto: set[int]) -> TrialRecord:
    attrs = dict(t.user_attrs)
    state = t.state.name
    status = str(attrs.get("status") or state.lower())
    if state in ("RUNNING", "WAITING"):
        status = state.lower()  # attrs of an unfinished trial may be partial
    elif state == "FAIL" and status not in ("failed", "crashed"):
        status = "crashed"  # e.g. an orphan failed on resume (it has a failure_reason, no status)
    values = list(t.values) if t.values is not None else None
    gain = _finite(values[0]) if values and state == "COMPLETE" and status in TRAINED_STATUSES else None
    latency = _finite(values[1]) if values else _finite(attrs.get("latency_ms"))
    feasible = attrs.get("feasible")
    return TrialRecord(
        number=int(t.number),
        state=state,
        status=status,
        gain_db=gain,
        latency_ms=latency,
        feasible=None if feasible is None else bool(feasible),
        pareto=t.number in pareto,
        attrs=attrs,
        params=dict(t.params),
        started=t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
        completed=t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
    )


def load_run(run_dir: str | os.PathLike[str], *, storage: str | None = None) -> RunState:
    """Snapshot the run in `run_dir` read-only (works while `nas.run` is still writing it).

    `storage` is needed only for runs started with `nas.run --storage URL` (run.json stores the URL
    without its password).
    """
    from nas.driver import pareto_front

    root = Path(run_dir).expanduser()
    info = _read_run_json(root)
    frozen = _frozen_trials(root, info, storage)
    complete = [t for t in frozen if t.state.name == "COMPLETE"]
    front = {t.number for t in pareto_front(complete)}
    records = tuple(sorted((_record(t, pareto=front) for t in frozen), key=lambda r: r.number))
    return RunState(run_dir=root, info=info, trials=records, frozen=tuple(frozen))


def write_output(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write one of a reader's own outputs (dashboard, CSV, export) atomically and world-readable.

    The only kind of write a reader makes: a new file of its own, replaced in one step, so a browser
    or a second reader never sees half a file, and mode 0644 like the driver's run files.
    """
    from trainers.fileio import atomic_write

    return atomic_write(path, data)
