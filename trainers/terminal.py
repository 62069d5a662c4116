"""Whether a stream is a terminal: progress bars are drawn only there.

Why one function: a bar's redrawn frames (carriage returns) are readable only on a terminal; in a log
file or a pipe they are noise, so every command (`nas.run`, `trainers.full`) asks the same question.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_terminal"]


def is_terminal(stream: Any) -> bool:
    """True when `stream` is a terminal; False for files, pipes, closed or stream-less objects."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
