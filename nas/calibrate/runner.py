"""Schedules a calibration's trainings on an executor (Ray, the local pool, or the tests' fake).

Every training is one `nas.executor.train_one` task with a `rung` ({"rung_steps", "plan"}) and, after
the first budget of an arch, the previous budget's checkpoint. A task is ready when the budget before
it is done (its record and checkpoint are on disk); a failed budget ends that arch's chain (its later
budgets are reported as not trained). Ready tasks go out longest remaining chain first (estimated
work: steps left x (deploy GMACs + 0.5)), so the long chains start early and the end of a run is not
one straggler. A crashed task (worker died) is retried up to the study's `[budget] max_retries`,
then recorded as crashed. Results are saved by `CalibrationStore.save` before they count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nas.calibrate.spec import budget_label
from nas.task import JSONDict, RungRequest, TaskStatus, TrainOutcome, TrainRequest

if TYPE_CHECKING:
    from tqdm import tqdm

    from nas.calibrate.spec import CalibrationSpec, Task
    from nas.calibrate.store import CalibrationStore
    from nas.executor import Executor, Opaque, TaskHandle
    from trainers.recipe import Recipe

#: A calibration record (`make_record`), stored as JSON: its keys are written out below.
Record = JSONDict

__all__ = ["CalibrationRunner", "blocked", "crashed_record", "load_records", "make_record", "previous_task", "tasks_left"]

_WAIT_S = 5.0
_OVERHEAD_GMACS = 0.5  # per-step cost that does not scale with MACs (data, optimizer), in GMAC equivalents


def _metrics(report: JSONDict | None) -> JSONDict | None:
    if report is None:
        return None
    per_qp = {qp: m.get("gain_y") for qp, m in (report.get("per_qp") or {}).items()}
    return {"gain_y": report.get("gain_y"), "delta_y": report.get("delta_y"), "gain_linear_y": report.get("gain_linear_y"),
            "per_qp_gain_y": per_qp}


def make_record(task: Task, out: TrainOutcome, *, spec: CalibrationSpec) -> Record:
    """The JSON record of one finished task: the study's gain on val (selection) and test, and the rest."""
    metric = spec.study.objectives.gain
    val, test = _metrics(out.eval), _metrics(out.test_eval)
    ok = out.status is TaskStatus.OK and val is not None
    return {
        "name": task.name, "seed": task.seed, "steps": task.steps, "continued_from_steps": task.after,
        "budget_index": spec.budgets.index(task.steps), "status": (TaskStatus.OK if ok else TaskStatus.FAILED).value,
        "reason": out.reason, "metric": metric, "gain": val.get(metric) if ok and val is not None else None,
        "test_gain": (test or {}).get(metric) if ok else None,
        "val": val, "test": test, "train_seconds": out.train_seconds, "eval_seconds": out.eval_seconds,
        "task_seconds": out.task_seconds, "host": out.host, "device": out.device,
        "decay_steps": out.decay_steps, "resumed_from": out.resumed_from, "final_loss": out.final_loss,
    }


def crashed_record(task: Task, *, spec: CalibrationSpec, reason: str) -> Record:
    return {"name": task.name, "seed": task.seed, "steps": task.steps, "continued_from_steps": task.after,
            "budget_index": spec.budgets.index(task.steps), "status": TaskStatus.CRASHED.value, "reason": reason,
            "metric": spec.study.objectives.gain, "gain": None, "test_gain": None}


def load_records(spec: CalibrationSpec, store: CalibrationStore) -> dict[str, Record]:
    """The saved record of every finished task, by `Task.key`."""
    return {t.key: record for t in spec.tasks() if (record := store.load(t)) is not None}


def previous_task(tasks: Sequence[Task], task: Task) -> Task | None:
    """The task whose checkpoint `task` continues (None when it starts from scratch)."""
    if task.after is None:
        return None
    return next(t for t in tasks if t.name == task.name and t.seed == task.seed and t.steps == task.after)


def blocked(tasks: Sequence[Task], records: dict[str, Record], task: Task) -> bool:
    """A task after a budget that failed or crashed: it can never run."""
    prev = previous_task(tasks, task)
    if prev is None:
        return False
    record = records.get(prev.key)
    return blocked(tasks, records, prev) or (record is not None and record["status"] != TaskStatus.OK)


def tasks_left(tasks: Sequence[Task], records: dict[str, Record]) -> int:
    """Tasks neither done nor blocked."""
    return sum(1 for t in tasks if t.key not in records and not blocked(tasks, records, t))


class CalibrationRunner:
    """Trains every task of a `CalibrationSpec` that its store does not hold yet (module docstring)."""

    def __init__(self, spec: CalibrationSpec, store: CalibrationStore, *, executor: Executor, data_ref: Opaque, recipe: Recipe,
                 workers: int, log: Callable[[str], None], device_name: str, progress: bool = False) -> None:
        self.spec, self.store, self.executor, self.data_ref = spec, store, executor, data_ref
        self.recipe_dict = recipe.to_dict()
        self.plan = spec.plan(recipe)
        self.workers, self.log, self.device_name, self.progress = workers, log, device_name, progress
        self.tasks = spec.tasks()
        self.records = load_records(spec, store)
        self.inflight: dict[TaskHandle, tuple[Task, int]] = {}  # ref -> (task, attempt)
        self.trained = 0  # tasks finished by this process
        self._bar: tqdm[None] | None = None

    # -- what to run ----------------------------------------------------------------------------

    def _previous(self, task: Task) -> Task | None:
        return previous_task(self.tasks, task)

    def blocked(self, task: Task) -> bool:
        return blocked(self.tasks, self.records, task)

    def _work(self, task: Task) -> float:
        """Estimated cost of the chain from `task` on (steps x GMAC equivalents)."""
        chain = [t for t in self.tasks if t.name == task.name and t.seed == task.seed and t.steps >= task.steps]
        steps = sum(t.steps - (t.after or 0) + self.plan.decay_steps(t.steps) for t in chain)
        return steps * (self.spec.arch(task.name).macs / 1e9 + _OVERHEAD_GMACS)

    def ready(self) -> list[Task]:
        """Tasks that may start now, most remaining work first."""
        running = {t.key for t, _ in self.inflight.values()}
        out = []
        for t in self.tasks:
            if t.key in self.records or t.key in running or self.blocked(t):
                continue
            prev = self._previous(t)
            if prev is None or (self.records.get(prev.key, {}).get("status") == TaskStatus.OK and self.store.checkpoint_path(prev).exists()):
                out.append(t)
        return sorted(out, key=lambda t: (-self._work(t), self.tasks.index(t)))

    def remaining(self) -> int:
        return tasks_left(self.tasks, self.records)

    # -- running --------------------------------------------------------------------------------

    def request(self, task: Task) -> TrainRequest:
        prev = self._previous(task)
        plan = {"warmup_steps": self.plan.warmup_steps, "horizon": self.plan.horizon, "decay": self.plan.decay}
        return TrainRequest(arch=self.spec.arch(task.name).arch.to_dict(), recipe=self.recipe_dict, steps=task.steps,
                            seed=task.seed, threads=self.spec.study.proxy.threads, device=self.spec.device_kind,
                            rung=RungRequest(rung_steps=task.steps, plan=plan),
                            checkpoint=None if prev is None else self.store.checkpoint(prev))

    def _submit(self, task: Task, attempt: int = 0) -> None:
        proxy = self.spec.study.proxy
        gpus = proxy.gpus if self.spec.device_kind == "cuda" else 0
        ref = self.executor.submit_train(request=self.request(task), data_ref=self.data_ref, num_cpus=proxy.threads, num_gpus=gpus)
        self.inflight[ref] = (task, attempt)

    def run(self) -> int:
        """Train until nothing is left; returns how many tasks this call trained."""
        total = len(self.tasks)
        self._open_bar(done=len(self.records), total=total)
        try:
            while True:
                for task in self.ready()[: max(0, self.workers - len(self.inflight))]:
                    self._submit(task)
                if not self.inflight:
                    break
                for ref in self.executor.wait(list(self.inflight), timeout_s=_WAIT_S):
                    self._finish(ref)
        finally:
            if self._bar is not None:
                self._bar.close()
        return self.trained

    def _finish(self, ref: TaskHandle) -> None:
        from nas.executor import TaskError

        task, attempt = self.inflight.pop(ref)
        try:
            out = self.executor.get(ref)
        except TaskError as exc:
            retries = self.spec.study.budget.max_retries
            if attempt < retries:
                self.log(f"{task.key}: crashed ({exc}); retry {attempt + 1}/{retries}")
                self._submit(task, attempt + 1)
                return
            record, checkpoint = crashed_record(task, spec=self.spec, reason=f"training task crashed: {exc}"), None
        else:
            outcome = TrainOutcome.from_dict(out)
            record, checkpoint = make_record(task, outcome, spec=self.spec), outcome.checkpoint
        self.store.save(task, record, checkpoint if record["status"] == TaskStatus.OK else None)
        self.records[task.key] = record
        self.trained += 1
        self._report(task, record)

    def _report(self, task: Task, record: Record) -> None:
        label = budget_label(self.spec, record["budget_index"])
        head = f"[{len(self.records)}/{len(self.tasks)}] {task.name} {label}, seed {task.seed}"
        if record["status"] != TaskStatus.OK:
            self.log(f"{head}: {record['status']} ({record['reason']})")
        else:
            test = "n/a" if record["test_gain"] is None else f"{record['test_gain']:+.3f} dB"
            self.log(f"{head}: val {record['metric']} {record['gain']:+.3f} dB, test {test}; "
                     f"{record.get('train_seconds') or 0:.0f} s training on {self.device_name}")
        if self._bar is not None:
            self._bar.update(1)

    def _open_bar(self, *, done: int, total: int) -> None:
        if not self.progress:
            return
        import sys

        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=done, desc="trainings", unit="task", file=sys.stderr, dynamic_ncols=True)

