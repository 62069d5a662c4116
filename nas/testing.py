"""An in-process `Executor` for tests: scripted results and crashes, no Ray, no training.

Shipped with the package (like `optuna.testing`) so that every test of the driver, the scheduler
and the reports uses one fake with the real executor's contract instead of a private copy each.
Each task runs when it is submitted; `wait` returns the oldest reference, `get` its value or the
`TaskError` a scripted crash produced.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from nas.executor import Executor, TaskError
from nas.task import JSONDict, LatencyOutcome, TaskStatus, TrainRequest

__all__ = ["FAKE_DEVICE", "FAKE_LINEAR_OFFSET_DB", "FAKE_TEST_OFFSET_DB", "FakeExecutor", "fake_checkpoint", "fake_training_output"]

FAKE_DEVICE = "cpu: fake CPU (1 thread)"


#: A fake evaluation's linear baseline is this many dB above Lanczos, and its test split this many
#: dB below val, at every QP (tests check that these shifts reach the records unchanged).
FAKE_LINEAR_OFFSET_DB = 0.125
FAKE_TEST_OFFSET_DB = 0.25


def _fake_report(gain: float, qps: Sequence[int]) -> JSONDict:
    lin = gain - FAKE_LINEAR_OFFSET_DB
    per_qp = {str(q): {"qp": q, "psnr_y": 30 + gain, "psnr_rgb": 29.0, "ssim_y": 0.9, "lanczos_psnr_y": 30.0,
                       "lanczos_psnr_rgb": 29.0, "lanczos_ssim_y": 0.9, "gain_y": gain,
                       "linear_psnr_y": 30.0 + FAKE_LINEAR_OFFSET_DB, "gain_linear_y": lin} for q in qps}
    return {"per_qp": per_qp, "gain_y": gain, "delta_y": gain, "gain_linear_y": lin, "delta_linear_y": lin,
            "images": 1, "dtype": "float32"}


def fake_checkpoint(payload: JSONDict) -> bytes:
    """The checkpoint a fake rung training returns: names the steps, the seed and what it continued."""
    resumed = payload.get("checkpoint")
    return json.dumps({"steps": payload["rung"]["rung_steps"], "seed": payload["seed"],
                       "continued": None if resumed is None else resumed.decode()}).encode()


def fake_training_output(payload: JSONDict, gain: float, *, qps: Sequence[int] = (31, 63), weights: bytes = b"w") -> JSONDict:
    """What `nas.executor.train_one` returns for a training that reached `gain` dB at every QP on val
    (and `gain - FAKE_TEST_OFFSET_DB` on test); a rung training (successive halving) also returns a
    `fake_checkpoint` and its decay length."""
    result = {"status": TaskStatus.OK.value, "reason": None, "arch": payload["arch"], "train_seconds": 0.1, "eval_seconds": 0.1,
              "final_loss": 0.01, "fuse_max_rel_err": 0.0, "degradation": "x",
              "eval": _fake_report(gain, qps), "test_eval": _fake_report(gain - FAKE_TEST_OFFSET_DB, qps)}
    out: JSONDict = {"result": result, "weights": weights, "host": "fake", "task_seconds": 0.1}
    if payload.get("rung"):
        out.update(checkpoint=fake_checkpoint(payload), decay_steps=max(1, payload["rung"]["rung_steps"] // 5), resumed_from=0)
    return out


class FakeExecutor:
    """Runs scripted 'tasks' in the calling process.

    - `train(payload)` returns what a training task would (see `fake_training_output`);
    - `latency_ms(arch_dict)` returns the timed runs of one architecture in ms;
    - `crash(payload)` (optional) says whether this training attempt dies (a `TaskError`).
    Every training payload is kept in `payloads`. Pass `executor_factory=fake.factory` to the driver.
    """

    def __init__(
        self,
        *,
        train: Callable[[JSONDict], JSONDict],
        latency_ms: Callable[[JSONDict], Sequence[float]],
        crash: Callable[[JSONDict], bool] | None = None,
        device_name: str = FAKE_DEVICE,
        resources: dict[str, float] | None = None,
    ) -> None:
        self.train = train
        self.latency_ms = latency_ms
        self.crash = crash
        self.device_name = device_name
        self.resources = dict(resources or {"CPU": 2.0})
        self.payloads: list[JSONDict] = []
        self._ids = itertools.count()
        self._results: dict[int, object] = {}

    def factory(self, *, address: str | None = None) -> Executor:
        return self

    def start(self) -> FakeExecutor:
        return self

    def shutdown(self) -> None:
        pass

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def has_gpu(self) -> bool:
        return self.resources.get("GPU", 0) >= 1

    def latency_slot(self, device_kind: str) -> str:
        return "slot"

    def probe(self, *, slot: object, device: str, threads: int) -> str:
        return self.device_name

    def put(self, value: object) -> object:
        return value

    def _ref(self, value: object) -> int:
        ref = next(self._ids)
        self._results[ref] = value
        return ref

    def submit_latency(self, *, slot: object, archs: list[JSONDict], device: str, protocol: JSONDict, threads: int) -> int:
        from nas.latency import LatencyProtocol, LatencyResult, summarize_times
        from search_space.arch import ArchConfig

        out = []
        for arch in archs:
            times = tuple(float(ms) for ms in self.latency_ms(arch))
            res = LatencyResult(stats=summarize_times(list(times)), times_ms=times, protocol=LatencyProtocol.from_dict(protocol),
                                device_name=self.device_name, arch_hash=ArchConfig.from_dict(arch).arch_hash)
            out.append(LatencyOutcome(arch_hash=str(res.arch_hash), latency=res.to_dict()).to_dict())
        return self._ref(out)

    def submit_train(self, *, request: TrainRequest, data_ref: object, num_cpus: int, num_gpus: float) -> int:
        """Runs the scripted `train` on the request's wire form (`TrainRequest.to_dict()`, kept in `payloads`)."""
        payload = request.to_dict()
        self.payloads.append(payload)
        if self.crash is not None and self.crash(payload):
            return self._ref(TaskError("WorkerCrashedError: the worker died unexpectedly"))
        return self._ref(self.train(payload))

    def wait(self, refs: Sequence[int], *, timeout_s: float) -> list[int]:
        return [refs[0]] if refs else []

    def get(self, ref: int, *, timeout_s: float | None = None) -> object:
        value = self._results.pop(ref)
        if isinstance(value, Exception):
            raise value
        return value

    def cancel(self, ref: int) -> None:
        self._results.pop(ref, None)
