"""The trial record: what one trial stores in Optuna's user attributes, defined once.

The scheduler writes these attributes; `nas.runstate`, `nas.export`, `reports` and the tests' fake
runs read them. Every key is a constant of `Key`, every status a member of `TrialStatus`, and the
rules that depend on them (which trials count against the budget, which may appear on a front) are
functions here, so the writers and the readers cannot drift apart.

Why user attributes at all: the Optuna study (a journal file by default) is the whole state of a
run; keeping the record there makes a run directory self-contained and readable by Optuna's own
tools (`optuna-dashboard`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.task import JSONDict
    from optuna.trial import FrozenTrial

    from nas.latency import LatencyResult
    from search_space.arch import ArchConfig

__all__ = [
    "Key",
    "TRAINED_STATUSES",
    "TrialRecord",
    "TrialSetup",
    "TrialStatus",
    "counts_against_budget",
    "eval_attrs",
    "finite_or_none",
    "is_front_candidate",
    "latency_attrs",
    "linear_metric",
    "retry_attrs",
    "split_metrics",
]


class TrialStatus(str, Enum):
    """The driver's verdict on a trial (stored as its string value under `Key.STATUS`)."""

    OK = "ok"  #: trained and evaluated in this run
    DUPLICATE = "duplicate"  #: the same training as an earlier trial: its result was copied
    SKIPPED = "skipped"  #: broke a constraint, so not trained (`train_infeasible = false`)
    FAILED = "failed"  #: training, evaluation or latency failed for good
    CRASHED = "crashed"  #: a task died; re-queued while retries are left
    RUNNING = "running"  #: not finished (readers only: attributes may be partial)
    WAITING = "waiting"  #: queued, not asked yet (readers only)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


#: Statuses of trials with a real training result (a duplicate repeats its trained original).
TRAINED_STATUSES: frozenset[TrialStatus] = frozenset({TrialStatus.OK, TrialStatus.DUPLICATE})


class Key:
    """User-attribute keys of a trial, one constant each (values are the stored spellings)."""

    # what the trial is (set when it is asked)
    ARCH = "arch"  #: ArchConfig.to_dict() of the trained architecture
    ARCH_HASH = "arch_hash"
    ARCH_SUMMARY = "arch_summary"
    DEPLOY_ARCH = "deploy_arch"  #: the deployed arch when it differs (e.g. a recipe removes biases)
    DEPLOY_ARCH_HASH = "deploy_arch_hash"
    TRAINED_ARCH = "trained_arch"  #: what the training task reports it trained, when it differs
    RECIPE = "recipe"
    RECIPE_HASH = "recipe_hash"
    STEPS = "steps"
    SEED = "seed"
    QPS = "qps"
    DATA = "data"  #: {"train": source, "val": source}
    MACS = "macs"  #: deploy MACs at 540x960
    MACS_G = "macs_g"
    PARAMS = "params"
    DEVICE_KIND = "device_kind"
    LATENCY_DEVICE = "latency_device"
    RETRIES = "retries"
    PRESET = "preset"  #: warm-start preset name
    ARM = "arm"  #: ablation arm
    EVAL_DTYPE = "eval_dtype"  #: ablation arm's inference dtype
    # latency and constraints (set when the latency is known)
    LATENCY = "latency"  #: statistics, device and protocol (see `latency_attrs`)
    LATENCY_MS = "latency_ms"  #: the objective statistic
    FEASIBLE = "feasible"
    CONSTRAINTS = "constraints"  #: values, feasible when <= 0 (Optuna 4.x constraints_func reads it)
    CONSTRAINT_NAMES = "constraint_names"
    # the outcome (set when the trial ends)
    STATUS = "status"
    PER_QP = "per_qp"  #: per-QP metrics, keys are QPs as strings
    GAIN_Y = "gain_y"  #: mean PSNR-Y gain over Lanczos across the QPs, on val (the objective's split)
    DELTA_Y = "delta_y"  #: the survey's Delta (mean gain at QP31 and QP63), on val
    GAIN_LINEAR_Y = "gain_linear_y"  #: mean PSNR-Y gain over the least-squares linear baseline, on val
    DELTA_LINEAR_Y = "delta_linear_y"
    TEST = "test"  #: the same metrics on the test split (a dict, see `split_metrics`): reported, never selected on
    EVAL_IMAGES = "eval_images"
    TRAIN_SECONDS = "train_seconds"
    EVAL_SECONDS = "eval_seconds"
    TRIAL_SECONDS = "trial_seconds"
    FINAL_LOSS = "final_loss"
    FUSE_MAX_REL_ERR = "fuse_max_rel_err"
    ONLINE_REPARAM = "online_reparam"  #: trained each linear multi-branch block as its one fused conv (recipe key)
    DEGRADATION = "degradation"
    TRAIN_HOST = "train_host"
    WEIGHTS = "weights"  #: fused proxy weights, relative to the run dir
    WEIGHTS_OF = "weights_of"  #: an eval-time arm: the trial whose weights it evaluated
    EVAL_DTYPE_USED = "eval_dtype_used"
    EVAL_DEVICE = "eval_device"
    DUPLICATE_OF = "duplicate_of"
    SKIP_REASON = "skip_reason"
    FAILURE_REASON = "failure_reason"
    REQUEUED = "requeued"  #: this failed attempt was queued again: it does not count
    RETRY_OF = "retry_of"
    # successive halving (`nas.halving`): rung 0 is the sampler's trial, rung k >= 1 a record in the
    # rung-k study; a promoted trial continues its rung k-1 training from a checkpoint
    RUNG = "rung"  #: 0, 1, ...
    RUNG_STEPS = "rung_steps"  #: stable-phase steps trained by the end of this rung
    DECAY_STEPS = "decay_steps"  #: steps of the decay branch evaluated at this rung
    SOURCE_TRIAL = "source_trial"  #: rung k >= 1: the number of the sampler's (rung-0) trial
    RUNG_HISTORY = "rung_history"  #: [{"rung", "steps", "gain", "gain_linear"}] for rungs 0..this one
    CHECKPOINT = "checkpoint"  #: the stable training state at this rung, relative to the run dir
    SEED_GAINS = "seed_gains"  #: top rung: {seed: gain} of each seed trained
    SEED_SPREAD = "seed_spread_db"  #: top rung: max - min of the seeds' gains


def counts_against_budget(*, state: str, attrs: Mapping[str, Any]) -> bool:
    """Whether a trial is done for the budget: COMPLETE (trained, duplicate or skipped), or FAIL for
    good. A failed attempt that was re-queued does not count: its retry will."""
    return state == "COMPLETE" or (state == "FAIL" and not attrs.get(Key.REQUEUED))


def is_front_candidate(*, state: str, attrs: Mapping[str, Any], values: Sequence[float] | None) -> bool:
    """What a Pareto front may show: COMPLETE, trained in this run (status ok), feasible, with values.

    A duplicate is left out (it repeats its original, which is already a candidate)."""
    return (
        state == "COMPLETE"
        and attrs.get(Key.STATUS) == TrialStatus.OK
        and bool(attrs.get(Key.FEASIBLE, False))
        and values is not None
    )


def retry_attrs(number: int, attrs: Mapping[str, Any]) -> JSONDict:
    """The attributes a re-queued trial starts with: where it came from, and what it must keep."""
    out: JSONDict = {Key.RETRY_OF: number, Key.RETRIES: int(attrs.get(Key.RETRIES, 0)) + 1}
    for key in (Key.PRESET, Key.ARM, Key.SEED):
        if key in attrs:
            out[key] = attrs[key]
    return out


@dataclass(frozen=True)
class TrialSetup:
    """What a trial is, recorded when it is asked (before latency and training)."""

    arch: ArchConfig
    deploy_arch: ArchConfig
    recipe_name: str
    recipe_hash: str
    steps: int
    seed: int
    qps: tuple[int, ...]
    data: Mapping[str, str]
    macs: int
    params: int
    device_kind: str
    latency_device: str
    retries: int

    def to_attrs(self) -> JSONDict:
        attrs: JSONDict = {
            Key.ARCH: self.arch.to_dict(),
            Key.ARCH_HASH: self.arch.arch_hash,
            Key.ARCH_SUMMARY: self.arch.summary(),
            Key.RECIPE: self.recipe_name,
            Key.RECIPE_HASH: self.recipe_hash,
            Key.STEPS: self.steps,
            Key.SEED: self.seed,
            Key.QPS: list(self.qps),
            Key.DATA: dict(self.data),
            Key.MACS: int(self.macs),
            Key.PARAMS: int(self.params),
            Key.MACS_G: self.macs / 1e9,
            Key.DEVICE_KIND: self.device_kind,
            Key.LATENCY_DEVICE: self.latency_device,
            Key.RETRIES: self.retries,
        }
        if self.deploy_arch != self.arch:
            attrs[Key.DEPLOY_ARCH] = self.deploy_arch.to_dict()
            attrs[Key.DEPLOY_ARCH_HASH] = self.deploy_arch.arch_hash
        return attrs


def latency_attrs(result: LatencyResult) -> JSONDict:
    """The `Key.LATENCY` record of a measurement: statistics (spread included) with their device,
    protocol and software stack."""
    return {
        "mean_ms": result.mean_ms,
        "median_ms": result.median_ms,
        "p90_ms": result.p90_ms,
        "min_ms": result.min_ms,
        "std_ms": result.std_ms,
        "cv_percent": result.cv_percent,
        "iqr_ms": result.iqr_ms,
        "iqr_percent": result.iqr_percent,
        "n_runs": result.n_runs,
        "stopped_by": result.stopped_by,
        "device_name": result.device_name,
        "device_kind": result.device_kind,
        "protocol_hash": result.protocol_hash,
        "protocol": result.protocol.describe(),
        "software": result.software.label() if result.software is not None else None,
    }


def linear_metric(gain_metric: str) -> str:
    """The gain over the linear baseline that matches a gain over Lanczos ('gain_y' -> 'gain_linear_y')."""
    return {Key.GAIN_Y: Key.GAIN_LINEAR_Y, Key.DELTA_Y: Key.DELTA_LINEAR_Y}.get(gain_metric, gain_metric)


def split_metrics(report: Mapping[str, Any]) -> JSONDict:
    """Per-QP metrics and summary gains of one evaluation (`EvalReport.to_dict()`), keyed as stored."""
    return {
        Key.PER_QP: report["per_qp"],
        Key.GAIN_Y: report.get("gain_y"),
        Key.DELTA_Y: report.get("delta_y"),
        Key.GAIN_LINEAR_Y: report.get("gain_linear_y"),
        Key.DELTA_LINEAR_Y: report.get("delta_linear_y"),
        Key.EVAL_IMAGES: report.get("images"),
    }


def eval_attrs(report: Mapping[str, Any], *, test: Mapping[str, Any] | None = None) -> JSONDict:
    """The outcome attributes of an evaluation on val (`EvalReport.to_dict()`), plus `Key.TEST`
    when the test split was evaluated too."""
    attrs = split_metrics(report)
    if test is not None:
        attrs[Key.TEST] = split_metrics(test)
    return attrs


def finite_or_none(value: object) -> float | None:
    """`value` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        out = float(value)  # type: ignore[arg-type]  # anything: a failure is "not a number"
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as readers see it, flattened from Optuna's FrozenTrial and its user attributes.

    `gain_db` is set only for trained trials: a skipped trial is told a placeholder gain that is not
    a measurement, so it is None here and never plotted as one.
    """

    number: int
    state: str  # Optuna's state name: COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    status: TrialStatus | str  # a TrialStatus; an unknown stored value is kept as the string
    gain_db: float | None
    latency_ms: float | None
    feasible: bool | None
    pareto: bool
    attrs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    started: str | None = None  # ISO time
    completed: str | None = None  # ISO time

    @classmethod
    def from_frozen(cls, t: FrozenTrial, *, pareto: bool) -> TrialRecord:
        """The record of an Optuna FrozenTrial (`pareto`: whether it is on the run's front)."""
        attrs = dict(t.user_attrs)
        state = t.state.name
        status = _status(attrs.get(Key.STATUS) or state.lower())
        if state in ("RUNNING", "WAITING"):
            status = TrialStatus(state.lower())  # attrs of an unfinished trial may be partial
        elif state == "FAIL" and status not in (TrialStatus.FAILED, TrialStatus.CRASHED):
            status = TrialStatus.CRASHED  # e.g. an orphan failed on resume (a failure_reason, no status)
        values = list(t.values) if t.values is not None else None
        gain = finite_or_none(values[0]) if values and state == "COMPLETE" and status in TRAINED_STATUSES else None
        latency = finite_or_none(values[1]) if values else finite_or_none(attrs.get(Key.LATENCY_MS))
        feasible = attrs.get(Key.FEASIBLE)
        return cls(
            number=int(t.number),
            state=state,
            status=status,
            gain_db=gain,
            latency_ms=latency,
            feasible=None if feasible is None else bool(feasible),
            pareto=pareto,
            attrs=attrs,
            params=dict(t.params),
            started=t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            completed=t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
        )

    @property
    def trained(self) -> bool:
        return self.state == "COMPLETE" and self.status in TRAINED_STATUSES and self.gain_db is not None

    @property
    def counts_against_budget(self) -> bool:
        return counts_against_budget(state=self.state, attrs=self.attrs)

    @property
    def arch_summary(self) -> str:
        return str(self.attrs.get(Key.ARCH_SUMMARY, ""))

    @property
    def arch_hash(self) -> str:
        return str(self.attrs.get(Key.ARCH_HASH, ""))

    @property
    def deploy_arch_hash(self) -> str:
        """The hash of the network that was deployed, counted and timed."""
        return str(self.attrs.get(Key.DEPLOY_ARCH_HASH) or self.arch_hash)

    @property
    def preset(self) -> str | None:
        value = self.attrs.get(Key.PRESET)
        return str(value) if value else None

    @property
    def macs(self) -> int | None:
        value = self.attrs.get(Key.MACS)
        return None if value is None else int(value)

    @property
    def n_params(self) -> int | None:
        value = self.attrs.get(Key.PARAMS)
        return None if value is None else int(value)

    @property
    def seed(self) -> int | None:
        value = self.attrs.get(Key.SEED, self.params.get("seed"))
        return None if value is None else int(value)

    @property
    def arm(self) -> str | None:
        value = self.attrs.get(Key.ARM) or self.params.get("arm")
        return str(value) if value else None

    def metrics(self, split: str = "val") -> Mapping[str, Any]:
        """The stored metrics of `split` ('val': the objective's; 'test': reported); {} if none."""
        if split == "val":
            return self.attrs
        if split == "test":
            return self.attrs.get(Key.TEST) or {}
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")

    def metric(self, name: str, *, split: str = "val") -> float | None:
        """A summary gain in dB (e.g. 'gain_y', 'delta_linear_y') on `split`; None unless trained and recorded."""
        if not self.trained:
            return None
        return finite_or_none(self.metrics(split).get(name))

    def per_qp_gain(self, split: str = "val", *, baseline: str = "lanczos") -> dict[int, float]:
        """PSNR-Y gain per QP in dB over `baseline` ('lanczos' or 'linear') on `split` (empty unless trained)."""
        out: dict[int, float] = {}
        ref = "lanczos_psnr_y" if baseline == "lanczos" else "linear_psnr_y"
        for qp, m in dict(self.metrics(split).get(Key.PER_QP) or {}).items():
            gain = m.get("gain_y" if baseline == "lanczos" else "gain_linear_y")
            if gain is None and "psnr_y" in m and m.get(ref) is not None:
                gain = m["psnr_y"] - m[ref]
            value = finite_or_none(gain)
            if value is not None:
                out[int(qp)] = value
        return dict(sorted(out.items()))

    @property
    def rung(self) -> int:
        """The successive-halving rung this record is from (`nas.halving`); 0 for the sampler's trials,
        hence for every trial of a single-fidelity run."""
        value = self.attrs.get(Key.RUNG)
        return 0 if value is None else int(value)

    @property
    def source_trial(self) -> int:
        """The sampler's (rung-0) trial this record continues: the number a user knows the trial by.

        A rung k >= 1 record is a trial of another Optuna study, so its own `number` counts within
        that study; at rung 0 the source is the record itself."""
        value = self.attrs.get(Key.SOURCE_TRIAL)
        return self.number if value is None or self.rung == 0 else int(value)

    @property
    def reason(self) -> str:
        """Why the trial has no result (failure or skip reason), or ''."""
        return str(self.attrs.get(Key.FAILURE_REASON) or self.attrs.get(Key.SKIP_REASON) or "")

    @property
    def weights(self) -> str | None:
        """The fused proxy weights, relative to the run dir (e.g. 'weights/trial-00003.pt')."""
        value = self.attrs.get(Key.WEIGHTS)
        return str(value) if value else None


def _status(value: object) -> TrialStatus | str:
    try:
        return TrialStatus(str(value))
    except ValueError:
        return str(value)
