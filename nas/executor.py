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
  driver adds the second half of the guarantee: while a latency batch is pending or running it
  submits no training at all. The batch therefore starts once the running trainings have drained,
  and nothing else runs on the device while it times. Batching (several trials asked ahead) keeps
  the number of such drains small.
- Data: the driver loads `ProxyData` once (clear errors for a bad folder before any task starts) and
  `ray.put`s it; tasks receive the object-store reference (numpy arrays are read zero-copy).

Local runs start a private Ray instance (`ray.init(num_cpus=...)`, no dashboard, quiet logging,
token auth disabled for this throw-away instance, temp dir under the system temp or
`RTSR_RAY_TEMP_DIR`); `address=` joins a running cluster instead and leaves its settings alone.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Executor", "RayExecutor", "TaskError", "latency_batch", "probe_device", "train_one"]

#: Set to a folder to put local Ray's session files there (default: a fresh folder in the system temp).
RAY_TEMP_ENV = "RTSR_RAY_TEMP_DIR"


class Executor(Protocol):
    """What the scheduler needs from a place that runs tasks: Ray (`RayExecutor`), or in-process.

    References returned by `submit_*` are opaque; `wait` returns those that finished, and `get`
    returns a task's value or raises `TaskError` (a `UserError` raised inside passes through). The
    tests' in-process implementation is `nas.testing.FakeExecutor`."""

    def start(self) -> Executor: ...
    def shutdown(self) -> None: ...
    def cluster_resources(self) -> dict[str, float]: ...
    def has_gpu(self) -> bool: ...
    def latency_slot(self, device_kind: str) -> Any: ...
    def probe(self, *, slot: Any, device: str, threads: int) -> str: ...
    def put(self, value: Any) -> Any: ...
    def submit_train(self, *, payload: dict[str, Any], data_ref: Any, num_cpus: int, num_gpus: float) -> Any: ...
    def submit_latency(self, *, slot: Any, archs: list[dict[str, Any]], device: str, protocol: dict[str, Any], threads: int) -> Any: ...
    def wait(self, refs: Sequence[Any], *, timeout_s: float) -> list[Any]: ...
    def get(self, ref: Any, *, timeout_s: float | None = None) -> Any: ...
    def cancel(self, ref: Any) -> None: ...


# --------------------------------------------------------------------------------------------------
# Task bodies (plain functions: importable, testable without Ray)
# --------------------------------------------------------------------------------------------------


def train_one(
    *,
    arch: dict[str, Any],
    recipe: dict[str, Any],
    data: Any,
    steps: int,
    seed: int,
    threads: int,
    device: str,
    rung: dict[str, Any] | None = None,
    checkpoint: bytes | None = None,
) -> dict[str, Any]:
    """Proxy-train one architecture; returns `TrialResult.to_dict()` plus the fused weights' bytes.

    With `rung` ({"rung_steps", "plan"}: successive halving) it trains warmup-stable-decay up to
    `rung_steps`, continuing `checkpoint` when given (`trainers.continuation.train_rung`), and also
    returns the new checkpoint's bytes and the decay branch's length."""
    import torch

    from search_space.arch import ArchConfig
    from trainers.recipe import Recipe

    if device.startswith("cuda") and torch.cuda.is_available():
        device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned
    started = time.perf_counter()
    extra: dict[str, Any] = {}
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
    return {
        "result": result.to_dict(),
        "weights": result.deploy_state_bytes(),
        "host": socket.gethostname(),
        "task_seconds": time.perf_counter() - started,
        **extra,
    }


def _set_threads(device: str, threads: int) -> None:
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)


def probe_device(*, device: str, threads: int) -> str:
    """The latency device label as the latency task will see it (e.g. 'cpu: EPYC (1 thread)')."""
    from nas.latency import device_name_for

    _set_threads(device, threads)
    return device_name_for(device)


def latency_batch(
    *, archs: Sequence[dict[str, Any]], device: str, protocol: dict[str, Any], threads: int
) -> list[dict[str, Any]]:
    """Time each architecture in turn; one entry per arch: {"ok": True, "latency": ...} or an error."""
    from nas.latency import LatencyProtocol, measure_latency
    from search_space.arch import ArchConfig

    _set_threads(device, threads)
    proto = LatencyProtocol.from_dict(protocol)
    out: list[dict[str, Any]] = []
    for arch in archs:
        config = ArchConfig.from_dict(arch)
        try:
            result = measure_latency(config, device=device, protocol=proto, name=config.summary())
            out.append({"ok": True, "arch_hash": config.arch_hash, "latency": result.to_dict()})
        except Exception as exc:  # noqa: BLE001 - one network failing to run must not lose the batch
            out.append({"ok": False, "arch_hash": config.arch_hash, "reason": f"latency: {type(exc).__name__}: {exc}"})
    return out


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------


class TaskError(RuntimeError):
    """A Ray task crashed, was killed, or raised: the message is the trial's failure reason."""


@dataclass
class _Slot:
    node_id: str
    resources: dict[str, float]


class RayExecutor:
    """A Ray runtime (local or joined) with the two kinds of tasks this project runs."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.quiet = quiet
        self.temp_dir: Path | None = None
        self._started_here = False
        self._train = None
        self._latency = None
        self._probe = None

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
        if self.address:
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                from search_space.errors import UserError

                raise UserError(
                    f"--address {self.address}: cannot join a Ray cluster there ({exc}); start one with "
                    f"`ray start --head --port PORT` or drop --address to use a local Ray"
                ) from None
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
            ray.init(
                num_cpus=self.num_cpus,
                _temp_dir=str(self.temp_dir),
                **kwargs,
            )
            self._started_here = True
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
            import shutil

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
        if device_kind == "cuda":
            resources = {"num_cpus": 1, "num_gpus": 1}
        else:
            resources = {"num_cpus": int(node["Resources"]["CPU"])}
        return _Slot(node_id=node["NodeID"], resources=resources)

    def _pinned(self, slot: _Slot) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return dict(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=slot.node_id, soft=False), **slot.resources)

    # -- submitting -----------------------------------------------------------------------------

    def put(self, value: Any) -> Any:
        import ray

        return ray.put(value)

    def submit_train(self, *, payload: dict[str, Any], data_ref: Any, num_cpus: int, num_gpus: float) -> Any:
        assert self._train is not None, "call start() first"
        return self._train.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(payload, data_ref)

    def submit_latency(self, *, slot: _Slot, archs: list[dict[str, Any]], device: str, protocol: dict[str, Any], threads: int) -> Any:
        assert self._latency is not None, "call start() first"
        return self._latency.options(**self._pinned(slot)).remote(archs, device, protocol, threads)

    def probe(self, *, slot: _Slot, device: str, threads: int, timeout_s: float = 300.0) -> str:

        assert self._probe is not None, "call start() first"
        ref = self._probe.options(**self._pinned(slot)).remote(device, threads)
        return self.get(ref, timeout_s=timeout_s)

    def wait(self, refs: Sequence[Any], *, timeout_s: float) -> list[Any]:
        import ray

        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout_s)
        return ready

    def get(self, ref: Any, *, timeout_s: float | None = None) -> Any:
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
            raise TaskError(_first_line(f"{type(exc).__name__}: {exc}")) from None

    def cancel(self, ref: Any) -> None:
        import ray

        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass


def _first_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _train_entry(payload: dict[str, Any], data: Any) -> dict[str, Any]:
    return train_one(data=data, **payload)


def _latency_entry(archs: list[dict[str, Any]], device: str, protocol: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    return latency_batch(archs=archs, device=device, protocol=protocol, threads=threads)


def _probe_entry(device: str, threads: int) -> str:
    return probe_device(device=device, threads=threads)
