"""The trial scheduler: where a trial is asked, timed, trained and told.

One trial, in order:
1. `study.ask()` (warm-start presets, ablation arms and re-queued trials come first, as WAITING
   trials), then `suggest()` -> `ArchConfig`; deploy MACs/params (`search_space.cost`, cheap).
2. Latency, from the run's cache (`latency.jsonl`, keyed by arch hash, protocol hash, device) or
   measured in an exclusive latency batch (see `nas.executor`). Constraints are now known.
3. If a constraint is broken and the study says `train_infeasible = false`, the trial is *skipped*:
   told COMPLETE with gain `SKIPPED_GAIN_DB` and its real latency, status "skipped", and always
   infeasible, so samplers learn the region and no front ever shows it. A trial whose training
   already finished in this run (same arch, recipe, steps, seed, data) copies that result (status
   "duplicate") instead of training the same thing again; one that is being trained right now
   waits for it.
4. Otherwise a training task; its fused weights go to `weights/trial-NNNNN.pt`, then `tell`.

Several trials are asked ahead (`LOOKAHEAD_PER_WORKER` per worker) so that one latency batch, which
needs the whole device, covers many trials. A batch is submitted only once no training is in flight,
and nothing is submitted while it runs, so nothing shares the device while it times. While a batch
waits for the running trainings, a free worker starts only a training expected to end before they do
(a promotion's or trial's expected duration, `nas.durations`), instead of idling for the whole drain.

With `[budget] minutes`, a training starts only if it is expected to end within the limit; when
nothing that fits is left, the run stops as at the limit (what was asked is re-queued for a rerun).

Ablation arms that evaluate in another dtype (`eval_dtype`) train nothing of their own: they
re-evaluate, in this process, the fused weights of the trial that trained the same network.

What a trial stores is defined in `nas.trial_record`; every status change goes through
`TrialEndings` (`nas.trial_endings`).

A lost local Ray node (`nas.executor.NodeLostError`, seen under memory pressure) fails every task in
flight at once and runs nothing more, so it is not a crash of each trial: every trial the scheduler
holds (running, timing, asked) is re-queued without spending a retry, COMPLETE trials are untouched,
and the run stops with a `UserError` (exit code 2) that says to rerun the same command to resume.
Restarting Ray in-process is not attempted: the state a dead node leaves is not worth trusting.

Successive halving (a study with `[halving]`, see `nas.halving`): the sampler's trials are rung 0
(trained with a warmup-stable-decay schedule that keeps a checkpoint); `nas.promotion.RungLadder`
decides which of them go up and records the higher rungs. Whenever a worker is free, a promotion is
trained before any new rung-0 trial (ASHA), and the run ends when the rung-0 budget is done and no
trial is left in the top 1/eta of a rung. Promotions are decided on rung-0 results in trial-number
order (the ladder is told the lowest trial still in progress), so that which trials go up does not
depend on which of several trainings happened to end first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from typing import TYPE_CHECKING

from nas.durations import RungZeroDurations, drain_seconds, ends_in_time
from nas.run_context import PendingTrial, RunContext
from nas.task import JSONDict, LatencyOutcome, RungRequest, TrainOutcome, TrainRequest
from nas.trial_endings import SKIPPED_GAIN_DB, TrialEndings
from nas.trial_record import (
    Key,
    TrialSetup,
    TrialStatus,
    counts_against_budget,
    eval_attrs,
    is_front_candidate,
    latency_attrs,
)
from search_space.arch import ArchConfig

if TYPE_CHECKING:
    from nas.executor import TaskHandle
    from nas.latency import LatencyResult
    from nas.promotion import RungJob, RungLadder

__all__ = ["LOOKAHEAD_PER_WORKER", "SKIPPED_GAIN_DB", "RunContext", "TrialScheduler"]

#: How many trials are asked per latency batch, per worker (fewer exclusive-device drains).
LOOKAHEAD_PER_WORKER = 4
_POLL_S = 0.5


class TrialScheduler:
    """Keeps `workers` trainings busy until the trial budget is done (see the module docstring)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.optuna_study = ctx.optuna_study
        self.executor = ctx.executor
        self.recipe = ctx.recipes[self.spec.proxy.recipe]
        self.ready: deque[PendingTrial] = deque()
        self.latency_job: tuple[TaskHandle, list[PendingTrial]] | None = None  # the batch being timed
        self.latency_wanted: list[PendingTrial] = []  # asked trials whose batch waits for the running trainings to end
        self._latency_asked: tuple[float, int] = (0.0, 0)  # when the pending batch was requested, trainings then running
        self._drain_fills = 0  # trainings started (and ended) while the pending batch waited
        self.inflight: dict[TaskHandle, PendingTrial | RungJob] = {}  # task reference -> a rung-0 trial or a promotion
        self.expected_end: dict[TaskHandle, float | None] = {}  # when each running training should end (None: unknown)
        self.durations = RungZeroDurations()  # this run's finished rung-0 trainings (`nas.durations`)
        self._refused_for_time = False  # a training was not started because it would end after the time limit
        self.trained: dict[str, int] = {}  # training key -> number of a trained COMPLETE trial
        self.active: set[str] = set()  # training keys queued or being trained now
        self.followers: dict[str, list[PendingTrial]] = {}  # same training as an active one: wait for it
        self.endings = TrialEndings(ctx)
        self.ladder: RungLadder | None = None
        if self.spec.halving is not None:
            from nas.promotion import RungLadder
            from trainers.continuation import WSDPlan

            h = self.spec.halving
            plan = dataclasses.asdict(WSDPlan.for_rungs(self.recipe, min_steps=h.min_steps, top_steps=h.steps(h.top), decay=h.decay))
            self.ladder = RungLadder(ctx, self.spec.halving, plan)

    # -- bookkeeping ------------------------------------------------------------------------------

    @property
    def done(self) -> int:
        return self.endings.done

    @property
    def outstanding(self) -> int:
        return len(self._held())

    @property
    def rung0_steps(self) -> int:
        """Steps a sampled trial trains: [proxy] steps, or rung 0's under successive halving."""
        return self.spec.proxy.steps if self.spec.halving is None else self.spec.halving.min_steps

    def training_key(self, arch_hash: str, recipe_hash: str, seed: int) -> str:
        """What makes two trainings the same (eval dtype is not part of it: weights are shared)."""
        s = self.spec
        budget: int | JSONDict = s.proxy.steps if s.halving is None else dataclasses.asdict(s.halving)
        return json.dumps([arch_hash, recipe_hash, budget, seed, s.data.train, s.data.val_source, list(s.data.qps), self.ctx.kind])

    def _key(self, p: PendingTrial) -> str:
        return self.training_key(p.arch.arch_hash, p.recipe.hash, p.seed)

    def load_history(self) -> None:
        """Count the trials already done and remember trained ones (a resumed run copies, not retrains)."""
        done = 0
        for t in self.optuna_study.get_trials(deepcopy=False):
            a = t.user_attrs
            if counts_against_budget(state=t.state.name, attrs=a):
                done += 1
            if is_front_candidate(state=t.state.name, attrs=a, values=t.values) and t.values is not None:
                self.ctx.log.note_best(t.values[0])
            if t.state.name == "COMPLETE" and a.get(Key.STATUS) == TrialStatus.OK and a.get(Key.ARCH_HASH):
                key = self.training_key(a[Key.ARCH_HASH], a.get(Key.RECIPE_HASH, self.recipe.hash), int(a.get(Key.SEED, self.spec.seed)))
                self.trained.setdefault(key, t.number)
        self.endings.done = done
        self.ctx.log.open_bar(done=done, total=self.spec.budget.trials)
        if done:
            self.ctx.log.print(f"resume: {done} trial(s) already done; budget {self.spec.budget.trials}")
        if self.ladder is not None:
            self.ladder.load()

    # -- the loop ---------------------------------------------------------------------------------

    def loop(self) -> None:
        """Ask, time, train and tell until the budget is done and nothing is outstanding.

        With `[budget] minutes` (--time-limit), a training starts only if it is expected to end
        within that much wall time of this invocation's loop, and nothing starts after it: running
        trainings finish and are recorded, trials asked but not started are re-queued for a resumed
        run, and the loop ends. A lost local Ray node re-queues every
        trial held without spending retries and raises `UserError` (see the module docstring)."""
        from nas.executor import NodeLostError

        try:
            self._loop()
        except NodeLostError as exc:
            requeued = self.abandon(str(exc), spend_retry=False)
            from search_space.errors import UserError

            raise UserError(
                f"{exc}; this is often memory pressure (fewer --workers or [proxy] threads help). {self.done} of "
                f"{self.spec.budget.trials} trials are done; the {requeued} trial(s) in progress were re-queued without "
                "spending a retry: rerun the same command to resume"
            ) from None

    def _loop(self) -> None:
        budget = self.spec.budget
        workers = budget.workers
        minutes = float(budget.minutes or 0.0)
        deadline = None if budget.minutes is None else time.perf_counter() + 60.0 * budget.minutes
        while self.done < budget.trials or self.outstanding or (self.ladder is not None and self.ladder.has_work()):
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                self._stop_at_time_limit(minutes, f"time limit: {minutes:g} min of wall time reached")
                return
            self._refused_for_time = False
            if self.latency_job is None and not self.latency_wanted and not self.ready and self._fits(self.durations.estimate(), left=left):
                room = budget.trials - self.done - self.outstanding
                if room > 0 and not self._prepare(min(room, LOOKAHEAD_PER_WORKER * workers)) and not self.outstanding:
                    # An ablation whose queue is empty although the budget is not used up: nothing
                    # is left to run (e.g. the journal was edited); stop rather than spin.
                    self.ctx.log.print(f"no queued (arm, seed) trials left; stopping with {self.done} of {budget.trials} done")
                    return
            if self.latency_job is None:
                drain = self._drain_left() if self.latency_wanted else None
                while len(self.inflight) < workers and self._submit_next(left=left, drain=drain):
                    pass
                if self.latency_wanted and not self.inflight:
                    self._submit_latency_batch()
            refs = list(self.inflight) + ([self.latency_job[0]] if self.latency_job else [])
            if not refs:
                if self._refused_for_time:
                    self._stop_at_time_limit(minutes, f"time limit: {minutes:g} min; {left or 0.0:.0f} s left, too few "
                                                      "for the next training to end in time")
                    return
                continue
            for ref in self.executor.wait(refs, timeout_s=_POLL_S):
                if self.latency_job is not None and ref is self.latency_job[0]:
                    self._finish_latency_job()
                else:
                    self._finish_training(ref)

    def _stop_at_time_limit(self, minutes: float, why: str) -> None:
        """Let running tasks finish and record them; re-queue what was asked but not started."""
        self.ctx.log.print(f"{why}; finishing the {len(self.inflight)} running training(s) and starting nothing new")
        while self.inflight or self.latency_job is not None:
            refs = list(self.inflight) + ([self.latency_job[0]] if self.latency_job else [])
            for ref in self.executor.wait(refs, timeout_s=_POLL_S):
                if self.latency_job is not None and ref is self.latency_job[0]:
                    self._finish_latency_job()
                else:
                    self._finish_training(ref)
        waiting = list(self.ready) + self.latency_wanted + [p for queue in self.followers.values() for p in queue]
        for p in waiting:
            self.endings.requeue(p, f"time limit of {minutes:g} min reached")
        self.ready.clear()
        self.latency_wanted = []
        self.followers.clear()
        self.ctx.log.print(f"time limit: stopped with {self.done} of {self.spec.budget.trials} trials done"
                           + (f" ({len(waiting)} asked trial(s) re-queued for a rerun)" if waiting else ""))

    def _submit_next(self, *, left: float | None, drain: float | None) -> bool:
        """Start one training: a promotion first (ASHA), else the next asked trial; False when none.

        Only a training expected to end in time starts (`nas.durations`): within `left` seconds of
        the time limit (None: no limit; an unknown duration is given the benefit of the doubt) and,
        while a latency batch waits for the running trainings (`drain`: seconds until the last of
        them should end), before that (an unknown duration never fills a drain)."""
        if self.ladder is not None:
            job = self.ladder.next_job(rung0_open_from=self._first_open_trial())
            if job is not None:
                expected = self.ladder.expected_seconds(job)
                if self._fits(expected, left=left, drain=drain):
                    job.started = time.perf_counter()
                    gpus = self.spec.proxy.gpus if self.ctx.kind == "cuda" else 0
                    ref = self.executor.submit_train(request=self.ladder.request(job), data_ref=self.ctx.data_ref,
                                                     num_cpus=self.spec.proxy.threads, num_gpus=gpus)
                    self._started_training(ref, job, expected, filling=drain is not None)
                    self.ladder.running += 1
                    return True
                self.ladder.put_back(job)
        if self.ready:
            expected = self.durations.estimate(float(self.ready[0].attrs[Key.MACS_G]))
            if self._fits(expected, left=left, drain=drain):
                self._submit_training(self.ready.popleft(), expected, filling=drain is not None)
                return True
        return False

    def _held(self) -> list[PendingTrial]:
        """Every trial this scheduler holds: asked, waiting for or in a latency batch, queued, training,
        or waiting for the same training in flight."""
        held = list(self.ready) + self.latency_wanted + (self.latency_job[1] if self.latency_job else [])
        held += [p for p in self.inflight.values() if isinstance(p, PendingTrial)]
        return held + [p for waiting in self.followers.values() for p in waiting]

    def _first_open_trial(self) -> int | None:
        """The lowest number of a trial still in progress (None: none is): promotions are decided on
        the rung-0 results below it only (`nas.promotion`), so they do not depend on which training
        of several ended first."""
        return min((p.trial.number for p in self._held()), default=None)

    def _fits(self, expected: float | None, *, left: float | None, drain: float | None = None) -> bool:
        """`nas.durations.ends_in_time`, noting when the time limit (not a drain) is what refused."""
        if ends_in_time(expected, left=left, drain=drain):
            return True
        self._refused_for_time |= not ends_in_time(expected, left=left)
        return False

    def _drain_left(self) -> float:
        return drain_seconds(self.expected_end.values(), now=time.perf_counter())

    def _started_training(self, ref: TaskHandle, job: PendingTrial | RungJob, expected: float | None, *, filling: bool) -> None:
        self.inflight[ref] = job
        self.expected_end[ref] = None if expected is None else time.perf_counter() + expected
        self._drain_fills += filling

    def _waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self.optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _ask(self) -> PendingTrial:
        """Ask one trial: a sampled architecture, or (ablations) the queued (arm, seed) pair's."""
        from search_space.ranges import suggest

        trial = self.optuna_study.ask()
        ab = self.spec.ablation
        if ab is None:
            arch = suggest(trial, self.spec.search)
            return PendingTrial(trial=trial, arch=arch, started=time.perf_counter(), recipe=self.recipe, seed=self.spec.seed)
        arm_name = trial.suggest_categorical("arm", [a.name for a in ab.arms])
        seed = int(trial.suggest_categorical("seed", list(ab.seeds)))
        arm = ab.arm(arm_name)
        recipe = self.ctx.recipes[ab.recipe_of(arm_name, self.spec.proxy.recipe)]
        for key, value in ((Key.ARM, arm_name), (Key.SEED, seed), (Key.EVAL_DTYPE, arm.eval_dtype)):
            trial.set_user_attr(key, value)
        return PendingTrial(trial=trial, arch=ab.arch_of(arm_name), started=time.perf_counter(), recipe=recipe,
                            seed=seed, eval_dtype=arm.eval_dtype)

    def _setup(self, p: PendingTrial) -> None:
        """Decide what `p` deploys, cost it, and record what the trial is."""
        from nas.deployment import deployed_arch, plain_equivalent
        from search_space.cost import cost

        deploy = deployed_arch(p.arch, p.recipe)
        if self.spec.ablation is not None:
            deploy = plain_equivalent(deploy)  # arms that deploy alike share a latency
        p.deploy_arch = deploy
        c = cost(deploy)
        setup = TrialSetup(
            arch=p.arch, deploy_arch=deploy, recipe_name=p.recipe.name, recipe_hash=p.recipe.hash,
            steps=self.rung0_steps, seed=p.seed, qps=tuple(self.spec.data.qps),
            data={"train": self.spec.data.train, "val": self.spec.data.val_source},
            macs=int(c.macs), params=int(c.params), device_kind=self.ctx.kind, latency_device=self.ctx.device_name,
            retries=int(p.trial.user_attrs.get(Key.RETRIES, 0)),
        )
        p.attrs = setup.to_attrs()
        for key, value in p.attrs.items():
            p.trial.set_user_attr(key, value)

    def _prepare(self, n: int) -> int:
        """Ask up to `n` trials, cost them, and get their latency (cache hit, or one exclusive batch).

        Returns how many were asked: an ablation asks only trials that are queued."""
        if self.spec.ablation is not None:
            n = min(n, self._waiting())
        misses: list[PendingTrial] = []
        for _ in range(n):
            p = self._ask()
            self._setup(p)
            hit = self.ctx.cache.get(p.deployed.arch_hash, self.ctx.protocol, self.ctx.device_name)
            if hit is not None:
                self._with_latency(p, hit)
            else:
                misses.append(p)
        if misses:
            # Timed once the running trainings have ended (`_submit_latency_batch`): timing is exclusive.
            self.latency_wanted = misses
            self._latency_asked = (time.perf_counter(), len(self.inflight))
            self._drain_fills = 0
        return n

    def _submit_latency_batch(self) -> None:
        """Time the wanted trials' networks, now that no training runs (unique archs only: duplicates
        in one batch share one measurement). The scheduler, not the executor, makes timing exclusive:
        the local executor would otherwise time beside a running training."""
        misses, self.latency_wanted = self.latency_wanted, []
        archs = list({p.deployed.arch_hash: p.deployed.to_dict() for p in misses}.values())
        ref = self.executor.submit_latency(
            slot=self.ctx.slot, archs=archs, device=self.ctx.kind, protocol=self.ctx.protocol.to_dict(),
            threads=self.spec.latency.cpu_threads,
        )
        self.latency_job = (ref, misses)

    # -- latency ----------------------------------------------------------------------------------

    def _finish_latency_job(self) -> None:
        from nas.executor import NodeLostError, TaskError
        from nas.latency import LatencyResult

        assert self.latency_job is not None
        ref, pending = self.latency_job
        self.latency_job = None
        try:
            results = self.executor.get(ref)
        except NodeLostError:
            self.latency_job = (ref, pending)  # still held: `loop` re-queues them with the rest
            raise
        except TaskError as exc:
            for p in pending:
                self.endings.crashed(p, f"latency task: {exc}")
            return
        asked, running = self._latency_asked
        self.ctx.log.print(f"latency batch: {len(results)} network(s) timed in {time.perf_counter() - asked:.1f} s "
                           f"(from the request: {running} running training(s) finished first; {self._drain_fills} "
                           "expected to end sooner ran meanwhile)")
        by_hash: dict[str, LatencyOutcome | LatencyResult] = {}
        for item in map(LatencyOutcome.from_dict, results):
            if item.latency is None:
                by_hash[item.arch_hash] = item
                continue
            res = LatencyResult.from_dict(item.latency)
            if res.device_name != self.ctx.device_name:  # never mix devices within one run
                by_hash[item.arch_hash] = LatencyOutcome(
                    arch_hash=item.arch_hash, reason=f"latency measured on {res.device_name!r}, not the run's {self.ctx.device_name!r}")
            else:
                self.ctx.cache.put(res)
                by_hash[item.arch_hash] = res
        for p in pending:
            entry = by_hash.get(p.deployed.arch_hash)
            if isinstance(entry, LatencyResult):
                self._with_latency(p, entry)
            else:
                self.endings.fail(p, (entry.reason if entry is not None else None) or "latency not measured")

    def _with_latency(self, p: PendingTrial, res: LatencyResult) -> None:
        """Record latency and constraints; then skip, copy a duplicate, or queue for training."""
        from nas.optuna_compat import set_constraints

        value = float(getattr(res, self.spec.objectives.latency))
        p.attrs.update({Key.LATENCY: latency_attrs(res), Key.LATENCY_MS: value})
        named: dict[str, float] = {}
        if self.ctx.budget_ms is not None:
            named["latency_ms"] = value - self.ctx.budget_ms
        if self.spec.constraints.macs_g is not None:
            named["macs_g"] = p.attrs[Key.MACS_G] - self.spec.constraints.macs_g
        feasible = all(v <= 0 for v in named.values())
        p.attrs[Key.FEASIBLE] = feasible
        for key in (Key.LATENCY, Key.LATENCY_MS, Key.FEASIBLE):
            p.trial.set_user_attr(key, p.attrs[key])
        set_constraints(p.trial, named)

        if not feasible and not self.spec.constraints.train_infeasible:
            broken = [f"{k} over by {v:.3g}" for k, v in named.items() if v > 0]
            self.endings.complete(p, gain=SKIPPED_GAIN_DB, status=TrialStatus.SKIPPED, extra={Key.SKIP_REASON: "; ".join(broken)})
            return
        key = self._key(p)
        original = self.trained.get(key)
        if original is not None:
            self._copy_duplicate(p, original)
        elif key in self.active:
            self.followers.setdefault(key, []).append(p)  # the sampler repeated an arch in flight
        else:
            self.active.add(key)
            self.ready.append(p)

    # -- duplicates -------------------------------------------------------------------------------

    def _release_followers(self, key: str) -> None:
        """The active trial of `key` ended: copy its result, or let the next one in line train."""
        self.active.discard(key)
        waiting = self.followers.pop(key, [])
        original = self.trained.get(key)
        if original is not None:
            for p in waiting:
                self._copy_duplicate(p, original)
        elif waiting:
            self.active.add(key)
            self.ready.append(waiting[0])
            if waiting[1:]:
                self.followers[key] = waiting[1:]

    def _copy_duplicate(self, p: PendingTrial, number: int) -> None:
        """Same training as trial `number`: copy its result, or re-evaluate its weights in p's dtype."""
        original = self.optuna_study.get_trials(deepcopy=False)[number]
        src = original.user_attrs
        if src.get(Key.EVAL_DTYPE, "float32") != p.eval_dtype:
            kept = {k: src[k] for k in (Key.TRAIN_SECONDS, Key.FINAL_LOSS, Key.TRAINED_ARCH) if k in src}
            self.endings.reevaluate(p, weights=src.get(Key.WEIGHTS), arch=src.get(Key.TRAINED_ARCH) or src[Key.ARCH],
                                    extra={Key.WEIGHTS_OF: number, **kept})
            return
        copied = (Key.PER_QP, Key.GAIN_Y, Key.DELTA_Y, Key.GAIN_LINEAR_Y, Key.DELTA_LINEAR_Y, Key.TEST, Key.EVAL_IMAGES,
                  Key.TRAIN_SECONDS, Key.WEIGHTS, Key.FINAL_LOSS)
        extra = {k: src[k] for k in copied if k in src}
        extra[Key.DUPLICATE_OF] = number
        self.endings.complete(p, gain=float(original.values[0]), status=TrialStatus.DUPLICATE, extra=extra)

    # -- training ---------------------------------------------------------------------------------

    def _submit_training(self, p: PendingTrial, expected: float | None, *, filling: bool) -> None:
        rung = None if self.ladder is None else RungRequest(rung_steps=self.rung0_steps, plan=self.ladder.plan)
        request = TrainRequest(arch=p.arch.to_dict(), recipe=p.recipe.to_dict(), steps=self.rung0_steps, seed=p.seed,
                               threads=self.spec.proxy.threads, device=self.ctx.kind, rung=rung)
        gpus = self.spec.proxy.gpus if self.ctx.kind == "cuda" else 0
        ref = self.executor.submit_train(request=request, data_ref=self.ctx.data_ref, num_cpus=self.spec.proxy.threads, num_gpus=gpus)
        self._started_training(ref, p, expected, filling=filling)

    def _finish_training(self, ref: TaskHandle) -> None:
        p = self.inflight.pop(ref)
        self.expected_end.pop(ref, None)
        if not isinstance(p, PendingTrial):
            self._finish_rung_job(p, ref)
            return
        try:
            self._handle_training(p, ref)
        finally:
            self._release_followers(self._key(p))

    def _handle_training(self, p: PendingTrial, ref: TaskHandle) -> None:
        from nas.executor import NodeLostError, TaskError

        try:
            wire = self.executor.get(ref)
        except NodeLostError:
            self.inflight[ref] = p  # still held: `loop` re-queues it with the rest
            raise
        except TaskError as exc:
            self.endings.crashed(p, f"training task: {exc}")
            return
        out = TrainOutcome.from_dict(wire)
        if out.ok:
            self.durations.note(seconds=(out.train_seconds or 0.0) + (out.eval_seconds or 0.0), macs_g=float(p.attrs[Key.MACS_G]))
        extra: JSONDict = {
            Key.TRAIN_SECONDS: out.train_seconds,
            Key.EVAL_SECONDS: out.eval_seconds,
            Key.FINAL_LOSS: out.final_loss,
            Key.FUSE_MAX_REL_ERR: out.fuse_max_rel_err,
            Key.ONLINE_REPARAM: out.online_reparam,
            Key.DEGRADATION: out.degradation,
            Key.TRAIN_HOST: out.host,
        }
        # Compared as configs, not dicts: a run started before ArchConfig version 2 stored dicts
        # without the version-2 keys, which are the same networks.
        if out.arch and ArchConfig.from_dict(out.arch) != p.arch:
            extra[Key.TRAINED_ARCH] = out.arch  # e.g. a recipe stage removed the biases
        if not out.ok or out.eval is None:
            self.endings.fail(p, out.reason or "training failed without a reason", extra=extra)
            return
        gain = out.eval.get(self.spec.objectives.gain)
        if gain is None or not math.isfinite(gain):
            self.endings.fail(p, f"{self.spec.objectives.gain} is {gain!r}", extra=extra)
            return
        extra.update(eval_attrs(out.eval, test=out.test_eval))
        if out.weights is not None:
            extra[Key.WEIGHTS] = self.endings.save_weights(p, out.weights)
        if p.eval_dtype != "float32":  # an eval-time arm that had to train its weights itself
            self.trained.setdefault(self._key(p), p.trial.number)
            extra[Key.WEIGHTS_OF] = p.trial.number
            self.endings.reevaluate(p, weights=extra.get(Key.WEIGHTS), arch=out.arch or p.attrs[Key.ARCH], extra=extra)
            return
        if self.ladder is not None and out.checkpoint is not None:
            extra.update({Key.RUNG: 0, Key.RUNG_STEPS: self.rung0_steps, Key.DECAY_STEPS: out.decay_steps,
                          Key.CHECKPOINT: self.endings.save_file(self.ladder.checkpoint_path(p.trial.number, 0), out.checkpoint)})
        self.endings.complete(p, gain=float(gain), status=TrialStatus.OK, extra=extra)
        self.trained.setdefault(self._key(p), p.trial.number)
        if self.ladder is not None:
            from nas.optuna_compat import frozen_trial

            self.ladder.note_rung0(frozen_trial(self.optuna_study, p.trial))

    def _finish_rung_job(self, job: RungJob, ref: TaskHandle) -> None:
        from nas.executor import NodeLostError, TaskError

        assert self.ladder is not None
        self.ladder.running -= 1
        try:
            out = self.executor.get(ref)
        except NodeLostError:
            self.ladder.running += 1
            self.inflight[ref] = job  # still held: `loop` stops, and a rerun promotes it again
            raise
        except TaskError as exc:
            self.ladder.finished(job, None, error=str(exc))
            return
        self.ladder.finished(job, TrainOutcome.from_dict(out))

    # -- Ctrl-C -----------------------------------------------------------------------------------

    def abandon(self, reason: str, *, spend_retry: bool = True) -> int:
        """On Ctrl-C or a lost node: fail and re-queue every trial this scheduler holds, so a rerun
        picks them up; returns how many. `spend_retry=False`: their retry counts stay as they were."""
        pending = self._held()
        for ref in list(self.inflight) + ([self.latency_job[0]] if self.latency_job else []):
            self.executor.cancel(ref)
        for p in pending:
            self.endings.requeue(p, reason, spend_retry=spend_retry)
        self.ready.clear()
        self.inflight.clear()
        self.expected_end.clear()
        self.followers.clear()
        self.latency_job = None
        self.latency_wanted = []
        return len(pending)
