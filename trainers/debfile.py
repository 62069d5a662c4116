"""Reading a Debian package (.deb) without root or dpkg: its control fields and its files.

Why a module of its own: `trainers.photos` takes its photographs out of two .deb files fetched with
``apt-get download``, and the archive format (an ar archive holding ``control.tar.*`` and
``data.tar.*``) has nothing to do with photographs. dpkg-deb is used where it is installed (it reads
every compression Debian and Ubuntu use, Ubuntu's zstd included); without it the ar archive is read
here (xz, gzip, bzip2, none). A file that is not a readable package raises `DebFileError`, whose
message says what is wrong with it; the caller adds what the user should do.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["DebFileError", "deb_control", "deb_tar", "member_path"]


class DebFileError(Exception):
    """The file is not a Debian package this module can read; the message names the file and why."""


class _Slice(io.RawIOBase):
    """A read-only window ``[offset, offset + size)`` of an open file: one member of an ar archive."""

    def __init__(self, f: IO[bytes], offset: int, size: int) -> None:
        self._f, self._pos, self._end = f, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _ar_members(f: IO[bytes], deb: Path) -> dict[str, tuple[int, int]]:
    """``{member name: (offset, size)}`` of an ar archive (a .deb is one)."""
    if f.read(8) != b"!<arch>\n":
        raise DebFileError(f"{deb} is not a Debian package (no ar header)")
    members: dict[str, tuple[int, int]] = {}
    while True:
        header = f.read(60)
        if len(header) < 60:
            return members
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        members[name] = (f.tell(), size)
        f.seek(size + size % 2, os.SEEK_CUR)


@contextlib.contextmanager
def deb_tar(deb: Path, part: str) -> Iterator[tarfile.TarFile]:
    """A streaming tar of the .deb's ``control`` or ``data`` part (dpkg-deb where installed)."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is not None:
        flag = "--ctrl-tarfile" if part == "control" else "--fsys-tarfile"
        proc = subprocess.Popen([dpkg_deb, flag, str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                yield tar
            while proc.stdout.read(1 << 16):  # the tar's trailing padding: dpkg-deb must not die of a closed pipe
                pass
        except tarfile.TarError as exc:
            proc.kill()
            raise DebFileError(f"{deb.name}: dpkg-deb {flag} gave no readable tar ({exc})") from None
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            proc.stderr.close()
            code = proc.wait()
        if code != 0:
            raise DebFileError(f"{deb.name}: dpkg-deb {flag} failed ({err.splitlines()[-1] if err else f'exit status {code}'})")
        return
    with open(deb, "rb") as f:
        members = _ar_members(f, deb)
        found = [n for n in members if n.startswith(f"{part}.tar")]
        if not found:
            raise DebFileError(f"{deb.name} has no {part}.tar member; it is not a Debian package")
        name = found[0]
        if name[len(f"{part}.tar"):] not in ("", ".xz", ".gz", ".bz2"):  # what "r|*" detects
            raise DebFileError(f"{deb.name}: {name} needs dpkg-deb to unpack (install dpkg)")
        offset, size = members[name]
        with tarfile.open(fileobj=io.BufferedReader(_Slice(f, offset, size)), mode="r|*") as tar:
            yield tar


def member_path(name: str) -> str:
    """A tar member's path inside the package, without a leading ``./`` or ``/``."""
    return name[2:] if name.startswith("./") else name.lstrip("/")


def deb_control(deb: Path) -> tuple[str, str]:
    """``(Package, Version)`` from the .deb's control file."""
    fields: dict[str, str] = {}
    with deb_tar(deb, "control") as tar:
        for member in tar:
            if member_path(member.name) == "control" and member.isfile():
                text = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                for line in text.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "\t")):
                        fields[key.strip()] = value.strip()
    if "Package" not in fields or "Version" not in fields:
        raise DebFileError(f"{deb.name}: no Package/Version in its control file")
    return fields["Package"], fields["Version"]
