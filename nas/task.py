"""The records that cross the executor boundary: a training request and its outcome, a latency outcome.

Why typed records: a trial's training is built in the driver (`nas.scheduler`, `nas.promotion`,
`nas.calibrate.runner`), runs in a Ray task or a pool process (`nas.executor.train_one`) and comes
back to be recorded; with plain dicts each of those places spelled the keys again. Here they are
defined once, like Optuna's `FrozenTrial`. What travels is still plain data (`to_dict()`: numbers,
strings, bytes, nested dicts), so Ray and the process pool pickle nothing of ours and a task body
stays callable without either; `from_dict` reads it back on the other side.

`TaskStatus` (defined in `trainers.status`, where a training sets it) is what a training (or, in a
calibration record, a crashed task) ended with; a `str` enum, so it compares equal to the spellings
stored in older JSON and journals ("ok", ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainers.status import TaskStatus

__all__ = ["JSONDict", "LatencyOutcome", "RungRequest", "TaskStatus", "TrainOutcome", "TrainRequest"]

#: A JSON object as stored or sent (a config's `to_dict()`, an evaluation report): its schema is
#: owned by the class that writes it (`ArchConfig`, `Recipe`, `trainers.metrics`), not restated here.
JSONDict = dict[str, Any]


@dataclass(frozen=True)
class RungRequest:
    """Successive halving: train warmup-stable-decay up to `rung_steps` stable steps of `plan`
    (`trainers.continuation.WSDPlan` as a dict: `warmup_steps`, `horizon`, `decay`)."""

    rung_steps: int
    plan: JSONDict

    def to_dict(self) -> JSONDict:
        return {"rung_steps": self.rung_steps, "plan": dict(self.plan)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RungRequest:
        return cls(rung_steps=int(data["rung_steps"]), plan=dict(data["plan"]))


@dataclass(frozen=True)
class TrainRequest:
    """One proxy training: what `nas.executor.train_one` needs besides the data.

    `checkpoint` (bytes of a previous rung's training state) is continued when given; with `rung`
    None the training is a single-fidelity proxy training of `steps` steps."""

    arch: JSONDict  # ArchConfig.to_dict()
    recipe: JSONDict  # Recipe.to_dict()
    steps: int
    seed: int
    threads: int
    device: str  # "cpu" | "cuda"
    rung: RungRequest | None = None
    checkpoint: bytes | None = None

    def to_dict(self) -> JSONDict:
        """The keyword arguments of `train_one` (`rung` and `checkpoint` only for a rung training)."""
        out: JSONDict = {"arch": self.arch, "recipe": self.recipe, "steps": self.steps, "seed": self.seed,
                         "threads": self.threads, "device": self.device}
        if self.rung is not None or self.checkpoint is not None:
            out["rung"] = None if self.rung is None else self.rung.to_dict()
            out["checkpoint"] = self.checkpoint
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRequest:
        rung = data.get("rung")
        return cls(arch=dict(data["arch"]), recipe=dict(data["recipe"]), steps=int(data["steps"]), seed=int(data["seed"]),
                   threads=int(data["threads"]), device=str(data["device"]),
                   rung=None if rung is None else RungRequest.from_dict(rung), checkpoint=data.get("checkpoint"))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class TrainOutcome:
    """What a training task returns: the training's record (`trainers.proxy.TrialResult`'s fields),
    the fused weights, where it ran, and for a rung training the checkpoint to continue from.

    `to_dict()` is the wire form `{"result": {...}, "weights", "host", "task_seconds", ...}`."""

    status: TaskStatus
    reason: str | None = None
    arch: JSONDict | None = None  # what was trained (a recipe stage may have changed the requested arch)
    eval: JSONDict | None = None  # EvalReport.to_dict() on val: what the search selects on
    test_eval: JSONDict | None = None  # the same on test: reported, never selected on
    train_seconds: float | None = None
    eval_seconds: float | None = None
    final_loss: float | None = None
    fuse_max_rel_err: float | None = None
    degradation: str | None = None
    device: str | None = None
    arch_hash: str | None = None
    recipe_hash: str | None = None
    seed: int | None = None
    steps: int | None = None
    threads: int | None = None
    weights: bytes | None = None  # torch.save bytes of the fused deploy state
    host: str | None = None
    task_seconds: float | None = None
    checkpoint: bytes | None = None  # rung trainings: the stable state the next rung continues
    decay_steps: int | None = None
    resumed_from: int | None = None
    online_reparam: bool | None = None  # trained as the fused convs (the recipe's key); None: not recorded

    @property
    def ok(self) -> bool:
        """Trained and evaluated (a failed training keeps its reason)."""
        return self.status is TaskStatus.OK and self.eval is not None

    def metric(self, name: str) -> float | None:
        """A number of the val report (e.g. the study's gain objective), None when absent."""
        value = (self.eval or {}).get(name)
        return None if value is None else float(value)

    _RESULT_KEYS = ("reason", "arch", "arch_hash", "recipe_hash", "seed", "steps", "threads", "device", "train_seconds",
                    "eval_seconds", "final_loss", "fuse_max_rel_err", "eval", "degradation", "test_eval",
                    "online_reparam")
    _TASK_KEYS = ("weights", "host", "task_seconds")
    _RUNG_KEYS = ("checkpoint", "decay_steps", "resumed_from")

    def to_dict(self) -> JSONDict:
        result: JSONDict = {"status": self.status.value, **{k: getattr(self, k) for k in self._RESULT_KEYS}}
        out: JSONDict = {"result": result, **{k: getattr(self, k) for k in self._TASK_KEYS}}
        if self.checkpoint is not None or self.decay_steps is not None:
            out.update({k: getattr(self, k) for k in self._RUNG_KEYS})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainOutcome:
        r = data["result"]
        return cls(
            status=TaskStatus(r.get("status", TaskStatus.FAILED.value)), reason=r.get("reason"), arch=r.get("arch"),
            eval=r.get("eval"), test_eval=r.get("test_eval"), train_seconds=_float(r.get("train_seconds")),
            eval_seconds=_float(r.get("eval_seconds")), final_loss=_float(r.get("final_loss")),
            fuse_max_rel_err=_float(r.get("fuse_max_rel_err")), degradation=r.get("degradation"), device=r.get("device"),
            arch_hash=r.get("arch_hash"), recipe_hash=r.get("recipe_hash"), seed=_int(r.get("seed")), steps=_int(r.get("steps")),
            threads=_int(r.get("threads")), weights=data.get("weights"), host=data.get("host"),
            task_seconds=_float(data.get("task_seconds")), checkpoint=data.get("checkpoint"),
            decay_steps=_int(data.get("decay_steps")), resumed_from=_int(data.get("resumed_from")),
            online_reparam=r.get("online_reparam"),
        )


@dataclass(frozen=True)
class LatencyOutcome:
    """One architecture of a latency batch: its `LatencyResult.to_dict()`, or why it has none."""

    arch_hash: str
    latency: JSONDict | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.latency is not None

    def to_dict(self) -> JSONDict:
        out: JSONDict = {"ok": self.ok, "arch_hash": self.arch_hash}
        if self.latency is not None:
            out["latency"] = self.latency
        else:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyOutcome:
        ok = bool(data.get("ok"))
        return cls(arch_hash=str(data.get("arch_hash")), latency=data.get("latency") if ok else None,
                   reason=None if ok else (data.get("reason") or "latency not measured"))
