"""How a training task ended: one enum for the trainer that reports it and the search that reads it.

It lives in `trainers` (not `nas`) because `trainers.proxy.TrialResult` is where a status is first
set; `nas.task` re-exports it as `TaskStatus`. A `str` enum, so it compares equal to the spellings
stored in older JSON and journals ("ok", "failed", "crashed").
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TaskStatus"]


class TaskStatus(str, Enum):
    """How a task ended (stored as its string value)."""

    OK = "ok"  #: trained and evaluated
    FAILED = "failed"  #: the training ran and failed (e.g. diverged); `reason` says why
    CRASHED = "crashed"  #: the task died (a worker crash); calibration records keep it

    def __str__(self) -> str:
        return self.value
