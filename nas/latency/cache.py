"""`LatencyCache`: measured latencies in an append-only JSON-lines file, keyed by arch, protocol,
device and software stack.

Why a file and not memory: a run directory's `latency.jsonl` is shared by several processes and
survives crashes, so a resumed run never times a network twice. The line format (sorted keys, no
spaces, one record per line) is what existing run directories hold; keep it byte-identical, and
only ever add keys. Why the stack is in the key: after a torch/CUDA/cuDNN upgrade an old number
is not a timing of what now runs, so it is measured again instead of silently reused. Lines from
before the stack was stored still load (and count in `len`), but match no stack and are never reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nas.latency.measure import LatencyResult, device_name_for, measure_latency
from nas.latency.protocol import LatencyProtocol, device_kind_of
from nas.latency.software import SoftwareStack
from search_space.errors import UserError

__all__ = ["CacheKey", "LatencyCache"]

#: (arch hash, protocol hash, device label, software stack key)
CacheKey = tuple[str, str, str, str]


class LatencyCache:
    """Append-only JSON-lines cache of `LatencyResult`s keyed by (arch hash, protocol hash, device
    name, software stack).

    Each record is appended with one `os.write` on an `O_APPEND` descriptor, so concurrent writers
    (several processes in one run directory) never interleave inside a line. A process killed
    mid-write leaves at most a truncated last line: it is skipped on load, and the next append
    starts on a fresh line. Whatever other processes appended is read (only the new bytes) before every
    lookup, so their entries are seen.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"latency cache {self.path} is a directory; pass a file path such as {self.path / 'latency.jsonl'}")
        self._reset()

    def _reset(self) -> None:
        self._entries: dict[CacheKey, LatencyResult] = {}
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file read so far
        self._complete = 0  # bytes of whole lines already parsed into _entries
        self._size = -1  # file size at the last refresh
        self._skipped_complete = 0
        self.skipped_lines = 0

    def _refresh(self) -> None:
        """Read what other processes appended since the last call (only the new bytes).

        The file only grows, so whole lines already parsed are never read again (a run's puts would
        otherwise re-read the whole file each time: quadratic in its records). A line without its
        newline yet (a write in progress, or one cut short by a crash) is re-read until it ends. A
        file replaced under the same path (another inode, or smaller than what was read) is read anew."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._reset()
            return
        file_id = (stat.st_dev, stat.st_ino)
        if file_id != self._file_id or stat.st_size < self._complete:
            self._reset()
            self._file_id = file_id
        if stat.st_size == self._size:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._complete)
            data = fh.read()
        *lines, tail = data.split(b"\n")
        for raw in lines:
            self._skipped_complete += not self._parse(raw)
        self._complete += len(data) - len(tail)
        # An unterminated last line: parsed if it is a whole record, counted as skipped otherwise,
        # and read again next time (a later append starts on a new line, see `put`).
        self.skipped_lines = self._skipped_complete + (not self._parse(tail))
        self._size = self._complete + len(tail)

    def _parse(self, raw: bytes) -> bool:
        """Store one line's record; False for a line that is not one (blank lines count as fine)."""
        if not raw.strip():
            return True
        try:
            result = LatencyResult.from_dict(json.loads(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
            # Appends are single writes, so a bad line can only be a record cut short by a crash;
            # skipping it just means that network is measured again.
            return False
        if result.arch_hash is not None:
            self._entries[result.cache_key] = result  # type: ignore[index]
        return True

    def __len__(self) -> int:
        self._refresh()
        return len(self._entries)

    def get(
        self, arch_hash: str, protocol: LatencyProtocol, device_name: str, software: SoftwareStack | None = None
    ) -> LatencyResult | None:
        """The cached result for this arch, protocol, device and software stack, or None.

        `software` defaults to this process's stack for the protocol's device kind: the stack that
        would time a miss here."""
        self._refresh()
        stack = software if software is not None else SoftwareStack.timing(protocol)
        return self._entries.get((arch_hash, protocol.protocol_hash, device_name, stack.key))

    def put(self, result: LatencyResult) -> None:
        """Append one record (atomic line write); later records win over earlier ones on load.

        A result that names no software stack (made by hand or by a test fake, never by
        `measure_latency`) is stored with this process's stack, so that `get` here finds it."""
        if result.arch_hash is None:
            raise UserError("a latency result without arch_hash cannot be cached; pass arch_hash= to measure_latency")
        if result.software is None:
            result = dataclasses.replace(result, software=SoftwareStack.timing(result.protocol))
        line = json.dumps(result.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _ends_without_newline(self.path):
                line = b"\n" + line  # a truncated record precedes us: start our own line
            os.write(fd, line)
        finally:
            os.close(fd)
        self._refresh()

    def get_or_measure(
        self,
        arch: Any,
        *,
        device: str | torch.device = "cuda",
        protocol: LatencyProtocol | None = None,
        name: str | None = None,
        measure: Callable[..., LatencyResult] | None = None,
    ) -> LatencyResult:
        """The cached latency of `arch` (anything with `.arch_hash`), measuring and storing it on a miss.

        `measure` defaults to `measure_latency`; it is called as
        `measure(arch, device=device, protocol=protocol, name=name)`.
        """
        if not hasattr(arch, "arch_hash"):
            raise UserError("LatencyCache.get_or_measure needs an ArchConfig (something with .arch_hash), not a bare module")
        kind = device_kind_of(device)
        protocol = protocol if protocol is not None else LatencyProtocol.default_for(kind)
        dev_name = device_name_for(device)
        hit = self.get(str(arch.arch_hash), protocol, dev_name)
        if hit is not None:
            return hit
        fn = measure if measure is not None else measure_latency
        result = fn(arch, device=device, protocol=protocol, name=name)
        if result.arch_hash is None:
            result = dataclasses.replace(result, arch_hash=str(arch.arch_hash))
        if result.software is None:
            result = dataclasses.replace(result, software=SoftwareStack.timing(protocol))
        self.put(result)
        return result


def _ends_without_newline(path: Path) -> bool:
    """Whether the file's last record was cut short (a writer killed mid-line), so ours must start anew."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False
