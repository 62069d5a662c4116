"""What the long-running commands (`search`, `train`) share around their work: the output folder
check, Ctrl-C, and how data warnings are shown.

Why here: these are promises a command makes to the person at the terminal (one-line errors, exit
130 after Ctrl-C, one line per warning), not behaviour of the layers below, which stay usable from
Python with plain exceptions and plain `warnings`. Imports nothing heavy at import time, so a
command can hold these before Ctrl-C can arrive.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["INTERRUPTED", "INTERRUPTED_CODE", "check_out_dir", "one_line_warnings", "run_command"]

INTERRUPTED = "interrupted; nothing was lost: rerun the same command to resume"
"""What a command prints after Ctrl-C: everything on disk is written atomically, so the rerun resumes."""

INTERRUPTED_CODE = 130
"""The shell's exit status for a process ended by SIGINT (128 + 2)."""

_PROBE = ".rtsr-write-probe"


def run_command(name: str, work: Callable[[], int | None]) -> int:
    """Run a command's `work` with the promises every command keeps: data warnings one line each, a
    user's mistake (`UserError`) one line and exit 2, Ctrl-C anywhere one line and exit 130.

    `work` returns the exit code (None for 0). Ctrl-C is caught around everything, including the
    import of the error type, so it cannot end in a traceback however early it comes."""
    try:
        from search_space.errors import UserError

        try:
            with one_line_warnings(name), _interrupts_never_swallowed():
                code = work()
        except UserError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print(f"\n{name}: {INTERRUPTED}", file=sys.stderr)
        return INTERRUPTED_CODE
    return 0 if code is None else code


@contextlib.contextmanager
def _interrupts_never_swallowed() -> Iterator[None]:
    """Re-deliver a Ctrl-C that Python would otherwise drop.

    Why: CPython runs signal handlers at the next bytecode of the main thread, and if that bytecode
    belongs to a finalizer (an object's `__del__`, a weakref callback, run by the garbage collector
    at any moment, e.g. while decoding or encoding images), the KeyboardInterrupt cannot propagate:
    it goes to `sys.unraisablehook` ("Exception ignored in ...") and the run goes on as if no key
    was pressed. Our hook has the interrupt sent to the main thread again a moment later, from a
    helper thread, so that it is raised at an ordinary bytecode after the hook has returned (sent
    from inside the hook, it would be raised inside the hook and dropped again); should it land in
    a finalizer once more, the same happens again. Any other unraisable exception is reported as
    before."""
    import _thread
    import threading
    import time

    previous = sys.unraisablehook

    def resend() -> None:
        time.sleep(0.01)  # the main thread leaves the hook (and the finalizer) meanwhile
        _thread.interrupt_main()

    def hook(unraisable: object) -> None:
        if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
            threading.Thread(target=resend, name="ctrl-c-resend", daemon=True).start()
            return
        previous(unraisable)  # type: ignore[arg-type]

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def check_out_dir(path: Path, *, flag: str = "--out") -> None:
    """Create `path` (with parents) and prove it takes a file, before any work starts.

    Without this, an unusable folder is found only when the first result is saved, minutes or hours
    in, and as a traceback. Raises one `UserError` naming the folder, why it cannot be used (it is
    a file, read-only, cannot be created) and the fix."""
    from search_space.errors import UserError

    fix = f"pass {flag} a folder you can write to"
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        what = f"{blocker} is a file" if blocker is not None else "a part of its path is a file"
        raise UserError(f"{flag} {path} cannot be created: {what}; {fix}") from None
    except OSError as exc:
        raise UserError(f"{flag} {path} cannot be created ({_reason(exc)}); {fix}") from None
    probe = path / _PROBE
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise UserError(f"{flag} {path} is not writable ({_reason(exc)}); {fix}") from None


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "read-only: permission denied"
    return exc.strerror or str(exc)


@contextlib.contextmanager
def one_line_warnings(prog: str, *, stream: TextIO | None = None) -> Iterator[None]:
    """Show the project's data and cache warnings as one line each (``PROG: warning: ...``), once per run.

    Python's default display adds the file, line number and an echo of the source line that issued
    the warning, none of which helps a user fix a bad image; and the same message issued again (a
    second split of the same folder, a second training stage) would repeat. Other warnings keep
    Python's own display."""
    from trainers.cache import CacheWarning
    from trainers.imageio import DataWarning

    ours = (DataWarning, CacheWarning)
    seen: set[str] = set()
    with warnings.catch_warnings():
        shown_before = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
            if not issubclass(category, ours):
                shown_before(message, category, filename, lineno, file, line)
                return
            text = " ".join(str(message).split())
            if text in seen:
                return
            seen.add(text)
            out = stream if stream is not None else sys.stderr
            print(f"{prog}: warning: {text}", file=out, flush=True)

        for category in ours:
            warnings.simplefilter("always", category)  # dedup is ours (by message), not per source line
        warnings.showwarning = show
        yield

