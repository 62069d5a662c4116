"""Running trials without Ray: a process pool on this one machine (`--executor local`).

Why: a bare GPU box may have torch and optuna but no Ray, and a one-machine search needs none of
Ray's scheduling. `LocalExecutor` runs the same task bodies as `nas.executor.RayExecutor`
(`train_one`, `latency_batch`, `probe_device`) in worker processes of a
`concurrent.futures.ProcessPoolExecutor` started with "spawn" (safe with CUDA and with the driver's
threads). Ray stays the default, and the way to scale out to several machines.

Limits:

- one machine; ``--address`` (join a cluster) is refused with a `UserError`;
- the data given to `put` is pickled once per *worker process* (not per task) and kept there, so
  memory holds ``workers + 1`` copies of it, where Ray shares one read-only copy;
- no resource accounting: ``num_cpus`` / ``num_gpus`` of a training are not enforced. Every worker
  may use the one GPU (``cuda`` is device 0 in each), and the pool size (``workers``) is what bounds
  how many trainings share it. Latency batches get the machine to themselves because the scheduler
  submits no training while one is pending, as it does with Ray;
- numeric libraries in a worker get ``cpus // workers`` threads (``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, unless the user set them), as Ray gives its tasks
  ``OMP_NUM_THREADS = num_cpus``. Without it each worker's OpenBLAS starts one thread per core and
  busy-waits for them; with two workers on two cores a Lanczos baseline that takes a second alone
  took over a minute (seen in the test suite);
- a running task cannot be cancelled on its own (`cancel` only drops tasks that have not started);
  `shutdown` kills the workers. Workers ignore Ctrl-C (the driver handles it, then shuts down) and
  exit by themselves if the driver is killed outright, so no process outlives a run.

A worker that dies (a segfault, the out-of-memory killer) breaks the whole pool: every task of it
that had not finished comes back as a `TaskError` ("worker process died ..."), and the next submit
starts a fresh pool, so the run goes on and the scheduler re-queues the crashed trials.

The driver builds one with `LocalExecutor.factory(workers=N)` (a callable taking ``address=``,
like `RayExecutor`). Under "spawn" each worker re-imports a driver *script* as ``__mp_main__``, so a
script must keep its work under ``if __name__ == "__main__":``; ``python -m nas.run`` and the console
script are safe (multiprocessing never re-runs a package's ``__main__.py``).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.executor import TaskError, _first_line, latency_batch, probe_device, train_one
from nas.task import JSONDict, TrainRequest
from search_space.errors import UserError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["LocalExecutor"]

#: Seconds between terminate (SIGTERM) and kill (SIGKILL) of a worker at shutdown.
_TERMINATE_GRACE_S = 3.0
#: Seconds to wait for a dead pool's exit codes, to say how its worker died.
_EXIT_CODE_WAIT_S = 2.0
#: Seconds between a worker's checks that the driver is still alive.
_ORPHAN_POLL_S = 2.0
#: Thread-count variables of OpenMP, OpenBLAS and MKL, read once when a worker imports them.
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# --------------------------------------------------------------------------------------------------
# Worker side: the data `put` by the driver, received once per process by the pool's initializer.
# --------------------------------------------------------------------------------------------------

_WORKER_DATA: dict[int, object] = {}


def _init_worker(data: dict[int, object]) -> None:
    """Keep the data; leave Ctrl-C to the driver (whose `shutdown` stops us); die with the driver."""
    global _WORKER_DATA
    _WORKER_DATA = data
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="rtsr-orphan-watch", daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    # A driver killed outright (SIGKILL) cannot stop its workers; an idle worker would wait forever.
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_S)
    os._exit(1)


def _train_entry(data_key: int, payload: JSONDict) -> JSONDict:
    return train_one(data=_WORKER_DATA[data_key], **payload)  # type: ignore[arg-type]  # the ProxyData `put` by the driver


def _latency_entry(kwargs: JSONDict) -> list[JSONDict]:
    return latency_batch(**kwargs)


def _probe_entry(kwargs: JSONDict) -> str:
    return probe_device(**kwargs)


# --------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataRef:
    """What `LocalExecutor.put` returns: a key into the data every worker of the executor holds."""

    key: int


@dataclass(frozen=True)
class LocalSlot:
    """The latency slot: the one machine there is (a marker; exclusivity comes from the scheduler)."""

    device_kind: str


@dataclass(eq=False)
class _Pool:
    """One process pool and its worker processes (kept to kill them at shutdown and to name a death)."""

    executor: ProcessPoolExecutor
    processes: dict[int, BaseProcess] = field(default_factory=dict)


@dataclass(eq=False)
class TaskRef:
    """An opaque task reference (hashable by identity, as the scheduler keys its dicts by refs)."""

    future: Future[Any]
    pool: _Pool
    what: str


class LocalExecutor:
    """Runs training, latency and probe tasks in a process pool of ``workers`` processes on this machine.

    Build it for the driver with ``LocalExecutor.factory(workers=N)``; the pool starts at the first
    task. ``address`` exists only so that a ``--address`` meant for Ray gets a clear error."""

    def __init__(self, *, workers: int, address: str | None = None) -> None:
        if address is not None:
            raise UserError(f"--address {address} joins a Ray cluster; use --executor ray with --address "
                            "(--executor local runs on this machine only)")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UserError(f"the local executor needs at least 1 worker process, got workers={workers!r}; pass --workers N")
        self.workers = workers
        self._data: dict[int, object] = {}
        self._pool: _Pool | None = None
        self._pools: list[_Pool] = []  # every pool ever started (a replaced one may still be finishing)
        self._tasks: list[TaskRef] = []

    @classmethod
    def factory(cls, *, workers: int) -> Callable[..., LocalExecutor]:
        """A callable ``factory(address=...)`` for the driver's ``executor_factory``, with ``workers`` fixed."""
        return functools.partial(cls, workers=workers)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalExecutor:
        return self  # the pool starts lazily, once the data to hand the workers is known

    def __enter__(self) -> LocalExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _ensure_pool(self) -> _Pool:
        if self._pool is None:
            executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(dict(self._data),),
            )
            # The executor's own table of its processes (filled as they start); read only to kill
            # them at shutdown and to report how one died.
            processes = getattr(executor, "_processes", None)
            self._pool = _Pool(executor=executor, processes=processes if isinstance(processes, dict) else {})
            self._pools.append(self._pool)
        return self._pool

    def _retire_pool(self) -> None:
        """Start a new pool at the next submit; the old one finishes what it runs and then exits."""
        if self._pool is not None:
            self._pool.executor.shutdown(wait=False)
            self._pool = None

    def shutdown(self) -> None:
        """Cancel tasks that have not started and stop every worker process (killing busy ones)."""
        for task in self._tasks:
            task.future.cancel()
        if any(not t.future.done() for t in self._tasks):
            # Busy workers would finish their task first (a whole training): stop them now. The
            # pool then sees its workers gone and winds itself down.
            processes = [p for pool in self._pools for p in list(pool.processes.values())]
            for p in processes:
                p.terminate()
            deadline = time.monotonic() + _TERMINATE_GRACE_S
            for p in processes:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(timeout=1.0)
        for pool in self._pools:
            pool.executor.shutdown(wait=True, cancel_futures=True)  # idle workers exit on their own
        self._pools.clear()
        self._pool = None
        self._tasks.clear()

    # -- resources ------------------------------------------------------------------------------

    def cluster_resources(self) -> dict[str, float]:
        """{"CPU": worker processes, "GPU": CUDA devices of this machine (0 without CUDA)}."""
        return {"CPU": float(self.workers), "GPU": float(_cuda_device_count())}

    def has_gpu(self) -> bool:
        return _cuda_device_count() >= 1

    def latency_slot(self, device_kind: str) -> LocalSlot:
        if device_kind == "cuda" and not self.has_gpu():
            raise UserError("this machine has no CUDA GPU for latency timing; use --device cpu or run on a GPU machine")
        return LocalSlot(device_kind=device_kind)

    # -- submitting -----------------------------------------------------------------------------

    def put(self, value: object) -> DataRef:
        """Keep ``value`` for the tasks; each worker process receives it once, when it starts."""
        ref = DataRef(key=len(self._data))
        self._data[ref.key] = value
        if self._pool is not None:
            self._retire_pool()  # running workers lack the new value: later tasks go to a new pool
        return ref

    def _submit(self, fn: Callable[..., Any], *args: Any, what: str | None = None) -> TaskRef:
        """Run the top-level function ``fn(*args)`` in a worker (also how tests run arbitrary tasks)."""
        for attempt in (0, 1):
            pool = self._ensure_pool()
            try:
                with _worker_thread_env(self.workers):  # a submit is where the pool spawns its workers
                    future = pool.executor.submit(fn, *args)
            except BrokenProcessPool:
                if attempt:
                    raise
                self._pool = None  # a worker died since the last submit: start a fresh pool
                continue
            task = TaskRef(future=future, pool=pool, what=what or str(getattr(fn, "__name__", "task")))
            self._tasks = [t for t in self._tasks if not t.future.done()] + [task]
            return task
        raise AssertionError("unreachable")

    def submit_train(self, *, request: TrainRequest, data_ref: DataRef, num_cpus: int, num_gpus: float) -> TaskRef:
        """One training; ``num_gpus`` is ignored (every worker may use the GPU), ``num_cpus`` too
        (the request's ``threads`` sets the task's torch threads)."""
        if not isinstance(data_ref, DataRef) or data_ref.key not in self._data:
            raise TypeError(f"data_ref must come from this executor's put(), got {data_ref!r}")
        return self._submit(_train_entry, data_ref.key, request.to_dict(), what="training")

    def submit_latency(self, *, slot: LocalSlot, archs: list[JSONDict], device: str, protocol: JSONDict, threads: int) -> TaskRef:
        kwargs = dict(archs=archs, device=device, protocol=protocol, threads=threads)
        return self._submit(_latency_entry, kwargs, what="latency")

    def probe(self, *, slot: LocalSlot, device: str, threads: int, timeout_s: float = 300.0) -> str:
        """The latency device label as a worker sees it (the workers are where timing happens)."""
        return self.get(self._submit(_probe_entry, dict(device=device, threads=threads), what="probe"), timeout_s=timeout_s)

    # -- results --------------------------------------------------------------------------------

    def wait(self, refs: Sequence[TaskRef], *, timeout_s: float) -> list[TaskRef]:
        """The refs of ``refs`` that have finished (at least one unless ``timeout_s`` passed), in order."""
        if not refs:
            return []
        done, _ = wait_futures([r.future for r in refs], timeout=timeout_s, return_when=FIRST_COMPLETED)
        return [r for r in refs if r.future in done]

    def get(self, ref: TaskRef, *, timeout_s: float | None = None) -> Any:
        """The task's value; `UserError` raised inside passes through, anything else is a `TaskError`."""
        try:
            return ref.future.result(timeout=timeout_s)
        except UserError:
            raise
        except BrokenProcessPool:
            if ref.pool is self._pool:
                self._pool = None  # the next submit starts a fresh pool
            raise TaskError(f"worker process died ({_death_note(ref.pool)}) while running or waiting to run this {ref.what} task") from None
        except FutureTimeout:
            raise TaskError(f"{ref.what} task: no result within {timeout_s:g} s") from None
        except CancelledError:
            raise TaskError(f"{ref.what} task was cancelled") from None
        except Exception as exc:  # noqa: BLE001 - whatever a task raised is the trial's failure reason
            raise TaskError(_first_line(f"{type(exc).__name__}: {exc}")) from None

    def cancel(self, ref: TaskRef) -> None:
        """Best effort: a task that has not started is dropped; a running one runs on until `shutdown`."""
        ref.future.cancel()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _worker_thread_env(workers: int) -> Iterator[None]:
    """Environment for worker processes spawned inside this block: ``cpus // workers`` numeric threads each.

    Spawned workers read these variables when they first import numpy or torch; variables the user
    set are left alone. The driver's own environment is restored on exit."""
    threads = str(max(1, _available_cpus() // workers))
    added = [name for name in _THREAD_ENV_VARS if name not in os.environ]
    for name in added:
        os.environ[name] = threads
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _death_note(pool: _Pool) -> str:
    """How the pool's worker died, from the exit codes that the pool did not cause itself."""
    processes = list(pool.processes.values())
    # The pool fails its tasks as soon as a worker's pipe closes, which can be just before the dead
    # process is reaped; its exit code (and the terminated siblings') follow within moments.
    deadline = time.monotonic() + _EXIT_CODE_WAIT_S
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    codes = [p.exitcode for p in processes if p.exitcode not in (None, 0, -signal.SIGTERM)]
    if not codes:
        return "killed or crashed"
    code = codes[0]
    if code == -signal.SIGKILL:
        return "killed by SIGKILL, often the out-of-memory killer"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
