"""The calibration's directory: what it is (`calibrate_run.json`), and one file per finished training.

Layout (all files written with `atomic_write`)::

    calibrate_run.json                    format, identity (+ hash), panel, history of commands
    results/<arch>/s<seed>-<steps>.json   one finished training: gains, test numbers, timings, host
    checkpoints/<arch>/s<seed>-<steps>.pt the stable state the next budget continues from

A result counts only once its JSON exists, and its checkpoint is written before it, so a kill -9 at
any moment loses at most the trainings in flight. A rerun with a different panel, budget, study or
device is refused with the list of what changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from search_space.configio import atomic_write, diff_keys
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from nas.calibrate.spec import CalibrationSpec, Task

__all__ = ["RUN_FILE", "CalibrationStore"]

RUN_FILE = "calibrate_run.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CalibrationStore:
    """Reads and writes one calibration directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock: IO[str] | None = None

    def result_path(self, task: Task) -> Path:
        return self.root / "results" / task.name / f"s{task.seed}-{task.steps}.json"

    def checkpoint_path(self, task: Task) -> Path:
        return self.root / "checkpoints" / task.name / f"s{task.seed}-{task.steps}.pt"

    # -- the run file ---------------------------------------------------------------------------

    def lock(self) -> None:
        """One calibration per directory at a time (released by the OS even on SIGKILL)."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UserError(f"another calibration is already using {self.root}; wait for it, or pass --out another directory") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def open(self, spec: CalibrationSpec, *, argv: list[str]) -> bool:
        """Check or create the run file; True when resuming. A changed experiment raises `UserError`."""
        path = self.root / RUN_FILE
        entry = {"started": _now(), "argv": argv, "host": socket.gethostname(), "pid": os.getpid()}
        identity = spec.identity()
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"{path} is unreadable ({exc}); pass --out another directory") from None
            if doc.get("identity_hash") != spec.identity_hash:
                changed = diff_keys(doc.get("identity", {}), identity)
                raise UserError(
                    f"{self.root} holds a calibration of a different experiment (changed: {', '.join(changed) or 'unknown'}); "
                    f"rerun the original command to resume it (argv: {' '.join(doc.get('history', [{}])[0].get('argv', []))}), "
                    "or pass --out another directory"
                )
            doc["history"] = list(doc.get("history", [])) + [entry]
            resuming = True
        else:
            doc = {"format": identity["format"], "created": _now(), "identity": identity, "identity_hash": spec.identity_hash,
                   "panel": [p.to_dict() for p in spec.panel], "history": [entry]}
            resuming = False
        atomic_write(path, json.dumps(doc, indent=2) + "\n")
        return resuming

    def history(self) -> list[JSONDict]:
        path = self.root / RUN_FILE
        return json.loads(path.read_text(encoding="utf-8")).get("history", []) if path.exists() else []

    # -- results --------------------------------------------------------------------------------

    def load(self, task: Task) -> JSONDict | None:
        path = self.result_path(task)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return None  # cannot happen with atomic writes; retrain rather than trust it

    def checkpoint(self, task: Task) -> bytes | None:
        path = self.checkpoint_path(task)
        return path.read_bytes() if path.exists() else None

    def save(self, task: Task, record: JSONDict, checkpoint: bytes | None) -> None:
        """Checkpoint first, then the record that makes the result count."""
        if checkpoint is not None:
            atomic_write(self.checkpoint_path(task), checkpoint)
        atomic_write(self.result_path(task), json.dumps(record, indent=1, sort_keys=True) + "\n")
