"""nas.local_executor: the Ray-free process pool, with real worker processes and a real tiny training.

Each test that starts a pool of one worker ("spawn": a fresh interpreter that imports torch) is
slow-ish in wall time but light on CPU, and marked slow (the constructor's checks start nothing). Arbitrary tasks run through the private
`_submit`: its functions must be top-level in this module, which the workers import by name.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nas.executor import TaskError, train_one
from nas.task import TrainOutcome, TrainRequest
from nas.local_executor import LocalExecutor
from search_space.arch import ArchConfig
from search_space.errors import UserError
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.losses import LossSpec
from trainers.proxy import ProxyData
from trainers.recipe import Recipe, Stage

QPS = (31, 63)
ARCH = ArchConfig(channels=4, blocks=1, block="rep", down_factor=2, global_residual="nearest")
RECIPE = Recipe(name="tiny", stages=(Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, patch=12, batch=2, share=1.0),))
PAYLOAD = {"arch": ARCH.to_dict(), "recipe": RECIPE.to_dict(), "steps": 2, "seed": 5, "threads": 1, "device": "cpu"}


def _pairs(n: int, split: str, seed: int) -> PairedSet:
    """Smooth random 96x96 HR images; LR = the 4x4 box mean plus QP-dependent noise (no AVIF)."""
    rng = np.random.default_rng(seed)
    hrs = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (12, 12, 3)).astype(np.float64)
        hrs.append(np.clip(np.kron(coarse, np.ones((8, 8, 1))) + rng.normal(0, 6, (96, 96, 3)), 0, 255).astype(np.uint8))
    lr = {}
    for qp in QPS:
        boxes = [h.reshape(24, 4, 24, 4, 3).mean(axis=(1, 3)) for h in hrs]
        lr[qp] = tuple(np.clip(b + rng.normal(0, (qp - 30) / 8, b.shape), 0, 255).round().astype(np.uint8) for b in boxes)
    return PairedSet(names=tuple(f"{split}{i}" for i in range(n)), hr=tuple(hrs), lr=lr, spec=DegradeSpec(),
                     source="synthetic", split=split)


@pytest.fixture(scope="module")
def data() -> ProxyData:
    return ProxyData(train=_pairs(3, "train", 0), val=_pairs(1, "val", 1))


# -- tasks for `_submit` (top level, so that a worker can import them) --------------------------------


def _raise_user_error() -> None:
    raise UserError("bad study: fix it like this")


def _raise_value_error() -> None:
    raise ValueError("something broke\nsecond line")


def _die() -> None:
    os._exit(3)


def _worker_facts() -> dict:
    from nas import local_executor

    return {"pid": os.getpid(), "ray": "ray" in sys.modules, "data_keys": sorted(local_executor._WORKER_DATA)}


def _thread_env() -> dict:
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# -- tests --------------------------------------------------------------------------------------------


def _comparable(out: dict) -> dict:
    """A training's record without its timings (which differ from run to run)."""
    return {k: v for k, v in out["result"].items() if k not in ("train_seconds", "eval_seconds")}


@pytest.mark.slow  # worker processes that import torch
def test_training_through_the_pool_matches_in_process(data):
    here = train_one(data=data, **PAYLOAD)
    assert here["result"]["status"] == "ok", here["result"]["reason"]
    # The recipe's online re-parameterization (default on) is recorded with the result and survives the wire form.
    assert here["result"]["online_reparam"] is True and TrainOutcome.from_dict(here).online_reparam is True
    with LocalExecutor(workers=1) as ex:
        ref = ex.submit_train(request=TrainRequest.from_dict(PAYLOAD), data_ref=ex.put(data), num_cpus=1, num_gpus=0.5)
        assert ex.wait([ref], timeout_s=120) == [ref]
        there = ex.get(ref)
        facts = ex.get(ex._submit(_worker_facts))
    assert _comparable(there) == _comparable(here)
    a, b = (torch.load(io.BytesIO(o["weights"])) for o in (here, there))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert facts["pid"] != os.getpid() and not facts["ray"] and facts["data_keys"] == [0]


@pytest.mark.slow  # worker processes that import torch
def test_latency_batch_and_probe_run_in_a_worker():
    protocol = {"device_kind": "cpu", "dtype": "float32", "input_hw": [24, 24], "warmup": 1, "runs": 2, "time_budget_s": None}
    with LocalExecutor(workers=1) as ex:
        label = ex.probe(slot=ex.latency_slot("cpu"), device="cpu", threads=1)
        ref = ex.submit_latency(slot=ex.latency_slot("cpu"), archs=[ARCH.to_dict()], device="cpu", protocol=protocol, threads=1)
        out = ex.get(ref, timeout_s=120)
    assert label.startswith("cpu") and "1 thread" in label
    assert len(out) == 1 and out[0]["ok"], out
    assert out[0]["arch_hash"] == ARCH.arch_hash and len(out[0]["latency"]["times_ms"]) == 2


@pytest.mark.slow  # worker processes that import torch
def test_errors_inside_tasks(data):
    with LocalExecutor(workers=1) as ex:
        with pytest.raises(UserError, match="bad study: fix it like this"):
            ex.get(ex._submit(_raise_user_error))
        with pytest.raises(TaskError) as info:
            ex.get(ex._submit(_raise_value_error))
        assert str(info.value) == "ValueError: something broke second line"  # one line
        with pytest.raises(TaskError, match="no result within"):
            ex.get(ex._submit(_sleep, 5.0), timeout_s=0.1)


@pytest.mark.slow  # worker processes that import torch
def test_a_dead_worker_fails_its_tasks_and_the_next_pool_runs(data):
    with LocalExecutor(workers=1) as ex:
        data_ref = ex.put(data)
        first = ex.get(ex._submit(_sleep, 0.0))
        dying, queued = ex._submit(_die), ex._submit(_sleep, 0.0)
        with pytest.raises(TaskError, match=r"worker process died \(exit code 3\)"):
            ex.get(dying, timeout_s=60)
        with pytest.raises(TaskError, match="worker process died"):
            ex.get(queued, timeout_s=60)  # it waited in the broken pool: it fails too
        ref = ex.submit_train(request=TrainRequest.from_dict(PAYLOAD), data_ref=data_ref, num_cpus=1, num_gpus=0)
        assert ex.get(ref, timeout_s=120)["result"]["status"] == "ok"  # the fresh pool has the data
        assert ex.get(ex._submit(_sleep, 0.0)) != first  # a new process


@pytest.mark.slow  # worker processes that import torch
def test_shutdown_stops_idle_and_busy_workers():
    ex = LocalExecutor(workers=2)
    busy = ex._submit(_sleep, 600.0)
    idle = ex.get(ex._submit(_sleep, 0.0), timeout_s=60)
    assert ex.wait([busy], timeout_s=0.2) == []
    started = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []
    with pytest.raises(ProcessLookupError):
        os.kill(idle, 0)


@pytest.mark.slow  # worker processes that import torch
def test_put_after_the_pool_started_reaches_new_tasks():
    with LocalExecutor(workers=1) as ex:
        ex.put("a")
        assert ex.get(ex._submit(_worker_facts))["data_keys"] == [0]
        ex.put("b")
        assert ex.get(ex._submit(_worker_facts))["data_keys"] == [0, 1]


@pytest.mark.slow  # worker processes that import torch
def test_workers_share_the_cores_for_numeric_threads_and_user_settings_win(monkeypatch):
    # Each worker's OpenBLAS would otherwise start a thread per core and busy-wait on them: two
    # workers on two cores then crawl. A worker gets cores // workers threads, unless the user says.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    cores = len(os.sched_getaffinity(0))
    with LocalExecutor(workers=2) as ex:
        seen = ex.get(ex._submit(_thread_env), timeout_s=120)
    share = str(max(1, cores // 2))
    assert seen == {"OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share, "MKL_NUM_THREADS": "7"}
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "7"  # the driver's own is unchanged


def test_constructor_factory_and_resources():
    with pytest.raises(UserError, match="use --executor ray with --address"):
        LocalExecutor(workers=2, address="10.0.0.1:6379")
    with pytest.raises(UserError, match="--workers"):
        LocalExecutor(workers=0)
    ex = LocalExecutor.factory(workers=3)(address=None)
    assert isinstance(ex, LocalExecutor) and ex.start() is ex
    res = ex.cluster_resources()
    assert res == {"CPU": 3.0, "GPU": float(torch.cuda.device_count() if torch.cuda.is_available() else 0)}
    assert ex.has_gpu() == (res["GPU"] >= 1)
    if not ex.has_gpu():
        with pytest.raises(UserError, match="no CUDA GPU"):
            ex.latency_slot("cuda")
    ex.shutdown()  # never started a pool: nothing to stop


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_module_imports_without_ray():
    code = "import sys; sys.modules['ray'] = None; import nas.local_executor, nas.executor"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
