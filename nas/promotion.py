"""The halving side of the scheduler: rung records, promotions, and continued trainings.

`RungLadder` keeps, for each rung, the (gain, latency) of the trials that reached it, decides which
trials go up (`nas.halving.promotable`), builds their training tasks (continue the previous rung's
checkpoint), and writes each rung result as a trial of that rung's Optuna study. The scheduler asks
it for work before it samples anything new (ASHA: promotions first).

Everything it knows is re-read from storage and the run directory when a run resumes:
- rung 0: the sampler study's COMPLETE trials with status ok, feasible, and a checkpoint;
- rung k >= 1: the rung-k study's trials (COMPLETE or FAIL: either way that promotion is done);
- the top rung's finished seeds: `rungs/trial-NNNNN-rK-seedS.json` (one file per seed, written
  before the combined record), so a run killed between two seeds keeps the first one.
A promotion that was running when the driver died has no record: it is simply promotable again and
continues from the same checkpoint, so no finished rung is lost or trained twice.

Decisions in entry order, not arrival order: with several workers, trainings end in an order that
depends on timing, and "the top 1/eta of what has arrived" then depends on it too (8 `rtsr` trials
at `--steps 300` promoted trials 2 and 3 with 2 workers, 3 and 5 with 1: 53 s of training instead of
38 s for the second one, and a ranking that depends on the worker count). So a rung's
results are *admitted* in the order their trials entered the rung (rung 0: trial number, i.e. the
order they were asked; rung k: the order they were promoted), each only once every earlier entrant
has ended there, and the promotions are decided at each admission, one result at a time. Given the
same sampled trials, the same trials go up whatever the number of workers or the speed of each
training. The price: a result that arrives early waits for the trainings asked before it (at most
one training per worker; the free worker meanwhile trains the next asked trial, when there is one).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

from nas.durations import promotion_seconds
from nas.halving import HalvingSpec, promotable, rung_study_name
from nas.task import JSONDict, RungRequest, TrainOutcome, TrainRequest
from nas.trial_record import Key, TrialStatus, eval_attrs, linear_metric

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from nas.run_context import RunContext

__all__ = ["RungJob", "RungLadder", "mean_report"]

#: Attributes of the rung-0 trial that describe its *outcome*: a rung record replaces them.
_OUTCOME_KEYS = (Key.PER_QP, Key.GAIN_Y, Key.DELTA_Y, Key.GAIN_LINEAR_Y, Key.DELTA_LINEAR_Y, Key.TEST, Key.EVAL_IMAGES,
                 Key.TRAIN_SECONDS, Key.EVAL_SECONDS, Key.TRIAL_SECONDS, Key.FINAL_LOSS, Key.FUSE_MAX_REL_ERR, Key.ONLINE_REPARAM, Key.WEIGHTS,
                 Key.CHECKPOINT, Key.TRAIN_HOST, Key.RETRIES, Key.RETRY_OF, Key.REQUEUED, Key.FAILURE_REASON, Key.DUPLICATE_OF)


@dataclass
class RungJob:
    """One training towards rung `rung` of the rung-0 trial `source`, with one seed."""

    source: int
    rung: int
    seed: int
    resume: str | None  # checkpoint path (relative to the run dir) to continue; None: train from scratch
    attempt: int = 0
    started: float = 0.0


def mean_report(reports: list[JSONDict]) -> JSONDict:
    """The element-wise mean of evaluation reports of the same shape (numbers averaged, rest from the first)."""
    first = reports[0]
    out: JSONDict = {}
    for key, value in first.items():
        others = [r.get(key) for r in reports]
        if isinstance(value, dict) and all(isinstance(o, dict) for o in others):
            out[key] = mean_report(others)  # type: ignore[arg-type]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and all(
            isinstance(o, (int, float)) and not isinstance(o, bool) for o in others
        ):
            out[key] = value if key in ("qp", "images") else fmean(float(o) for o in others if isinstance(o, (int, float)))
        else:
            out[key] = value
    return out


class RungLadder:
    """Rung results and promotions of one halving run (see the module docstring)."""

    def __init__(self, ctx: RunContext, spec: HalvingSpec, plan: JSONDict) -> None:
        import optuna

        from nas.optuna_compat import storage_of

        self.ctx = ctx
        self.spec = spec
        self.plan = plan  # trainers.continuation.WSDPlan as a dict (sent with every task)
        storage = storage_of(ctx.optuna_study)
        self.studies: dict[int, optuna.Study] = {
            k: optuna.create_study(study_name=rung_study_name(ctx.optuna_study.study_name, k), storage=storage,
                                   directions=["maximize", "minimize"], load_if_exists=True)
            for k in range(1, spec.rungs)
        }
        self.results: dict[int, dict[int, tuple[float, float]]] = {k: {} for k in range(spec.rungs)}
        self.attrs: dict[int, dict[int, JSONDict]] = {k: {} for k in range(spec.rungs)}
        # rung k >= 1: sources with a rung-k job or record, in promotion order (a dict as an ordered set)
        self.entered: dict[int, dict[int, None]] = {k: {} for k in range(1, spec.rungs)}
        self.failed: dict[int, set[int]] = {k: set() for k in range(1, spec.rungs)}  # rung k >= 1: promotions that failed
        self.admitted: dict[int, list[int]] = {k: [] for k in range(spec.rungs)}  # each rung's results decided on, in entry order
        self.sources: dict[int, FrozenTrial] = {}  # rung-0 trials by number (params, distributions, attrs)
        self.queue: deque[RungJob] = deque()
        self.running = 0

    # -- paths ------------------------------------------------------------------------------------

    def _rel(self, folder: str, source: int, rung: int, suffix: str) -> str:
        return f"{folder}/trial-{source:05d}-r{rung}{suffix}"

    def checkpoint_path(self, number: int, rung: int) -> str:
        """Where the stable training state of `number` at `rung` is kept (relative to the run dir)."""
        return self._rel("checkpoints", number, rung, ".pt")

    def _seed_file(self, source: int, seed: int) -> Path:
        return self.ctx.run_dir / self._rel("rungs", source, self.spec.top, f"-seed{seed}.json")

    @property
    def seeds(self) -> list[int]:
        return [self.ctx.spec.seed + i for i in range(self.spec.top_seeds)]

    # -- state --------------------------------------------------------------------------------------

    def load(self) -> None:
        """Re-read every rung result from storage (a resumed run promotes from where it stopped)."""
        for t in self.ctx.optuna_study.get_trials(deepcopy=False):
            self.note_rung0(t)
        for k, study in self.studies.items():
            for t in study.get_trials(deepcopy=False):
                source = t.user_attrs.get(Key.SOURCE_TRIAL)
                if source is None or t.state.name not in ("COMPLETE", "FAIL"):
                    continue
                self._enter(k, int(source))
                if t.state.name == "FAIL":
                    self.failed[k].add(int(source))
                if t.state.name == "COMPLETE" and t.values is not None:
                    self.results[k][int(source)] = (float(t.values[0]), float(t.values[1]))
                    self.attrs[k][int(source)] = dict(t.user_attrs)
        done = sum(len(r) for k, r in self.results.items() if k > 0)
        if done:
            self.ctx.log.print(f"resume: {done} rung result(s) above rung 0 already recorded")

    def note_rung0(self, t: FrozenTrial) -> None:
        """A finished sampler trial: a rung-0 result if it trained here, is feasible and kept a checkpoint."""
        a = t.user_attrs
        if (t.state.name == "COMPLETE" and a.get(Key.STATUS) == TrialStatus.OK and a.get(Key.FEASIBLE)
                and a.get(Key.CHECKPOINT) and t.values is not None):
            self.results[0][t.number] = (float(t.values[0]), float(t.values[1]))
            self.attrs[0][t.number] = dict(a)
            self.sources[t.number] = t

    # -- promotions ---------------------------------------------------------------------------------

    def _enter(self, rung: int, source: int) -> None:
        self.entered[rung].setdefault(source, None)

    def _decide(self, *, rung0_open_from: int | None) -> None:
        """Admit every result whose earlier entrants have all ended, one at a time in entry order, and
        queue the promotions each admission makes possible (see the module docstring).

        `rung0_open_from`: the lowest number of a rung-0 trial still in progress (asked, timed or
        training); None when there is none. A rung-0 result of a higher number waits."""
        seen = set(self.admitted[0])
        for n in sorted(self.results[0]):
            if rung0_open_from is not None and n >= rung0_open_from:
                break
            if n not in seen:
                self._admit(0, n)
        for k in range(1, self.spec.top):
            entrants = list(self.entered[k])
            while len(self.admitted[k]) < len(entrants):
                source = entrants[len(self.admitted[k])]
                if source not in self.results[k] and source not in self.failed[k]:
                    break
                self._admit(k, source)

    def _admit(self, rung: int, source: int) -> None:
        self.admitted[rung].append(source)
        if rung == self.spec.top:
            return
        decided = {n: self.results[rung][n] for n in self.admitted[rung] if n in self.results[rung]}
        for up in promotable(decided, eta=self.spec.eta, taken=set(self.entered[rung + 1])):
            self._enter(rung + 1, up)
            self._queue_jobs(up, rung + 1)

    def _queue_jobs(self, source: int, rung: int) -> None:
        resume = self.attrs[rung - 1][source].get(Key.CHECKPOINT)
        if rung < self.spec.top:
            self.queue.append(RungJob(source=source, rung=rung, seed=self.ctx.spec.seed, resume=resume))
            return
        for i, seed in enumerate(self.seeds):
            if not self._seed_file(source, seed).exists():  # a resumed run keeps seeds already trained
                self.queue.append(RungJob(source=source, rung=rung, seed=seed, resume=resume if i == 0 else None))
        if not any(j.source == source and j.rung == rung for j in self.queue):
            self._finish_top(source)  # every seed was already trained before a restart

    def next_job(self, *, rung0_open_from: int | None) -> RungJob | None:
        """The next promotion to train, or None (nothing in the top 1/eta of any rung is waiting):
        highest rung first, and of those the longest expected (the top rung's extra seeds train from
        scratch, ~1.5x a continued seed): started last, it would leave the other workers idle at the
        end of the run. `rung0_open_from`: see `_decide`."""
        self._decide(rung0_open_from=rung0_open_from)
        if not self.queue:
            return None
        job = max(self.queue, key=lambda j: (j.rung, self.expected_seconds(j) or 0.0))  # ties: the first queued
        self.queue.remove(job)
        return job

    def put_back(self, job: RungJob) -> None:
        """A job `next_job` handed out that the scheduler did not start (it would not end in time)."""
        self.queue.appendleft(job)

    def expected_seconds(self, job: RungJob) -> float | None:
        """How long `job` should take, from its own rung-0 training (`nas.durations`); None if unknown."""
        src = self.attrs[0].get(job.source, {})
        train_s, eval_s = src.get(Key.TRAIN_SECONDS), src.get(Key.EVAL_SECONDS)
        if not isinstance(train_s, (int, float)) or not isinstance(eval_s, (int, float)):
            return None
        return promotion_seconds(train_seconds=float(train_s), eval_seconds=float(eval_s), rung0_steps=self.spec.steps(0),
                                 rung0_decay_steps=self.spec.decay_steps(0),
                                 from_steps=0 if job.resume is None else self.spec.steps(job.rung - 1),
                                 to_steps=self.spec.steps(job.rung), decay_steps=self.spec.decay_steps(job.rung))

    def has_work(self) -> bool:
        """Promotions queued or running, or results not decided on yet (the next `next_job` admits them)."""
        undecided = any(len(self.admitted[k]) < len(self.results[k]) + len(self.failed.get(k, ())) for k in range(self.spec.top))
        return bool(self.queue) or self.running > 0 or undecided

    # -- tasks --------------------------------------------------------------------------------------

    def request(self, job: RungJob) -> TrainRequest:
        """The training task of `job`: the rung-0 trial's arch and recipe, continued from its checkpoint."""
        src = self.attrs[0][job.source]
        checkpoint = None if job.resume is None else (self.ctx.run_dir / job.resume).read_bytes()
        steps = self.spec.steps(job.rung)
        return TrainRequest(arch=src.get(Key.TRAINED_ARCH) or src[Key.ARCH], recipe=self.ctx.recipes[self.ctx.spec.proxy.recipe].to_dict(),
                            steps=steps, seed=job.seed, threads=self.ctx.spec.proxy.threads, device=self.ctx.kind,
                            rung=RungRequest(rung_steps=steps, plan=self.plan), checkpoint=checkpoint)

    def finished(self, job: RungJob, out: TrainOutcome | None, *, error: str | None = None) -> None:
        """A rung task returned (`out`) or crashed (`error`): record it, retry it, or fail the promotion."""
        if error is not None:
            if job.attempt < self.ctx.spec.budget.max_retries:
                self.queue.appendleft(dataclasses.replace(job, attempt=job.attempt + 1))
                self._log(job, f"crashed ({error}); retry {job.attempt + 1}/{self.ctx.spec.budget.max_retries} queued")
            else:
                self._fail(job, f"training task crashed: {error}")
            return
        assert out is not None
        gain = out.metric(self.ctx.spec.objectives.gain)
        if not out.ok or out.eval is None or gain is None or not math.isfinite(gain):
            self._fail(job, out.reason or f"{self.ctx.spec.objectives.gain} is {gain!r}")
            return
        part: JSONDict = {"seed": job.seed, "eval": out.eval, "test_eval": out.test_eval, "decay_steps": out.decay_steps,
                          "train_seconds": out.train_seconds, "eval_seconds": out.eval_seconds, "final_loss": out.final_loss,
                          "fuse_max_rel_err": out.fuse_max_rel_err, "host": out.host, "online_reparam": out.online_reparam}
        if job.seed == self.ctx.spec.seed and out.weights is not None:
            part["weights"] = self._save(self._rel("weights", job.source, job.rung, ".pt"), out.weights)
        if job.rung < self.spec.top:
            if out.checkpoint is not None:
                part["checkpoint"] = self._save(self.checkpoint_path(job.source, job.rung), out.checkpoint)
            self._record(job.source, job.rung, [part])
            return
        from search_space.configio import atomic_write

        path = self._seed_file(job.source, job.seed)
        atomic_write(path, json.dumps(part) + "\n")
        self._log(job, f"seed {job.seed}: {self.ctx.spec.objectives.gain} {gain:+.3f} dB")
        self._finish_top(job.source)

    def _finish_top(self, source: int) -> None:
        """Write the top-rung record once every seed's result is on disk."""
        files = [self._seed_file(source, seed) for seed in self.seeds]
        if all(f.exists() for f in files):
            self._record(source, self.spec.top, [json.loads(f.read_text()) for f in files])

    def _save(self, rel: str, data: bytes) -> str:
        from search_space.configio import atomic_write

        atomic_write(self.ctx.run_dir / rel, data)
        return rel

    # -- records ------------------------------------------------------------------------------------

    def _base_attrs(self, source: int, rung: int) -> JSONDict:
        attrs = {k: v for k, v in self.attrs[0][source].items() if k not in _OUTCOME_KEYS}
        attrs.update({Key.RUNG: rung, Key.RUNG_STEPS: self.spec.steps(rung), Key.STEPS: self.spec.steps(rung),
                      Key.SOURCE_TRIAL: source})
        return attrs

    def _history(self, source: int, rung: int, gain: float, gain_linear: float | None) -> list[JSONDict]:
        linear = linear_metric(self.ctx.spec.objectives.gain)
        out = [{"rung": k, "steps": self.spec.steps(k), "gain": self.results[k][source][0],
                "gain_linear": self.attrs[k][source].get(linear)} for k in range(rung)]
        return out + [{"rung": rung, "steps": self.spec.steps(rung), "gain": gain, "gain_linear": gain_linear}]

    def _record(self, source: int, rung: int, parts: list[JSONDict]) -> None:
        """Add the rung-`rung` trial of `source` (seeds averaged) to the rung's study."""
        from optuna.trial import TrialState, create_trial

        ev = mean_report([p["eval"] for p in parts])
        tests = [p["test_eval"] for p in parts if p.get("test_eval")]
        gain = float(ev[self.ctx.spec.objectives.gain])
        latency = self.results[0][source][1]
        attrs = self._base_attrs(source, rung)
        attrs.update(eval_attrs(ev, test=mean_report(tests) if len(tests) == len(parts) else None))
        attrs.update({
            Key.STATUS: TrialStatus.OK.value,
            Key.DECAY_STEPS: parts[0].get("decay_steps"),
            Key.TRAIN_SECONDS: sum(float(p.get("train_seconds") or 0) for p in parts),
            Key.EVAL_SECONDS: sum(float(p.get("eval_seconds") or 0) for p in parts),
            Key.FINAL_LOSS: parts[0].get("final_loss"),
            Key.FUSE_MAX_REL_ERR: max(float(p.get("fuse_max_rel_err") or 0) for p in parts),
            Key.ONLINE_REPARAM: parts[0].get("online_reparam"),
            Key.TRAIN_HOST: parts[0].get("host"),
        })
        for key in ("weights", "checkpoint"):
            if parts[0].get(key):
                attrs[Key.WEIGHTS if key == "weights" else Key.CHECKPOINT] = parts[0][key]
        if rung == self.spec.top:
            gains = {str(p["seed"]): float(p["eval"][self.ctx.spec.objectives.gain]) for p in parts}
            attrs[Key.SEED_GAINS] = gains
            attrs[Key.SEED_SPREAD] = max(gains.values()) - min(gains.values())
        attrs[Key.RUNG_HISTORY] = self._history(source, rung, gain, attrs.get(linear_metric(self.ctx.spec.objectives.gain)))
        self._add_trial(source, rung, create_trial(
            params=dict(self.sources[source].params), distributions=dict(self.sources[source].distributions),
            values=[gain, latency], user_attrs=attrs, state=TrialState.COMPLETE))
        self.results[rung][source] = (gain, latency)
        self.attrs[rung][source] = attrs
        before = self.results[rung - 1][source][0]
        spread = f", seed spread {attrs[Key.SEED_SPREAD]:.3f} dB" if Key.SEED_SPREAD in attrs and len(parts) > 1 else ""
        self._log_line(source, rung, f"{self.ctx.spec.objectives.gain} {gain:+.3f} dB (rung {rung - 1}: {before:+.3f}){spread}")

    def _fail(self, job: RungJob, reason: str) -> None:
        from optuna.trial import TrialState, create_trial

        attrs = self._base_attrs(job.source, job.rung)
        attrs.update({Key.STATUS: TrialStatus.FAILED.value, Key.FAILURE_REASON: f"seed {job.seed}: {reason}", Key.SEED: job.seed})
        self._add_trial(job.source, job.rung, create_trial(
            params=dict(self.sources[job.source].params), distributions=dict(self.sources[job.source].distributions),
            user_attrs=attrs, state=TrialState.FAIL))
        self.queue = deque(j for j in self.queue if not (j.source == job.source and j.rung == job.rung))
        self._log(job, f"failed: {reason}")

    def _add_trial(self, source: int, rung: int, trial: FrozenTrial) -> None:
        self.studies[rung].add_trial(trial)
        self._enter(rung, source)
        if trial.state.name == "FAIL":
            self.failed[rung].add(source)

    def front_study(self) -> tuple[optuna.Study, str]:
        """The study whose front is shown (the top rung; the highest one reached, said so), and a note."""
        reached = max((k for k in range(self.spec.rungs) if self.results[k]), default=0)
        study = self.ctx.optuna_study if reached == 0 else self.studies[reached]
        what = f"rung {reached} of 0-{self.spec.top}, {self.spec.steps(reached)} steps"
        if reached == self.spec.top:
            seeds = self.spec.top_seeds
            return study, f"top {what}, mean of {seeds} seed{'s' if seeds > 1 else ''}"
        return study, f"{what}: no trial reached the top rung ({self.spec.steps(self.spec.top)} steps)"

    # -- log ----------------------------------------------------------------------------------------

    def _log_line(self, source: int, rung: int, text: str) -> None:
        self.ctx.log.print(f"trial {source:>4} rung {rung} ({self.spec.steps(rung)} steps): {text}")

    def _log(self, job: RungJob, text: str) -> None:
        elapsed = f" [{time.perf_counter() - job.started:.0f} s]" if job.started else ""
        self._log_line(job.source, job.rung, text + elapsed)
