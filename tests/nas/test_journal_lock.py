"""The journal write lock (`nas.optuna_compat.flock_lock`) on the installed Optuna: it is the public kind
of lock Optuna documents, it keeps concurrent writers consistent, and a SIGKILLed holder frees it at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys, optuna
from pathlib import Path
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from nas.optuna_compat import flock_lock
optuna.logging.set_verbosity(optuna.logging.WARNING)
journal = Path(sys.argv[1])
storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=flock_lock(journal)))
study = optuna.load_study(study_name="s", storage=storage)
for _ in range(int(sys.argv[2])):
    t = study.ask()
    study.tell(t, t.suggest_float("x", 0, 1))
"""

HOLDER = """
import sys, time
from pathlib import Path
from nas.optuna_compat import flock_lock
lock = flock_lock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _storage(journal: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nas.optuna_compat import flock_lock

    return JournalStorage(JournalFileBackend(str(journal), lock_obj=flock_lock(journal)))


def test_the_lock_is_optunas_public_open_lock_kind():
    from optuna.storages.journal import JournalFileOpenLock

    from nas.optuna_compat import flock_lock

    lock = flock_lock(Path("/tmp/unused-journal.log"))
    assert isinstance(lock, JournalFileOpenLock)
    assert "storages.journal._" not in (REPO / "nas" / "optuna_compat.py").read_text()  # no private Optuna module


def test_two_processes_writing_one_journal_lose_nothing(tmp_path):
    import optuna

    journal = tmp_path / "journal.log"
    optuna.create_study(study_name="s", storage=_storage(journal))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(journal), "15"], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    trials = optuna.load_study(study_name="s", storage=_storage(journal)).get_trials()
    assert len(trials) == 30 and sorted(t.number for t in trials) == list(range(30))
    assert all(t.state.name == "COMPLETE" for t in trials)


def test_a_sigkilled_holder_frees_the_lock_at_once(tmp_path):
    from nas.optuna_compat import flock_lock

    journal = tmp_path / "journal.log"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(journal)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    started = time.monotonic()
    lock = flock_lock(journal)
    assert lock.acquire()
    lock.release()
    # Optuna's own open/symlink locks would wait out a 30 s grace period for a dead holder's lock file.
    assert time.monotonic() - started < 5.0
