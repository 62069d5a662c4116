"""Atomic file writes: a reader (or a killed writer) never sees a half-written file.

Every artefact the project writes (configs, checkpoints, metrics, cached images) goes through
`atomic_write`: the bytes land in a temp file in the same folder, are flushed to disk, and replace
the target in one `os.replace`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (text is UTF-8 encoded) to `path` atomically, mode 0644; returns the path."""
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
