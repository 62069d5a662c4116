"""What a run shows while it works: one log line per finished trial and a progress bar.

Log lines go to stdout (through tqdm so they never tear the bar); the bar goes to stderr and shows
trials done/total, the best gain within the latency budget, and the ETA. The bar (and every other
bar of the run: data preparation follows `TrialLog.progress`) is drawn only when stderr is a
terminal: redirected to a log, its carriage-return frames would be noise, and the log lines already
say everything. Every number carries its unit and the latency device.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from nas.trial_record import Key, TrialStatus
from trainers.terminal import is_terminal

if TYPE_CHECKING:
    from tqdm import tqdm

    from nas.run_context import PendingTrial
    from nas.task import JSONDict

__all__ = ["TrialLog", "fmt_duration"]


def fmt_duration(seconds: float) -> str:
    """'42 s', '3.5 min' or '1.2 h'."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TrialLog:
    """Prints lines and keeps the bar; `progress=False`, or a `bar_stream` that is not a terminal,
    keeps only the lines."""

    def __init__(self, *, out: TextIO, progress: bool, ablation: bool = False, bar_stream: TextIO | None = None) -> None:
        self.out = out
        self.bar_stream = sys.stderr if bar_stream is None else bar_stream
        self.progress = progress and is_terminal(self.bar_stream)
        self.ablation = ablation
        self.device_name = ""
        self.budget_ms: float | None = None
        self.best_gain: float | None = None
        self.bar: tqdm[None] | None = None

    def print(self, text: str) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)
        except ImportError:  # pragma: no cover
            print(text, file=self.out)
        self.out.flush()

    # -- the bar ----------------------------------------------------------------------------------

    def open_bar(self, *, done: int, total: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=min(done, total), desc="trials", unit="trial",
                        file=self.bar_stream, dynamic_ncols=True, smoothing=0.1)
        self._update_bar()

    def note_best(self, gain: float) -> None:
        if self.best_gain is None or gain > self.best_gain:
            self.best_gain = gain

    def _update_bar(self) -> None:
        if self.bar is None:
            return
        best = "-" if self.best_gain is None else f"{self.best_gain:+.3f} dB"
        label = "best gain" + (f" @<= {self.budget_ms:g} ms" if self.budget_ms is not None else "")
        self.bar.set_postfix_str(f"{label}: {best}", refresh=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- one line per trial -----------------------------------------------------------------------

    def trial(self, p: PendingTrial, *, status: TrialStatus | str, gain: float | None, extra: JSONDict, done: int) -> None:
        """The line of a trial that ended (`status` may be a longer label, e.g. 'crashed, retry 1/2 queued')."""
        lat = p.attrs.get(Key.LATENCY_MS)
        parts = [f"trial {p.trial.number:>4}"]
        if self.ablation:
            dtype = "" if p.eval_dtype == "float32" else f" ({p.eval_dtype})"
            parts.append(f"arm {p.trial.user_attrs.get(Key.ARM, '?')} seed {p.seed}{dtype}")
        parts.append(f"{p.arch.summary():<44}")
        if status in (TrialStatus.OK, TrialStatus.DUPLICATE):
            parts.append(f"gain {gain:+.3f} dB")
        else:
            parts.append(f"{status}")
        if lat is not None:
            parts.append(f"latency {lat:.2f} ms ({self.device_name})")
        parts.append(f"MACs {p.attrs[Key.MACS_G]:.3f} G")
        parts.append(f"time {fmt_duration(extra.get(Key.TRIAL_SECONDS, 0.0))}")
        if p.trial.user_attrs.get(Key.PRESET):
            parts.append(f"preset {p.trial.user_attrs[Key.PRESET]}")
        if status == TrialStatus.DUPLICATE:
            parts.append(f"(same arch as trial {extra.get(Key.DUPLICATE_OF)})")
        elif status == TrialStatus.SKIPPED:
            parts.append(f"(not trained: {extra.get(Key.SKIP_REASON)})")
        elif p.attrs.get(Key.FEASIBLE) is False:
            parts.append("(infeasible)")
        if Key.FAILURE_REASON in extra:
            parts.append(f"reason: {extra[Key.FAILURE_REASON]}")
        self.print("  ".join(parts))
        if self.bar is not None:
            self.bar.n = min(done, self.bar.total)
            self._update_bar()
