"""How a trial ends: told COMPLETE (ok, duplicate, skipped), failed, crashed and retried, or re-queued.

A crash spends one of the trial's retries; a re-queue (Ctrl-C, the time limit, a lost local Ray
node) does not count against the budget, and after a lost node it spends no retry either.

Every ending writes the trial's outcome attributes (`nas.trial_record.Key`), tells Optuna, counts
the trial against the budget when it is done for good, and logs one line. Kept apart from the
scheduler so that "what happens to a trial" and "when it happens" can each be read on their own.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nas.trial_record import Key, TrialStatus, retry_attrs

if TYPE_CHECKING:
    from nas.run_context import PendingTrial, RunContext
    from nas.task import JSONDict

__all__ = ["SKIPPED_GAIN_DB", "TrialEndings"]

#: Gain told for a trial that was not trained because it broke a constraint: "no better than
#: Lanczos". It is never shown as a result: such trials are infeasible and carry status "skipped".
SKIPPED_GAIN_DB = 0.0


class TrialEndings:
    """The endings of trials, and the count of trials done (see the module docstring)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.done = 0

    def _elapsed(self, p: PendingTrial) -> float:
        return time.perf_counter() - p.started

    def _set(self, p: PendingTrial, attrs: JSONDict) -> None:
        for key, value in attrs.items():
            p.trial.set_user_attr(key, value.value if isinstance(value, TrialStatus) else value)

    def save_weights(self, p: PendingTrial, data: bytes) -> str:
        """Store a trial's fused weights in the run dir; returns their path relative to it."""
        return self.save_file(f"weights/trial-{p.trial.number:05d}.pt", data)

    def save_file(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` in the run dir (atomically); returns `rel`."""
        from search_space.configio import atomic_write

        atomic_write(self.ctx.run_dir / rel, data)
        return rel

    def complete(self, p: PendingTrial, *, gain: float, status: TrialStatus, extra: JSONDict) -> None:
        extra = {**extra, Key.STATUS: status, Key.TRIAL_SECONDS: self._elapsed(p)}
        self._set(p, extra)
        self.ctx.optuna_study.tell(p.trial, [gain, float(p.attrs[Key.LATENCY_MS])])
        self.done += 1
        if status in (TrialStatus.OK, TrialStatus.DUPLICATE) and p.attrs.get(Key.FEASIBLE):
            self.ctx.log.note_best(gain)
        self.ctx.log.trial(p, status=status, gain=gain, extra=extra, done=self.done)

    def fail(self, p: PendingTrial, reason: str, *, extra: JSONDict | None = None) -> None:
        from optuna.trial import TrialState

        extra = {**(extra or {}), Key.STATUS: TrialStatus.FAILED, Key.FAILURE_REASON: reason, Key.TRIAL_SECONDS: self._elapsed(p)}
        self._set(p, extra)
        self.ctx.optuna_study.tell(p.trial, state=TrialState.FAIL)
        self.done += 1
        self.ctx.log.trial(p, status=TrialStatus.FAILED, gain=None, extra=extra, done=self.done)

    def crashed(self, p: PendingTrial, reason: str) -> None:
        """A task died: fail this attempt with its reason; re-queue it while retries are left."""
        from optuna.trial import TrialState

        max_retries = self.ctx.spec.budget.max_retries
        retries = int(p.trial.user_attrs.get(Key.RETRIES, 0))
        retry = retries < max_retries and bool(p.trial.params)
        attrs = {Key.STATUS: TrialStatus.CRASHED, Key.FAILURE_REASON: reason, Key.REQUEUED: retry, Key.TRIAL_SECONDS: self._elapsed(p)}
        self._set(p, attrs)
        self.ctx.optuna_study.tell(p.trial, state=TrialState.FAIL)
        if retry:
            self._enqueue_again(p)
            label = f"crashed, retry {retries + 1}/{max_retries} queued"
        else:
            self.done += 1
            label = "crashed, no retries left"
        self.ctx.log.trial(p, status=label, gain=None, extra=attrs, done=self.done)

    def requeue(self, p: PendingTrial, reason: str, *, spend_retry: bool = True) -> None:
        """Fail `p` without counting it and queue it again (Ctrl-C: a rerun picks it up).

        `spend_retry=False` when the attempt says nothing about the trial (the local Ray node died
        under it): the queued copy keeps p's retry count, so its own retries are all still left."""
        from optuna.trial import TrialState

        try:
            self._set(p, {Key.FAILURE_REASON: f"{reason}; re-queued", Key.REQUEUED: True})
            self.ctx.optuna_study.tell(p.trial, state=TrialState.FAIL)
            self._enqueue_again(p, spend_retry=spend_retry)
        except Exception:  # noqa: BLE001 - best effort; a rerun recovers RUNNING trials anyway
            pass

    def _enqueue_again(self, p: PendingTrial, *, spend_retry: bool = True) -> None:
        if p.trial.params:
            frozen = self.ctx.optuna_study.get_trials(deepcopy=False)[p.trial.number]
            attrs = retry_attrs(frozen.number, frozen.user_attrs)
            if not spend_retry:
                attrs[Key.RETRIES] = int(frozen.user_attrs.get(Key.RETRIES, 0))
            self.ctx.optuna_study.enqueue_trial(dict(p.trial.params), user_attrs=attrs)

    def reevaluate(self, p: PendingTrial, *, weights: bytes | str | Path | None, arch: JSONDict, extra: JSONDict) -> None:
        """Evaluate fused weights (bytes, or a path in the run dir) in p's eval dtype, here in the driver.

        Used by eval-time ablation arms: the same trained weights, another inference dtype. It runs
        in the driver process (a second or two on the validation set) so it needs no task type of
        its own; on a cuda run it uses the driver's GPU if it has one, else the CPU (recorded)."""
        import torch

        from nas.deployment import evaluate_weights
        from nas.trial_record import eval_attrs

        if weights is None:
            self.fail(p, "no fused weights to re-evaluate (the training trial kept none)", extra=extra)
            return
        if isinstance(weights, str):
            weights = self.ctx.run_dir / weights
        device = "cuda" if self.ctx.kind == "cuda" and torch.cuda.is_available() else "cpu"
        started = time.perf_counter()
        try:
            reports = evaluate_weights(weights=weights, arch=arch, data=self.ctx.data, dtype=p.eval_dtype, device=device,
                                       threads=self.ctx.spec.proxy.threads)
        except (OSError, RuntimeError, ValueError, FloatingPointError) as exc:
            self.fail(p, f"{p.eval_dtype} evaluation: {type(exc).__name__}: {exc}", extra=extra)
            return
        ev, test = reports["val"], reports["test"]
        assert ev is not None, "evaluate_weights always reports on val"
        gain_name = self.ctx.spec.objectives.gain
        gain = ev.get(gain_name)
        if gain is None or not math.isfinite(gain):
            self.fail(p, f"{gain_name} is {gain!r} in {p.eval_dtype}", extra=extra)
            return
        extra = {**extra, **eval_attrs(ev, test=test), Key.EVAL_DTYPE_USED: ev.get("dtype"), Key.EVAL_DEVICE: device,
                 Key.EVAL_SECONDS: time.perf_counter() - started}
        if isinstance(weights, Path):
            extra[Key.WEIGHTS] = weights.relative_to(self.ctx.run_dir).as_posix()
        self.complete(p, gain=float(gain), status=TrialStatus.OK, extra=extra)
