"""Optuna RDB storage URLs (`--storage`): keep passwords off disk, and open a database with errors that say the fix.

Why a module of its own: the driver (writer) and the run reader (`nas.runstate`) both open the URL a
run was started with, and both must agree on what counts as a secret. A PostgreSQL URL needs no
password at all: psycopg (libpq) reads it from PGPASSWORD, PGPASSFILE or ~/.pgpass, so the URL on the
command line and in run.json can stay secret-free; a URL that does carry one is stored redacted
(`user:***@`) and a reader must be given it again.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from search_space.errors import UserError

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

__all__ = ["REDACTED", "has_password", "is_redacted", "open_rdb_storage", "redact", "url_for_run_json", "without_redacted_password"]

#: What a password is replaced with on disk and in messages.
REDACTED = "***"

# The userinfo password exactly as SQLAlchemy's URL parser delimits it (`scheme://user:PASSWORD@`),
# so whatever SQLAlchemy would send as the password is what gets hidden.
_USERINFO_PASSWORD = re.compile(r"(?P<head>[\w+]+://[^:/]*):(?P<password>[^@]*)@")
# libpq also takes the password as a query parameter (`?password=...`), which SQLAlchemy passes through.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#\s]*)", re.IGNORECASE)

_INSTALL_POSTGRES = "pip install 'rtsr-nas[postgres]' (in a checkout: .venv/bin/pip install -e '.[postgres]')"
_PASSWORD_HINT = ("give the password through PGPASSWORD, PGPASSFILE or ~/.pgpass (psycopg reads them) and keep it "
                  "out of the URL")


def redact(text: str) -> str:
    """`text` with every URL password replaced by `***` (run.json, logs and messages must not hold secrets).

    Works on any string, so `--storage=URL` and a bare `URL` argument are both covered."""
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}", text)


def has_password(url: str) -> bool:
    """True when `url` carries a real (non-redacted) password."""
    return any(m["password"] and m["password"] != REDACTED
               for pattern in (_USERINFO_PASSWORD, _QUERY_PASSWORD) for m in pattern.finditer(url))


def is_redacted(url: str) -> bool:
    """True when `url` lost its password to `redact`: it cannot be opened as it stands."""
    return any(m["password"] == REDACTED for pattern in (_USERINFO_PASSWORD, _QUERY_PASSWORD) for m in pattern.finditer(url))


def without_redacted_password(url: str) -> str:
    """`user:***@` -> `user@`: a redacted URL as the same URL with its password left to the environment."""
    return url.replace(f":{REDACTED}@", "@")


def url_for_run_json(url: str) -> str:
    """The URL as run.json stores it: redacted, and a relative SQLite path made absolute (a report
    built from another directory must find the same file, not create an empty one)."""
    db = _sqlite_file(url)
    if db is not None and not os.path.isabs(db):
        from sqlalchemy.engine import make_url

        url = make_url(url).set(database=os.path.abspath(db)).render_as_string(hide_password=False)
    return redact(url)


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL as written (None: not SQLite, in memory, or not parseable)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        db = make_url(url).database
    except Exception:  # noqa: BLE001 - a malformed URL is reported when it is opened
        return None
    return db if db and db != ":memory:" and not db.startswith("file:") else None


def open_rdb_storage(url: str, *, source: str = "--storage", create: bool = True) -> RDBStorage:
    """Connect to the Optuna RDB storage at `url` now; a UserError that names the fix if it cannot.

    Called before any data is loaded or any worker started, so a wrong URL, an unreachable server, a
    missing password or a missing database driver costs a second, not a minute. `create=False` (a
    reader) creates no tables and refuses a SQLite file that does not exist. `source` says where the
    URL came from, for the message."""
    import optuna

    where = f"{source} {redact(url)}"
    db = _sqlite_file(url)
    if not create and db is not None and not os.path.isfile(db):
        raise UserError(f"{where}: the SQLite file {db} does not exist; pass --storage with the URL the run was started with")
    try:
        return optuna.storages.RDBStorage(url, skip_table_creation=not create)
    except ImportError as exc:
        raise UserError(f"{where}: {_missing_driver(url, exc)}") from None
    except Exception as exc:  # noqa: BLE001 - bad URLs and servers surface as many SQLAlchemy/DBAPI types
        exc = _root_cause(exc)  # type: ignore[assignment]  # Optuna wraps some as StorageInternalError("... exceeding max length")
        message = _one_line(exc)
        hint = "check the URL, that the server is running and that it accepts this user"
        if type(exc).__name__ == "NoSuchModuleError":
            hint = "not a database URL SQLAlchemy knows; use e.g. postgresql://USER@HOST/DB or sqlite:///PATH"
        elif url.startswith("postgres") and re.search(r"password|authentication", message, re.IGNORECASE):
            hint = _PASSWORD_HINT
        raise UserError(f"{where}: cannot connect ({type(exc).__name__}: {redact(message)}); {hint}") from None


def _missing_driver(url: str, exc: ImportError) -> str:
    """What to install when SQLAlchemy cannot import the URL's DB-API module (Optuna wraps its ImportError)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
    module = getattr(cause, "name", None) or "its DB-API module"
    scheme = url.split("://", 1)[0]
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return f"the PostgreSQL driver is not installed (no module {module}); install it with {_INSTALL_POSTGRES}"
    if scheme.startswith("postgresql+"):
        return (f"the driver of {scheme}:// is not installed (no module {module}); install {module}, or use "
                f"postgresql:// (psycopg 3) after {_INSTALL_POSTGRES}")
    return f"the database driver for {scheme}:// is not installed (no module {module}); pip install it"


def _root_cause(exc: BaseException) -> BaseException:
    """The exception at the end of the `raise ... from` chain: the one that says what the server said."""
    for _ in range(10):
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    return exc


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, without SQLAlchemy's trailing 'Background on this error' link."""
    text = str(exc).split("(Background on this error", 1)[0]
    return " ".join(text.split()) or type(exc).__name__
