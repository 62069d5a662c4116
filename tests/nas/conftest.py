"""Fixtures of the nas tests: a throwaway PostgreSQL server for the `--storage postgresql://` tests, and
`kill_session` for the tests that SIGKILL a whole driver process tree.

Why a real server: the defects it guards (a password on disk, a driver missing, a run killed and
resumed) live in how psycopg, SQLAlchemy and Optuna meet a real database; SQLite shows none of them.
The server is initdb'd into a temp dir, listens on 127.0.0.1 only (a free port, its socket in the temp
dir), takes a password (scram-sha-256), and is stopped and deleted at the end of the session. Missing
server binaries fail the tests (`scripts/setup.sh --test` installs them), they do not skip them.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "rtsr"


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL everything in the session of `proc` (started with start_new_session=True): the driver,
    Ray's daemons and the worker processes, including any that left the process group. `proc` may
    have exited already (`ray start` leaves its daemons running in its session)."""
    import signal

    sid = proc.pid  # a session leader's pid is the session's id, also after the leader is gone
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the leader's process group is empty; others of the session may remain
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait(timeout=30)


@pytest.fixture()
def kill_session():
    """`kill_session(proc)`: SIGKILL a driver started with start_new_session=True and all it started."""
    return _kill_session


@dataclass(frozen=True)
class PostgresServer:
    """A running server: `url(db)` has no password (give `password` as PGPASSWORD, see `env`)."""

    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def url(self, db: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def url_with_password(self, db: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` plus the password where libpq looks for it."""
        return {**base, "PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL (without password)."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname=self.admin_db, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgres_bindir() -> Path:
    """The directory with initdb and pg_ctl: PATH, then Debian's /usr/lib/postgresql/<version>/bin
    (newest first), which is not on PATH."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.parent.name.split(".") if x.isdigit())

    candidates += sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.is_dir()), key=version, reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
                "run `bash scripts/setup.sh --test` (it apt-get installs postgresql) or install PostgreSQL", pytrace=False)


def _server_user() -> str | None:
    """initdb and postgres refuse to run as root (CI runs as root): then they run as the `postgres`
    user, which the Debian package creates; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, and there is no 'postgres' user to run the PostgreSQL server as; "
                    "install the postgresql package (it creates one)", pytrace=False)
    return "postgres"


def _as_server_user(argv: list[str]) -> list[str]:
    user = _server_user()
    if user is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *argv]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], what: str) -> None:
    cmd = _as_server_user(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test session (see the module docstring)."""
    bindir = _postgres_bindir()
    try:  # psycopg is in the test extra; a clear failure beats a skip
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed; run `.venv/bin/pip install -e '.[test]'`", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="rtsr-pg-", dir="/tmp"))  # short: the socket path has a length limit
    owner = _server_user()
    if owner is not None:
        shutil.chown(root, user=owner, group=None)
    password = "pw-" + secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner is not None:
        shutil.chown(pwfile, user=owner)
    data = root / "data"
    started = False
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
              "-E", "UTF8", "--no-locale", "--no-sync"], "initdb")
        pwfile.unlink()
        for attempt in itertools.count():
            port = _free_port()
            options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
            cmd = _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                                      "-t", "60", "-o", options, "start"])
            if subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0:
                started = True
                break
            if attempt == 2:  # the port was taken between the probe and the start, three times
                log = (root / "server.log").read_text(errors="replace")[-2000:] if (root / "server.log").exists() else ""
                pytest.fail(f"the PostgreSQL server did not start: {log}", pytrace=False)
        yield PostgresServer(host="127.0.0.1", port=port, user=PG_USER, password=password)
    finally:
        if started:
            cmd = _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            subprocess.run(cmd, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


_databases = itertools.count()


@pytest.fixture()
def postgres_db(postgres_server: PostgresServer) -> str:
    """A fresh database of the session's server for one test; its URL, without password.

    One per test: Optuna study names carry the run's start second, so two runs in one database
    could meet."""
    return postgres_server.create_database(f"rtsr_{os.getpid()}_{next(_databases)}")
