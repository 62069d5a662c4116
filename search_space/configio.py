"""Config plumbing shared by every layer: unknown keys, TOML loading, content hashes, atomic writes.

Why one module at the bottom: every config (arch, ranges, degradation, recipe, study, run config,
latency protocol) is read from TOML, refuses keys it does not know, is keyed by a content hash and
is written without ever leaving a half-written file. Written once here, each of those behaves and
words its errors the same way everywhere; `search_space` is the lowest layer, so all may import it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from search_space.errors import UserError

__all__ = ["atomic_write", "content_hash", "diff_keys", "load_toml", "parse_toml", "reject_unknown_keys", "shipped_folder",
           "strip_none"]


def content_hash(payload: Any) -> str:
    """First 12 hex digits of sha256 over canonical JSON (sorted keys, no whitespace, ASCII, NaN refused).

    Artefacts (cache entries, latency records, exports, run directories) are keyed by it, so it must
    be identical across runs, processes, machines and Python versions."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def reject_unknown_keys(where: str, data: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise one `UserError` naming every key of `data` not in `valid`, and listing the valid ones.

    `where` names the table for the user, e.g. "[search]" or "recipe 'casr' stage 2"."""
    valid = list(valid)
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")


def parse_toml(text: str, *, source: str = "TOML text") -> dict[str, Any]:
    """`text` parsed as TOML; a syntax error is a `UserError` that names `source` and the line."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except ValueError as err:  # tomllib.TOMLDecodeError is a ValueError
        raise UserError(f"{source} is not valid TOML: {err}") from None


def load_toml(path: str | os.PathLike[str], *, what: str = "file") -> dict[str, Any]:
    """The TOML file at `path` as a dict; unreadable, non-UTF-8 or invalid files give one `UserError`.

    `what` names the kind of file in the message ("study file", "recipe file", ...)."""
    target = Path(path)
    source = f"{what} {str(target)!r}"
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{source} is not UTF-8 text; is it really a TOML file?") from None
    except OSError as err:
        raise UserError(f"{source} cannot be read ({err.strerror or err})") from None
    return parse_toml(text, source=source)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (text is UTF-8 encoded) to `path` atomically, mode 0644; returns the path.

    The bytes land in a temp file in the same folder, are flushed to disk, and replace the target in
    one `os.replace`: a reader, or a writer killed half-way, never sees a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files and caches are meant to be read by others
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def shipped_folder(package: str, name: str) -> Path:
    """The folder `name` of package data shipped in `package` (studies, recipes), editable or not.

    pip unpacks packages as plain files, where this is a Path. A zipped package has no real folder:
    its Path does not exist, so nothing shipped is found and the callers' errors say what is known."""
    folder = importlib.resources.files(package).joinpath(name)
    return folder if isinstance(folder, Path) else Path(str(folder))


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like configs differ (lists of equal length item by item): what a
    resumed run or calibration prints when the command no longer describes the same experiment."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff_keys(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix or "(root)"]


def strip_none(value: Any) -> Any:
    """`value` with every None-valued mapping key dropped, recursively (tuples become lists).

    TOML has no null: an absent key means "default", which every config's `from_dict` restores, so
    this is how a `to_dict()` is written as TOML (recipes, run configs, derived studies)."""
    if isinstance(value, Mapping):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [strip_none(v) for v in value]
    return value
