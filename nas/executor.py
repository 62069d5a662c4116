"""Running trials on Ray: proxy training as tasks, latency on an exclusive device slot.

Why plain Ray tasks (not Ray Tune): the Optuna study is the only state, one driver process does all
ask/tell, and each trial is two independent pieces of work with different resource needs.

- Training (`train_remote`): one Ray task per trial with `num_cpus = proxy threads` and, on cuda,
  `num_gpus = proxy gpus` (a share, e.g. 0.25: four trainings per GPU). Ray's own retries are off
  (`max_retries=0`): a crashed or killed task comes back to the driver as an error, which records
  it as a failed trial with its reason and re-queues it a bounded number of times itself, so every
  attempt is visible in the study.
- Latency (`latency_remote`): one task for a *batch* of architectures that claims the whole timing
  device: all CPUs of its node for cpu timings, one whole GPU (`num_gpus=1`, which Ray never shares
  with fractional tasks) for cuda timings. It is pinned to one node (`NodeAffinitySchedulingStrategy`,
  the driver's node when it has the resource) so that every number of a run comes from one device.
  Ray resources are logical and Ray may start smaller tasks ahead of a big pending one, so the
  scheduler adds the second half of the guarantee: it submits a batch only once no training of the
  run is in flight, and none while the batch runs, so nothing else runs on the device while it
  times (the local executor relies on this alone). While a batch waits for the running trainings
  to end, only a training expected to end before them may start (`nas.durations`). Batching
  (several trials asked ahead) keeps the number of such drains small.
- Data: the driver loads `ProxyData` once (clear errors for a bad folder before any task starts) and
  `ray.put`s it; tasks receive the object-store reference (numpy arrays are read zero-copy).

Local runs start a private Ray instance (`ray.init(num_cpus=...)`, no dashboard, quiet logging,
token auth disabled for this throw-away instance, temp dir under the system temp or
`RTSR_RAY_TEMP_DIR`); `address=` joins a running cluster instead and leaves its settings alone.
Which one, as Ray users expect (`resolve_ray_address`): `--address HOST:PORT`, else `RAY_ADDRESS`,
else local; `auto` is the cluster `ray start` recorded on this machine, `local` a private instance.
A cluster address is probed with a plain TCP connect first, so nothing listening is one clear
`UserError` in seconds instead of minutes inside Ray's retries.

Faults: a task whose worker process died (a segfault, the OOM killer) leaves its Ray logs in the
session folder that `shutdown` deletes, so with `log_dir` they are copied to
`<log_dir>/<time>-pid<pid>/` first and the `TaskError` names that copy (each task notes its worker
in `<session logs>/rtsr-tasks/` while it runs). A dead *local* node fails every task at once; that is
a `NodeLostError`, which the scheduler treats as "stop and re-queue", not as a crash per trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nas.ray_address import resolve_ray_address
from nas.task import JSONDict, LatencyOutcome, TrainOutcome, TrainRequest

if TYPE_CHECKING:
    from ray import ObjectRef

    from nas.latency import LatencyResult
    from trainers.proxy import ProxyData, TrialResult

__all__ = ["Executor", "NodeLostError", "Opaque", "TaskHandle", "RayExecutor", "TaskError", "latency_batch", "probe_device", "resolve_ray_address",
           "train_one"]

#: Set to a folder to put local Ray's session files there (default: a fresh folder in the system temp).
RAY_TEMP_ENV = "RTSR_RAY_TEMP_DIR"
#: Subfolder of a node's Ray logs where each running task notes its worker (see `_noting_worker`).
_TASK_NOTES = "rtsr-tasks"


#: An opaque reference to a submitted task (`ray.ObjectRef`, `nas.local_executor.TaskRef`, the fake's
#: int): hashable, only ever handed back to the executor that made it.
TaskHandle = Any
#: An opaque latency slot (`_Slot` here, `LocalSlot`, the fake's marker) or data reference (`put`).
Opaque = Any


class Executor(Protocol):
    """What the scheduler needs from a place that runs tasks: Ray (`RayExecutor`), a process pool
    (`nas.local_executor.LocalExecutor`), or in-process (`nas.testing.FakeExecutor`).

    References returned by `submit_*` are opaque (hashable: the scheduler keys its dicts by them);
    `wait` returns those that finished, and `get` returns a task's wire value (`TrainOutcome.to_dict()`,
    a list of `LatencyOutcome.to_dict()`, a probe's label) or raises `TaskError` (a `UserError`
    raised inside passes through). A latency slot and a data reference are opaque too."""

    def start(self) -> Executor: ...
    def shutdown(self) -> None: ...
    def cluster_resources(self) -> dict[str, float]: ...
    def has_gpu(self) -> bool: ...
    def latency_slot(self, device_kind: str) -> Opaque: ...
    def probe(self, *, slot: Opaque, device: str, threads: int) -> str: ...
    def put(self, value: object) -> Opaque: ...
    def submit_train(self, *, request: TrainRequest, data_ref: Opaque, num_cpus: int, num_gpus: float) -> TaskHandle: ...
    def submit_latency(self, *, slot: Opaque, archs: list[JSONDict], device: str, protocol: JSONDict, threads: int) -> TaskHandle: ...
    def wait(self, refs: Sequence[TaskHandle], *, timeout_s: float) -> list[TaskHandle]: ...
    def get(self, ref: TaskHandle, *, timeout_s: float | None = None) -> Opaque: ...
    def cancel(self, ref: TaskHandle) -> None: ...


# --------------------------------------------------------------------------------------------------
# Task bodies (plain functions: importable, testable without Ray)
# --------------------------------------------------------------------------------------------------


def train_one(
    *,
    arch: JSONDict,
    recipe: JSONDict,
    data: ProxyData,
    steps: int,
    seed: int,
    threads: int,
    device: str,
    rung: JSONDict | None = None,
    checkpoint: bytes | None = None,
) -> JSONDict:
    """Proxy-train one architecture: the fields of a `TrainRequest`; returns `TrainOutcome.to_dict()`.

    With `rung` ({"rung_steps", "plan"}: successive halving) it trains warmup-stable-decay up to
    `rung_steps`, continuing `checkpoint` when given (`trainers.continuation.train_rung`), and also
    returns the new checkpoint's bytes and the decay branch's length."""
    import torch

    from search_space.arch import ArchConfig
    from trainers.recipe import Recipe

    if device.startswith("cuda") and torch.cuda.is_available():
        device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned
    started = time.perf_counter()
    result: TrialResult
    extra: JSONDict = {}
    if rung is None:
        from trainers.proxy import proxy_train

        result = proxy_train(ArchConfig.from_dict(arch), Recipe.from_dict(recipe), data, steps=steps, seed=seed,
                             threads=threads, device=device)
    else:
        from trainers.continuation import WSDPlan, train_rung

        outcome = train_rung(ArchConfig.from_dict(arch), Recipe.from_dict(recipe), data, rung_steps=int(rung["rung_steps"]),
                             plan=WSDPlan(**rung["plan"]), seed=seed, threads=threads, device=device, checkpoint=checkpoint)
        result = outcome.result
        extra = {"checkpoint": outcome.checkpoint, "decay_steps": outcome.decay_steps, "resumed_from": outcome.resumed_from}
    return TrainOutcome.from_dict({
        "result": result.to_dict(),
        "weights": result.deploy_state_bytes(),
        "host": socket.gethostname(),
        "task_seconds": time.perf_counter() - started,
        **extra,
    }).to_dict()


def _set_threads(device: str, threads: int) -> None:
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)


def probe_device(*, device: str, threads: int) -> str:
    """The latency device label as the latency task will see it (e.g. 'cpu: EPYC (1 thread)')."""
    from nas.latency import device_name_for

    _set_threads(device, threads)
    return device_name_for(device)


def latency_batch(*, archs: Sequence[JSONDict], device: str, protocol: JSONDict, threads: int) -> list[JSONDict]:
    """Time a batch of architectures; one `LatencyOutcome.to_dict()` per arch (a result or a reason).

    One `measure_latency_batch` call: on cpu the archs are timed interleaved (A B C A B C ...), so
    load drift during the batch spreads over all of them instead of biasing the later ones; on cuda
    one after another. One network failing to build or run must not lose the batch."""
    from nas.latency import LatencyProtocol, measure_latency_batch
    from search_space.arch import ArchConfig

    _set_threads(device, threads)
    proto = LatencyProtocol.from_dict(protocol)
    configs = [ArchConfig.from_dict(arch) for arch in archs]
    results: Sequence[LatencyResult | Exception]
    try:
        results = measure_latency_batch(
            configs, device=device, protocol=proto, names=[c.summary() for c in configs], errors="return"
        )
    except Exception as exc:  # noqa: BLE001 - a device problem fails every arch, each with the reason
        results = [exc] * len(configs)
    out: list[LatencyOutcome] = []
    for config, result in zip(configs, results):
        if isinstance(result, Exception):
            out.append(LatencyOutcome(arch_hash=config.arch_hash, reason=f"latency: {type(result).__name__}: {result}"))
        else:
            out.append(LatencyOutcome(arch_hash=config.arch_hash, latency=result.to_dict()))
    return [o.to_dict() for o in out]


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------


class TaskError(RuntimeError):
    """A Ray task crashed, was killed, or raised: the message is the trial's failure reason."""


class NodeLostError(TaskError):
    """The Ray node of this driver died (the raylet is gone, often memory pressure).

    Every task in flight fails at once with it and no new task can run, so it says nothing about the
    trial: the scheduler re-queues its trials without spending retries and stops the run."""


@dataclass
class _Slot:
    node_id: str
    resources: dict[str, float]


class RayExecutor:
    """A Ray runtime (local or joined) with the two kinds of tasks this project runs."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        quiet: bool = True,
        log_dir: str | os.PathLike[str] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """`address`: see `resolve_ray_address` (`num_cpus` applies to a local Ray only); `log_dir`:
        where crashed workers' logs are kept (the driver passes `<run dir>/worker_logs`); `say`:
        where the one line naming the joined cluster goes."""
        self.address = address
        self.num_cpus = num_cpus
        self.quiet = quiet
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.say = say
        self.joined: str | None = None  # the cluster address joined; None for a local Ray
        self.temp_dir: Path | None = None
        self._started_here = False
        # Ray's remote functions (typed per arity by Ray's stubs; set by `_register`)
        self._train: Any = None
        self._latency: Any = None
        self._probe: Any = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RayExecutor:
        import logging

        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = dict(
            include_dashboard=False,
            logging_level=logging.WARNING if self.quiet else logging.INFO,
            log_to_driver=not self.quiet,
            configure_logging=True,
        )
        if ray.is_initialized():
            return self._register()
        # Resolved and probed before anything is created: a bad address leaves nothing behind.
        target, source = resolve_ray_address(self.address)
        if target is not None:
            if self.say is not None:
                self.say(f"ray: joining the cluster at {target} ({source})")
            try:
                ray.init(address=target, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                from search_space.errors import UserError

                raise UserError(
                    f"{source}: cannot join the Ray cluster at {target} ({_first_line(str(exc), 200)}); check that "
                    f"it runs this Ray version, start one with `ray start --head --port PORT`, or "
                    f"{'drop --address' if self.address else 'unset RAY_ADDRESS'} to run locally"
                ) from None
            self.joined = target
        else:
            # A private, throw-away instance: no token to manage (Ray >= 2.5x enables token auth).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            env_dir = os.environ.get(RAY_TEMP_ENV)
            if env_dir:
                Path(env_dir).mkdir(parents=True, exist_ok=True)
                self.temp_dir = Path(env_dir)
            else:
                # Short path: Ray's unix socket paths must stay under ~107 characters.
                self.temp_dir = Path(tempfile.mkdtemp(prefix="rtsr-ray-"))
            self._started_here = True
            try:
                # address="local": a new instance even when RAY_ADDRESS says "local".
                ray.init(address="local", num_cpus=self.num_cpus, _temp_dir=str(self.temp_dir), **kwargs)
            except BaseException:
                self.shutdown()  # the driver only shuts down what started: remove our temp dir now
                raise
        return self._register()

    def _register(self) -> RayExecutor:
        import ray

        self._train = ray.remote(max_retries=0)(_train_entry)
        self._latency = ray.remote(max_retries=0)(_latency_entry)
        self._probe = ray.remote(max_retries=0)(_probe_entry)
        return self

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self._started_here and self.temp_dir is not None and not os.environ.get(RAY_TEMP_ENV):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- resources ------------------------------------------------------------------------------

    def cluster_resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def has_gpu(self) -> bool:
        return self.cluster_resources().get("GPU", 0) >= 1

    def latency_slot(self, device_kind: str) -> _Slot:
        """The node that times every network of this run, and the resources that make it exclusive."""
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        key = "GPU" if device_kind == "cuda" else "CPU"
        usable = [n for n in nodes if n.get("Resources", {}).get(key, 0) >= 1]
        if not usable:
            from search_space.errors import UserError

            raise UserError(
                f"the Ray cluster has no node with a {key} for latency timing; "
                + ("use --device cpu or add a GPU node" if key == "GPU" else "add a CPU node")
            )
        here = ray.get_runtime_context().get_node_id()
        mine = [n for n in usable if n["NodeID"] == here]
        node = mine[0] if mine else max(usable, key=lambda n: n["Resources"].get(key, 0))
        resources: dict[str, float]
        if device_kind == "cuda":
            resources = {"num_cpus": 1, "num_gpus": 1}
        else:
            resources = {"num_cpus": int(node["Resources"]["CPU"])}
        return _Slot(node_id=node["NodeID"], resources=resources)

    def _pinned(self, slot: _Slot) -> dict[str, object]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return dict(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=slot.node_id, soft=False), **slot.resources)

    # -- submitting -----------------------------------------------------------------------------

    def put(self, value: object) -> ObjectRef:
        import ray

        return ray.put(value)

    def submit_train(self, *, request: TrainRequest, data_ref: ObjectRef, num_cpus: int, num_gpus: float) -> ObjectRef:
        assert self._train is not None, "call start() first"
        return self._train.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(request.to_dict(), data_ref)

    def submit_latency(self, *, slot: _Slot, archs: list[JSONDict], device: str, protocol: JSONDict, threads: int) -> ObjectRef:
        assert self._latency is not None, "call start() first"
        return self._latency.options(**self._pinned(slot)).remote(archs, device, protocol, threads)

    def probe(self, *, slot: _Slot, device: str, threads: int, timeout_s: float = 300.0) -> str:

        assert self._probe is not None, "call start() first"
        ref = self._probe.options(**self._pinned(slot)).remote(device, threads)
        return self.get(ref, timeout_s=timeout_s)

    def wait(self, refs: Sequence[ObjectRef], *, timeout_s: float) -> list[ObjectRef]:
        import ray

        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout_s)
        return ready

    def get(self, ref: ObjectRef, *, timeout_s: float | None = None) -> Opaque:
        """The task's value; `UserError` raised inside passes through, anything else is a `TaskError`."""
        import ray

        from search_space.errors import UserError

        try:
            return ray.get(ref, timeout=timeout_s)
        except UserError:
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise TaskError(_first_line(f"{type(cause).__name__ if cause else 'task error'}: {cause or exc}")) from None
        except ray.exceptions.RayError as exc:
            reason = _first_line(f"{type(exc).__name__}: {exc}")
            if self._is_local_node_lost(exc):
                raise NodeLostError(f"the local Ray node died ({reason})") from None
            if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)) or "python-core-worker" in str(exc):
                reason = self._keep_worker_logs(ref, exc) or reason
            raise TaskError(reason) from None

    def _is_local_node_lost(self, exc: Exception) -> bool:
        """Whether `exc` says that this driver's node died (not one task's worker, not a remote node)."""
        import ray

        if isinstance(exc, ray.exceptions.LocalRayletDiedError):
            return True
        if not isinstance(exc, ray.exceptions.NodeDiedError):
            return False
        if self._started_here:  # a private Ray has one node: ours
            return True
        try:
            here = ray.get_runtime_context().get_node_id()
            if here in str(exc):
                return True
            return not any(n.get("NodeID") == here and n.get("Alive") for n in ray.nodes())
        except Exception:  # noqa: BLE001 - cannot even ask the cluster about our node: it is gone
            return True

    def _keep_worker_logs(self, ref: ObjectRef, exc: Exception) -> str | None:
        """Copy a dead worker's Ray logs to `log_dir` (shutdown deletes a local session); the reason naming them.

        None when there is nowhere to keep them or the task ran on another node (its logs stay there)."""
        logs = _session_logs_dir()
        if self.log_dir is None or logs is None:
            return None
        try:
            task_id = ref.task_id().hex()
            note = logs / _TASK_NOTES / f"{task_id}.json"
            info = json.loads(note.read_text(encoding="utf-8"))
            worker, pid = str(info["worker_id"]), int(info["pid"])
        except (AttributeError, OSError, ValueError, KeyError, TypeError):
            return None
        # Ray's log monitor moves a dead worker's files to logs/old/, possibly while we look.
        found = [f for folder in (logs, logs / "old")
                 for pattern in (f"python-core-worker-{worker}_*.log", f"worker-{worker}-*")
                 for f in sorted(folder.glob(pattern))]
        # Task ids repeat across runs (a fresh Ray numbers its jobs from 1): name the copy by time and pid.
        dest = self.log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-pid{pid}"
        kept: list[Path] = []
        for f in found:
            try:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / f.name)
                kept.append(dest / f.name)
            except OSError:
                continue
        note.unlink(missing_ok=True)
        if not kept:
            return None
        last = _last_line(next((f for f in kept if f.suffix == ".err"), None))
        return _first_line(f"{type(exc).__name__}: the worker (pid {pid}) died while running this task; its Ray logs are "
                           f"kept in {dest}" + (f" (last stderr line: {last})" if last else ""), limit=600)

    def cancel(self, ref: ObjectRef) -> None:
        import ray

        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass


def _first_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _last_line(path: Path | None, limit: int = 160) -> str:
    """The last line a worker wrote to a (small) log file, or '' (Ray's own ':job_id:'-style lines skipped)."""
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith(":")]
    except OSError:
        return ""
    return _first_line(lines[-1], limit) if lines else ""


def _session_logs_dir() -> Path | None:
    """The logs folder of this process's Ray node session (driver or worker); None when unknown.

    Ray has no public call for it; the private one is used and its absence only costs the copies."""
    try:
        import ray

        node = ray._private.worker._global_node or ray._private.worker.global_worker.node
        return Path(node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - another Ray layout, or not connected
        return None


@contextlib.contextmanager
def _noting_worker(entry: str) -> Iterator[None]:
    """While a task runs, note which worker runs it, so that the driver finds its logs if it dies.

    The note is removed when the task returns or raises; only a task whose process died leaves one."""
    note: Path | None = None
    try:
        import ray

        ctx = ray.get_runtime_context()
        logs = _session_logs_dir()
        if logs is not None:
            note = logs / _TASK_NOTES / f"{ctx.get_task_id()}.json"
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(json.dumps({"entry": entry, "worker_id": ctx.get_worker_id(), "pid": os.getpid(),
                                        "node_id": ctx.get_node_id()}), encoding="utf-8")
    except Exception:  # noqa: BLE001 - a missing note only costs the log copy, never the task
        note = None
    try:
        yield
    finally:
        if note is not None:
            note.unlink(missing_ok=True)


def _train_entry(payload: JSONDict, data: ProxyData) -> JSONDict:
    with _noting_worker("train"):
        return train_one(data=data, **payload)


def _latency_entry(archs: list[JSONDict], device: str, protocol: JSONDict, threads: int) -> list[JSONDict]:
    with _noting_worker("latency"):
        return latency_batch(archs=archs, device=device, protocol=protocol, threads=threads)


def _probe_entry(device: str, threads: int) -> str:
    with _noting_worker("probe"):
        return probe_device(device=device, threads=threads)
