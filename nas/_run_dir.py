"""The run directory: its lock, its files and `run.json`, the record that says what the run is.

Why a module of its own: `run.json` is what makes a rerun resume the *same* experiment, so reading it,
refusing a changed one (identity, recipe contents, device, software stack) and writing it are one set
of rules, kept apart from opening Optuna and from the search loop (`nas.driver.SearchDriver` calls
them in order). Words: `spec` is our study file (`nas.study.Study`); Optuna's study is not used here.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nas.storage import has_password, is_redacted, redact, url_for_run_json, without_redacted_password
from search_space.configio import atomic_write, diff_keys
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.latency import LatencyProtocol
    from nas.study import Study
    from nas.task import JSONDict

__all__ = ["RUN_FORMAT", "RunDir", "fresh_run_dir", "hold_run_lock"]

#: v2: anchored networks start at their anchor, and every trial is also evaluated on a test split;
#: a v1 run's numbers are not comparable, so it is not resumed.
RUN_FORMAT = "rtsr-nas run v2"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hold_run_lock(run_dir: Path, *, why: str = "") -> IO[str]:
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


@dataclass(frozen=True)
class RunDir:
    """One run directory: where its files are, and the `run.json` rules (read, check, write).

    `say` prints the notes a resume may need (an older run.json accepted as it is)."""

    path: Path
    say: Callable[[str], None]

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def journal(self) -> Path:
        return self.path / "journal.log"

    @property
    def latency(self) -> Path:
        return self.path / "latency.jsonl"

    @property
    def weights(self) -> Path:
        return self.path / "weights"

    def lock(self) -> IO[str]:
        """One driver per run dir (`hold_run_lock`); close the handle to release it."""
        return hold_run_lock(self.path)

    def read(self) -> JSONDict | None:
        """The previous run's run.json (None for a new run); a UserError for one this version cannot resume."""
        if not self.run_json.exists():
            if self.journal.exists():
                raise UserError(
                    f"{self.path} has a journal but no run.json; it was not made by this version of nas.run. "
                    "Pass --fresh to start over (the old directory is kept) or --out another directory"
                )
            return None
        try:
            data = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.run_json} is unreadable ({exc}); pass --fresh to start a new run (the old one is kept)") from None
        if data.get("format") == "rtsr-nas run v1":
            raise UserError(
                f"{self.path} was made by an earlier rtsr-nas (run v1: anchored networks did not start at their "
                "anchor, no test split), so its trials cannot be mixed with new ones; pass --fresh to start over "
                "(the old run is kept and still readable by reports) or --out another directory"
            )
        if data.get("format") != RUN_FORMAT:
            raise UserError(f"{self.run_json} is not a {RUN_FORMAT!r} file; pass --fresh or another --out")
        return data

    def check_same_experiment(self, previous: JSONDict, spec: Study, *, storage_url: str | None) -> str | None:
        """Refuse a changed experiment; return the storage URL to resume with.

        Without `--storage`, a run that recorded a database URL holding no secret resumes from it
        (said so); one whose password was redacted asks for the URL again."""
        if previous.get("identity_hash") != spec.identity_hash:
            diff = diff_keys(previous.get("identity", {}), spec.identity_dict())
            raise UserError(
                f"{self.path} holds a run of a different experiment (changed: {', '.join(diff) or 'unknown'}); "
                "rerun with the original settings to resume, --fresh to start a new run (the old one is kept), "
                "or --out another directory"
            )
        stored = previous.get("storage")
        if storage_url is None and stored and stored != "journal":
            if is_redacted(stored):
                raise UserError(f"this run uses the storage {stored}; pass --storage with that URL again to resume it "
                                "(or without the password, set in PGPASSWORD or ~/.pgpass)")
            self.say(f"storage: {stored} (recorded in {self.run_json.name})")
            return stored  # it holds no secret: resume from what run.json recorded
        return storage_url

    def check_same_recipes(self, previous: JSONDict, recipe_hashes: Mapping[str, str]) -> None:
        """Refuse to resume when a recipe's *contents* changed (the study names it, so the identity
        hash alone misses an edited file): one run, one front, one training recipe.

        A run.json from before recipes were recorded is accepted, with a note."""
        stored = previous.get("recipe_hashes")
        if stored is None:
            self.say(f"note: {self.run_json.name} does not record its recipes' contents (made by an older rtsr-nas); "
                     "assuming they are unchanged, and recording them from now on")
            return
        changed = [f"{name} ({stored[name]} -> {digest})" for name, digest in recipe_hashes.items()
                   if name in stored and stored[name] != digest]
        if changed:
            raise UserError(
                f"{self.path} was trained with other contents of recipe {', '.join(changed)}; its trials and new "
                "ones would mix two recipes. Restore the recipe file to resume, or pass --fresh / --out to start a run "
                "with the edited recipe (save it under a new name to keep both)"
            )

    def check_same_device(self, previous: JSONDict | None, *, device_kind: str, device_name: str,
                          protocol: LatencyProtocol) -> None:
        """Refuse to resume on another device, protocol or torch/CUDA/cuDNN stack: their latencies
        must not share a front. A run.json from before the stack was recorded is accepted, with a note."""
        from nas.latency.software import SoftwareStack

        if previous is None:
            return
        if previous.get("device_name") != device_name or previous.get("latency_protocol_hash") != protocol.protocol_hash:
            raise UserError(
                f"{self.path} was timed on {previous.get('device_name')!r} (protocol {previous.get('latency_protocol_hash')}); "
                f"this machine times on {device_name!r} (protocol {protocol.protocol_hash}). Latencies from two devices "
                "must not share a front: resume on the original device (--device "
                f"{previous.get('device_kind')}), or pass --fresh / --out to start a separate run"
            )
        current = SoftwareStack.timing(protocol)
        recorded = previous.get("latency_software")
        if recorded is None:
            self.say(f"note: {self.run_json.name} does not record the software stack its latencies were timed with "
                     f"(made by an older rtsr-nas); assuming {current.label()}, and recording it from now on")
            return
        try:
            stack = SoftwareStack.from_dict(recorded)
        except TypeError:
            raise UserError(f"{self.run_json}: latency_software is malformed ({recorded!r}); pass --fresh or another --out") from None
        if stack.key != current.key:
            raise UserError(
                f"{self.path} was timed with {stack.label()}; this machine has {current.label()}. Latencies from two "
                "software stacks must not share a front: resume with the original versions installed, or pass --fresh / "
                "--out to start a separate run"
            )

    def write(self, previous: JSONDict | None, spec: Study, *, storage_url: str | None, argv: list[str],
              recipe_hashes: Mapping[str, str], data_identity: JSONDict | None, device_kind: str, device_name: str,
              protocol: LatencyProtocol, study_file: Path | None) -> JSONDict:
        """Write run.json (atomically): a new record, or the previous one with this start appended.

        The study file is copied beside it once (`study.toml`), so a run dir says what it ran."""
        from nas.latency.software import SoftwareStack

        # argv is stored redacted: a `--storage` URL with a password (either `--storage URL` or
        # `--storage=URL`) must not reach a 0644 file that is copied around with the run.
        entry = {"started": _now(), "argv": [redact(a) for a in argv], "host": socket.gethostname(), "pid": os.getpid()}
        doc: JSONDict
        if previous is None:
            run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            doc = {
                "format": RUN_FORMAT,
                "run_id": run_id,
                "optuna_study_name": f"{spec.name}-{run_id}",
                "storage": "journal" if storage_url is None else url_for_run_json(storage_url),
                "created": _now(),
                "study": spec.to_dict(),
                "identity": spec.identity_dict(),
                "identity_hash": spec.identity_hash,
                "device_kind": device_kind,
                "device_name": device_name,
                "latency_protocol": protocol.to_dict(),
                "latency_protocol_hash": protocol.protocol_hash,
                "latency_protocol_description": protocol.describe(),
                "latency_software": SoftwareStack.timing(protocol).to_dict(),
                "history": [entry],
            }
        else:
            doc = dict(previous)
            doc.setdefault("latency_software", SoftwareStack.timing(protocol).to_dict())  # runs made before it was recorded
            doc["study"] = spec.to_dict()  # the budget may have changed
            # earlier versions stored argv verbatim: scrub their entries too
            history = [{**h, "argv": [redact(str(a)) for a in h.get("argv", [])]} if isinstance(h, dict) else h
                       for h in previous.get("history", [])]
            doc["history"] = history + [entry]
            stored = str(previous.get("storage", "journal"))
            if storage_url is not None and is_redacted(stored) and not has_password(storage_url) \
                    and url_for_run_json(storage_url) == without_redacted_password(stored):
                # the same database, now with the password from the environment: store the URL that
                # opens it, so `python -m reports --run` needs no --storage
                doc["storage"] = url_for_run_json(storage_url)
        doc["recipe_hashes"] = {**doc.get("recipe_hashes", {}), **recipe_hashes}  # checked on resume
        if data_identity is not None:
            if previous is not None and previous.get("data") not in (None, data_identity):
                self.say(f"note: the data differ from what {self.run_json.name} recorded (data: source, pixel hash and linear "
                         "baseline per split); this run's trials mix two datasets or two baselines")
            doc["data"] = data_identity
        atomic_write(self.run_json, json.dumps(doc, indent=2, sort_keys=False) + "\n")
        if study_file is not None and not (self.path / "study.toml").exists():
            atomic_write(self.path / "study.toml", study_file.read_bytes())
        return doc
