"""Tests for nas.latency (statistics, rank correlation, the CPU protocol, the cache) and its CLI, rtsr.latency.

Everything runs on CPU with tiny inputs. The GPU path is exercised on a device machine by
`python -m nas.latency --preset all --device cuda` (see the report in benchmarks/).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

from nas import latency as L
from nas.latency.measure import _time_cuda
from rtsr import latency as cli
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.study import Study

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    """Time on one thread: on a shared, loaded machine, multi-threaded CPU runs wait on descheduled
    OpenMP workers (a 1x1 conv was measured at 24 ms), which would make timing comparisons flaky."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- statistics ------------------------------------------------------------------------------------


def test_summarize_times_hand_values() -> None:
    s = L.summarize_times([4.0, 1.0, 10.0, 3.0, 2.0])
    # sorted 1 2 3 4 10: mean 20/5; median the middle; p90 at position 0.9*4 = 3.6 -> 4 + 0.6*(10-4)
    assert s.n == 5
    assert s.mean_ms == pytest.approx(4.0)
    assert s.median_ms == pytest.approx(3.0)
    assert s.p90_ms == pytest.approx(7.6)
    assert s.min_ms == 1.0 and s.max_ms == 10.0
    # deviations -3 -2 -1 0 6 -> squares sum 50 -> sample variance 50/4
    assert s.std_ms == pytest.approx(math.sqrt(12.5))
    assert s.cv_percent == pytest.approx(100 * math.sqrt(12.5) / 4.0)


def test_summarize_times_even_count_and_single() -> None:
    s = L.summarize_times([4.0, 1.0, 3.0, 2.0])
    assert s.median_ms == pytest.approx(2.5)  # mean of the two middle values
    assert s.p90_ms == pytest.approx(3.7)  # position 2.7: 3 + 0.7*(4-3)
    one = L.summarize_times([2.5])
    assert (one.mean_ms, one.median_ms, one.p90_ms, one.std_ms, one.cv_percent) == (2.5, 2.5, 2.5, 0.0, 0.0)


def test_spread_hand_values() -> None:
    s = L.summarize_times([4.0, 1.0, 10.0, 3.0, 2.0])
    # sorted 1 2 3 4 10: p25 at position 1 -> 2, p75 at position 3 -> 4; IQR 2 ms, 2/3 of the median 3
    assert s.iqr_ms == pytest.approx(2.0) and s.iqr_percent == pytest.approx(200.0 / 3.0)
    even = L.summarize_times([4.0, 1.0, 3.0, 2.0])
    # sorted 1 2 3 4: p25 at 0.75 -> 1.75, p75 at 2.25 -> 3.25; IQR 1.5 ms, 60 % of the median 2.5
    assert even.iqr_ms == pytest.approx(1.5) and even.iqr_percent == pytest.approx(60.0)
    one = L.summarize_times([2.5])
    assert (one.iqr_ms, one.iqr_percent) == (0.0, 0.0)
    assert L.spread_of([4.0, 1.0, 10.0, 3.0, 2.0]) == {"iqr_ms": s.iqr_ms, "iqr_percent": s.iqr_percent}


def test_summarize_times_rejects_empty_and_bad() -> None:
    with pytest.raises(ValueError):
        L.summarize_times([])
    with pytest.raises(ValueError):
        L.summarize_times([1.0, float("nan")])


# -- Spearman ----------------------------------------------------------------------------------------


def test_average_ranks_ties() -> None:
    assert L.average_ranks([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    assert L.average_ranks([3, 3, 3]) == [2.0, 2.0, 2.0]
    assert L.average_ranks([0.5, -1.0, 7.0, 0.5]) == [2.5, 1.0, 4.0, 2.5]


def test_spearman_hand_values() -> None:
    assert L.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert L.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # No ties: 1 - 6*sum(d^2)/(n(n^2-1)) with d = (-1, 1, -1, 1, 0) -> 1 - 24/120
    assert L.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # Ties in y: ranks (1, 2, 3.5, 5, 3.5); centred x (-2,-1,0,1,2), y (-2,-1,.5,2,.5)
    # cov 8, var_x 10, var_y 9.5 -> 8/sqrt(95)
    assert L.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    # Monotone but non-linear data still has rank correlation 1.
    assert L.spearman([0.4, 0.6, 0.9, 7.5], [1.2, 2.1, 5.0, 15.6]) == pytest.approx(1.0)


def test_spearman_undefined_and_errors() -> None:
    assert math.isnan(L.spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError):
        L.spearman([1, 2], [1, 2, 3])
    assert math.isnan(L.spearman([1], [1])) and math.isnan(L.spearman([1, 2], [2, 1]))  # too few pairs (nas.ranks)


# -- protocol ----------------------------------------------------------------------------------------


def test_protocol_defaults_and_hash() -> None:
    gpu = L.LatencyProtocol.challenge()
    assert (gpu.device_kind, gpu.dtype, gpu.input_hw, gpu.warmup, gpu.runs) == ("cuda", "float16", (540, 960), 50, 100)
    assert gpu.time_budget_s is None and gpu.backend == "eager"
    cpu = L.LatencyProtocol.cpu()
    assert (cpu.device_kind, cpu.dtype, cpu.runs, cpu.time_budget_s) == ("cpu", "float32", 10, 20.0)
    assert L.LatencyProtocol.default_for("cuda:0") == gpu
    assert L.LatencyProtocol.default_for("cpu") == cpu

    h = gpu.protocol_hash
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert L.LatencyProtocol.challenge().protocol_hash == h  # deterministic
    assert L.LatencyProtocol.challenge(runs=99).protocol_hash != h
    assert L.LatencyProtocol.challenge(backend="channels_last").protocol_hash != h
    # 20 and 20.0 seconds are the same protocol
    assert L.LatencyProtocol.cpu(time_budget_s=20).protocol_hash == cpu.protocol_hash


def test_protocol_round_trip_and_validation() -> None:
    p = L.LatencyProtocol.cpu(input_hw=(16, 24), runs=3, backend="channels_last")
    again = L.LatencyProtocol.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and again.protocol_hash == p.protocol_hash
    with pytest.raises(UserError, match="float32"):
        L.LatencyProtocol(device_kind="cpu", dtype="float16")
    with pytest.raises(UserError, match="runs"):
        L.LatencyProtocol.cpu(runs=0)
    with pytest.raises(UserError, match="input_hw"):
        L.LatencyProtocol.cpu(input_hw=(0, 5))
    with pytest.raises(UserError, match="backend"):
        L.LatencyProtocol.cpu(backend="tensorrt")
    with pytest.raises(UserError, match=r"latency protocol: unknown key\(s\) .*valid keys: "):
        L.LatencyProtocol.from_dict({"runs": 3, "reps": 4})
    assert "540x960" in L.LatencyProtocol.challenge().describe()


# -- CPU measurement ---------------------------------------------------------------------------------


def _trivial() -> nn.Module:
    return nn.Conv2d(3, 3, 1)  # 9 MAC/pixel


def _heavy() -> nn.Module:
    # 3->64 then three 64->64 3x3 convs: ~1.1e5 MAC/pixel, over 10^4 times the trivial model
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1)]
    for _ in range(3):
        layers += [nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)]
    return nn.Sequential(*layers)


class _Sleepy(nn.Module):
    """Each forward takes at least `seconds`: an independent lower bound on the measured time."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.conv(x)


def test_cpu_protocol_sane_stats() -> None:
    proto = L.LatencyProtocol.cpu(input_hw=(32, 32), warmup=1, runs=5)
    r = L.measure_latency(_trivial(), device="cpu", protocol=proto, name="tiny", arch_hash="feedbeef0000")
    assert r.n_runs == 5 == len(r.times_ms) and r.stopped_by == "runs"
    assert all(t > 0 for t in r.times_ms)
    assert r.min_ms <= r.median_ms <= r.p90_ms <= r.stats.max_ms
    assert r.device_name.startswith("cpu: ") and r.device_name.endswith("(1 thread)")
    assert r.dtype == "float32" and r.device_kind == "cpu" and r.num_threads == torch.get_num_threads()
    assert r.params == 3 * 3 + 3 and r.arch_hash == "feedbeef0000" and r.name == "tiny"
    assert r.peak_memory_mib is None and r.cudnn_version is None and r.timestamp
    assert r.protocol == proto
    assert r.software == L.SoftwareStack.current("cpu") and r.torch_version == torch.__version__
    assert r.iqr_ms == pytest.approx(r.stats.iqr_ms) and r.iqr_ms >= 0


def test_slower_model_measures_slower() -> None:
    proto = L.LatencyProtocol.cpu(input_hw=(32, 32), warmup=1, runs=7)
    fast = L.measure_latency(_trivial(), device="cpu", protocol=proto)
    slow = L.measure_latency(_heavy(), device="cpu", protocol=proto)
    # >10^4 x the MACs; even the best heavy run must beat the typical trivial run by a wide margin
    assert slow.min_ms > 3 * fast.median_ms, (fast.times_ms, slow.times_ms)


def test_time_budget_stops_early_and_units_are_ms() -> None:
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8), warmup=1, runs=50, time_budget_s=0.25)
    t0 = time.perf_counter()
    r = L.measure_latency(_Sleepy(0.03), device="cpu", protocol=proto)
    wall = time.perf_counter() - t0
    assert r.stopped_by == "time_budget"
    assert 1 <= r.n_runs < 50
    assert r.min_ms >= 30.0 * 0.99  # each run sleeps 30 ms
    assert wall < 5.0  # the budget (0.25 s) bounds the run; generous for a loaded machine


def test_measure_does_not_modify_callers_model() -> None:
    model = _trivial()
    before = [p.detach().clone() for p in model.parameters()]
    L.measure_latency(model, device="cpu", protocol=L.LatencyProtocol.cpu(input_hw=(8, 8), warmup=0, runs=1))
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_channels_last_backend_runs_on_cpu() -> None:
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8), warmup=0, runs=2, backend="channels_last")
    r = L.measure_latency(_heavy(), device="cpu", protocol=proto)
    assert r.n_runs == 2 and r.protocol.backend == "channels_last"


def test_measure_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="protocol is for cuda"):
        L.measure_latency(_trivial(), device="cpu", protocol=L.LatencyProtocol.challenge())
    with pytest.raises(UserError, match="ArchConfig or a deployed"):
        L.measure_latency("casr", device="cpu")
    with pytest.raises(UserError, match="device"):
        L.measure_latency(_trivial(), device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no usable CUDA device"):
        L.measure_latency(_trivial(), device="cuda")


def test_result_round_trip() -> None:
    r = L.measure_latency(
        _trivial(), device="cpu", protocol=L.LatencyProtocol.cpu(input_hw=(8, 8), warmup=0, runs=3), arch_hash="a1"
    )
    d = json.loads(json.dumps(r.to_dict()))
    assert d["stats"]["n"] == 3 and d["protocol_hash"] == r.protocol.protocol_hash and d["dtype"] == "float32"
    assert L.LatencyResult.from_dict(d) == r
    with pytest.raises(UserError, match="not a latency record"):
        L.LatencyResult.from_dict({"stats": {}})


# -- CPU batches: interleaved timing ------------------------------------------------------------------


class _Shared:
    """A log or clock the timed models share: deep copies (measure copies each model) keep the one object."""

    def __deepcopy__(self, memo: dict) -> _Shared:
        return self


class _CallLog(_Shared, list):
    pass


class _FakeClock(_Shared):
    """Stands in for perf_counter: time moves only when a fake model runs. Each forward costs its
    model's base time times (1 + drift * forwards so far): load that keeps growing during the batch."""

    def __init__(self, drift: float = 0.0) -> None:
        self.now, self.forwards, self.drift = 0.0, 0, drift

    def __call__(self) -> float:
        return self.now

    def run(self, cost_s: float) -> None:
        self.now += cost_s * (1.0 + self.drift * self.forwards)
        self.forwards += 1


class _Recorder(nn.Module):
    """Logs its name on every forward and advances the fake clock (if any) by its cost; can fail."""

    def __init__(self, name: str, log: _CallLog, clock: _FakeClock | None = None, cost_s: float = 0.0,
                 fail_on: int | None = None) -> None:
        super().__init__()
        self.label, self.log, self.clock, self.cost_s, self.fail_on = name, log, clock, cost_s, fail_on
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.label)
        if self.fail_on is not None and self.log.count(self.label) == self.fail_on:
            raise RuntimeError(f"{self.label} broke")
        if self.clock is not None:
            self.clock.run(self.cost_s)
        return x


def test_cpu_batch_is_timed_interleaved() -> None:
    """Built first, each warmed up on its own, then timed round by round: A B C A B C A B C."""
    log = _CallLog()
    models = [_Recorder(n, log) for n in "ABC"]
    proto = L.LatencyProtocol.cpu(input_hw=(4, 4), warmup=2, runs=3, time_budget_s=None)
    done: list[int] = []
    results = L.measure_latency_batch(models, device="cpu", protocol=proto, names=["a", "b", "c"], on_done=done.append)
    assert log == ["A", "A", "B", "B", "C", "C"] + ["A", "B", "C"] * 3
    assert [r.name for r in results] == ["a", "b", "c"] and all(r.n_runs == 3 and r.stopped_by == "runs" for r in results)
    assert done == [0, 1, 2] and all(r.software == L.SoftwareStack.current("cpu") for r in results)


def test_interleaving_cancels_load_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two identical 10 ms networks while load grows 1 % per forward: interleaved, their medians
    differ by one forward's drift (0.1 ms), not by a whole measurement's (0.5 ms, sequential)."""
    from nas.latency import measure

    clock = _FakeClock(drift=0.01)
    monkeypatch.setattr(measure, "_clock", clock)
    log = _CallLog()
    models = [_Recorder(n, log, clock, cost_s=0.010) for n in "AB"]
    proto = L.LatencyProtocol.cpu(input_hw=(4, 4), warmup=0, runs=5, time_budget_s=None)
    a, b = L.measure_latency_batch(models, device="cpu", protocol=proto)
    # forward k costs 10 * (1 + 0.01 k) ms; A runs k = 0 2 4 6 8, B runs k = 1 3 5 7 9
    assert a.times_ms == pytest.approx([10.0, 10.2, 10.4, 10.6, 10.8])
    assert b.times_ms == pytest.approx([10.1, 10.3, 10.5, 10.7, 10.9])
    assert b.median_ms - a.median_ms == pytest.approx(0.1)
    # the spread: p25 10.2, p75 10.6 -> IQR 0.4 ms, 0.4 / 10.4 of A's median
    assert a.iqr_ms == pytest.approx(0.4) and a.iqr_percent == pytest.approx(100 * 0.4 / 10.4)


def test_interleaved_budget_is_per_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each network's budget counts its own forwards: the slow one stops on its budget, the fast
    one keeps all its runs and, once alone, goes on without it."""
    from nas.latency import measure

    clock = _FakeClock()
    monkeypatch.setattr(measure, "_clock", clock)
    log = _CallLog()
    fast, slow = _Recorder("F", log, clock, cost_s=0.010), _Recorder("S", log, clock, cost_s=0.100)
    proto = L.LatencyProtocol.cpu(input_hw=(4, 4), warmup=1, runs=6, time_budget_s=0.35)
    f, s = L.measure_latency_batch([fast, slow], device="cpu", protocol=proto)
    # S: 100 ms warm-up, then runs until 100 + 100 j >= 350 ms -> 3 runs; F: 10 + 10 j never reaches 350
    assert (f.n_runs, f.stopped_by, s.n_runs, s.stopped_by) == (6, "runs", 3, "time_budget")
    assert log == ["F", "S"] + ["F", "S"] * 3 + ["F"] * 3
    assert s.times_ms == pytest.approx([100.0] * 3)


def test_batch_failure_is_per_network() -> None:
    log = _CallLog()
    models = [_Recorder("A", log), _Recorder("B", log, fail_on=3), _Recorder("C", log)]
    proto = L.LatencyProtocol.cpu(input_hw=(4, 4), warmup=1, runs=4, time_budget_s=None)
    a, b, c = L.measure_latency_batch(models, device="cpu", protocol=proto, errors="return")
    assert isinstance(b, RuntimeError) and "B broke" in str(b)
    assert a.n_runs == 4 and c.n_runs == 4
    assert log == ["A", "B", "C", "A", "B", "C", "A", "B", "C"] + ["A", "C"] * 2  # B failed on its 2nd timed run
    log.clear()
    with pytest.raises(RuntimeError, match="B broke"):
        L.measure_latency_batch(models, device="cpu", protocol=proto, errors="raise")
    built = L.measure_latency_batch([_trivial(), "not a model"], device="cpu", protocol=proto, errors="return")
    assert isinstance(built[0], L.LatencyResult) and isinstance(built[1], UserError)


def test_cuda_batch_is_timed_one_network_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a simulated CUDA runtime: each network is built, timed (warm-up + runs) and released before
    the next is built, as the challenge script does; results carry the CUDA and cuDNN versions."""
    from nas.latency import measure

    events: list[str] = []
    real_prepare = measure._prepare
    monkeypatch.setattr(measure, "device_name_for", lambda device: "cuda: Fake GPU")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)

    def prepare(item: nn.Module, *, protocol: L.LatencyProtocol, dev: torch.device, name: str | None,
                arch_hash: str | None) -> measure._Prepared:
        events.append(f"build {name}")
        return real_prepare(item, protocol=protocol, dev=torch.device("cpu"), name=name, arch_hash=arch_hash)

    def time_cuda(model: nn.Module, x: torch.Tensor, protocol: L.LatencyProtocol, dev: torch.device) -> tuple[list[float], str, float]:
        events.append(f"time {len(events)}")
        return [1.0, 2.0, 4.0], "runs", 3.0

    monkeypatch.setattr(measure, "_prepare", prepare)
    monkeypatch.setattr(measure, "_input_for", lambda protocol, dev: torch.zeros(1, 3, 4, 4))
    monkeypatch.setattr(measure, "_time_cuda", time_cuda)
    results = L.measure_latency_batch([_trivial(), _trivial()], device="cuda", names=["a", "b"],
                                      protocol=L.LatencyProtocol.challenge(input_hw=(4, 4)))
    assert events == ["build a", "time 1", "build b", "time 3"]
    assert all(r.software == L.SoftwareStack(torch=str(torch.__version__), cuda="12.4", cudnn=90100) for r in results)
    assert results[0].cudnn_version == 90100 and results[0].peak_memory_mib == 3.0 and results[0].iqr_ms == pytest.approx(1.5)


def test_latency_batch_task_interleaves_archs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search's latency task (`nas.executor.latency_batch`) times its batch interleaved and
    returns the spread and the software stack with each record; one broken arch fails alone."""
    from nas.executor import latency_batch
    from nas.trial_record import latency_attrs
    from search_space import network
    from search_space.presets import get_preset

    archs = [get_preset(n).arch for n in ("casr", "urpnet", "lanczospp")]
    label = {a.arch_hash: n for a, n in zip(archs, "ABC")}
    log = _CallLog()
    monkeypatch.setattr(network, "build", lambda arch: arch)
    # C fails on its second forward (its first timed run); A and B go on alternating
    monkeypatch.setattr(network, "deploy", lambda arch: _Recorder(label[arch.arch_hash], log,
                                                                  fail_on=2 if label[arch.arch_hash] == "C" else None))
    proto = L.LatencyProtocol.cpu(input_hw=(12, 12), warmup=1, runs=3, time_budget_s=None)
    out = latency_batch(archs=[a.to_dict() for a in archs], device="cpu", protocol=proto.to_dict(), threads=1)
    assert log == ["A", "B", "C", "A", "B", "C"] + ["A", "B"] * 2
    assert [e["ok"] for e in out] == [True, True, False] and "C broke" in out[2]["reason"]
    assert [e["arch_hash"] for e in out] == [a.arch_hash for a in archs]
    rec = L.LatencyResult.from_dict(out[0]["latency"])
    assert rec.n_runs == 3 and rec.software == L.SoftwareStack.current("cpu") and rec.stats.iqr_ms >= 0
    attrs = latency_attrs(rec)
    assert attrs["iqr_ms"] == rec.iqr_ms and attrs["iqr_percent"] == rec.iqr_percent
    assert attrs["software"] == L.SoftwareStack.current("cpu").label()
    # a device problem fails every arch with its reason, as before
    bad = latency_batch(archs=[a.to_dict() for a in archs[:2]], device="cpu", protocol=L.LatencyProtocol.challenge().to_dict(),
                        threads=1)
    assert [e["ok"] for e in bad] == [False, False] and "protocol is for cuda" in bad[0]["reason"]


# -- resuming a run: the software stack in run.json ----------------------------------------------------


def _tiny_study(trials: int, data: dict[str, str], runtime: str = "torch") -> Study:
    """One possible arch timed in `runtime`; `data`: the `tiny_data` overrides."""
    from nas.study import Study

    return Study.from_dict({
        "name": "tiny",
        "search": {"down_factor": 2, "downsample": "unshuffle", "channels": 8, "blocks": 1, "block": "rep",
                   "body_skip": False, "activation": "relu", "reconstruction": "direct", "tail_kernel": 1,
                   "global_residual": "none", "bias": False, "end_block": "conv"},
        "proxy": {"steps": 20},
        "latency": {"cpu": {"input_hw": [48, 96], "runs": 1, "warmup": 0, "runtime": runtime}},
        "sampler": {"name": "random"},
        "budget": {"trials": trials, "workers": 1},
    }).with_overrides(**data)


def test_resume_on_another_software_stack_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_data: dict[str, str]
) -> None:
    """run.json records the stack; a resume under another torch is refused like another device,
    and a run.json from before the stack was recorded resumes with a note and records it."""
    from nas.driver import SearchDriver
    from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output

    fake = FakeExecutor(train=lambda payload: fake_training_output(payload, 0.1), latency_ms=lambda arch: [5.0],
                        device_name=FAKE_DEVICE)

    def run(trials: int) -> int:
        return SearchDriver(_tiny_study(trials, tiny_data), run_dir=tmp_path / "run", device="cpu", progress=False,
                            executor_factory=fake.factory).run()

    run_json = tmp_path / "run" / "run.json"
    assert run(1) == 0
    stack = L.SoftwareStack.current("cpu")
    assert json.loads(run_json.read_text())["latency_software"] == stack.to_dict()
    with monkeypatch.context() as m:
        m.setattr(torch, "__version__", "99.0.0+upgraded")
        with pytest.raises(UserError) as exc:
            run(2)
    msg = str(exc.value)
    assert stack.label() in msg and "torch 99.0.0+upgraded" in msg and "--fresh" in msg and "--out" in msg
    legacy = json.loads(run_json.read_text())
    del legacy["latency_software"]
    run_json.write_text(json.dumps(legacy))
    capsys.readouterr()
    assert run(2) == 0
    assert "does not record the software stack" in capsys.readouterr().out
    assert json.loads(run_json.read_text())["latency_software"] == stack.to_dict()


def test_a_run_timed_in_onnxruntime_records_its_version_and_refuses_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_data: dict[str, str]
) -> None:
    """ONNX Runtime's version is part of run.json's stack, so a resume after an ORT upgrade is refused."""
    import importlib.metadata

    from nas.driver import SearchDriver
    from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output

    fake = FakeExecutor(train=lambda payload: fake_training_output(payload, 0.1), latency_ms=lambda arch: [5.0],
                        device_name=FAKE_DEVICE)

    def run(trials: int) -> int:
        return SearchDriver(_tiny_study(trials, tiny_data, runtime="onnxruntime"), run_dir=tmp_path / "run", device="cpu",
                            progress=False, executor_factory=fake.factory).run()

    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0.0" if name == "onnxruntime" else real_version(name))
    assert run(1) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["latency_software"]["onnxruntime"] == "1.0.0"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.0.0" if name == "onnxruntime" else real_version(name))
    with pytest.raises(UserError, match=r"onnxruntime 1\.0\.0; this machine has .*onnxruntime 2\.0\.0"):
        run(2)


# -- cache -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FakeArch:
    arch_hash: str


class _CountingMeasure:
    """Stands in for measure_latency: returns a fixed result and counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arch, *, device, protocol, name=None) -> L.LatencyResult:  # noqa: ANN001
        self.calls += 1
        times = (1.0, 2.0, 3.0)
        return L.LatencyResult(
            stats=L.summarize_times(times),
            times_ms=times,
            protocol=protocol,
            device_name=L.device_name_for(device),
            arch_hash=arch.arch_hash,
            name=name,
            timestamp=f"call-{self.calls}",
        )


def test_cache_hit_on_second_call(tmp_path: Path) -> None:
    path = tmp_path / "run" / "latency.jsonl"
    cache = L.LatencyCache(path)
    stub = _CountingMeasure()
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8))
    first = cache.get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    second = cache.get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    assert stub.calls == 1 and second == first
    # a new cache object on the same file (another process, a resumed run) hits too
    third = L.LatencyCache(path).get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    assert stub.calls == 1 and third == first
    # a different arch or a different protocol is a miss
    cache.get_or_measure(_FakeArch("bbbb"), device="cpu", protocol=proto, measure=stub)
    cache.get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=dataclasses.replace(proto, runs=3), measure=stub)
    assert stub.calls == 3 and len(cache) == 3
    assert len(path.read_text().splitlines()) == 3  # one line per record


def test_cache_tolerates_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "latency.jsonl"
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8))
    stub = _CountingMeasure()
    L.LatencyCache(path).get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    full = path.read_text()
    with open(path, "a") as fh:  # a writer killed halfway through its record
        fh.write(full[: len(full) // 2])
    cache = L.LatencyCache(path)
    assert len(cache) == 1 and cache.skipped_lines == 1
    assert cache.get("aaaa", proto, L.device_name_for("cpu")) is not None
    cache.get_or_measure(_FakeArch("cccc"), device="cpu", protocol=proto, measure=stub)
    assert stub.calls == 2
    reread = L.LatencyCache(path)
    assert len(reread) == 2 and reread.skipped_lines == 1  # the new record started on its own line


def test_cache_reads_only_what_was_appended_and_rereads_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "latency.jsonl"
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8))
    stub = _CountingMeasure()
    cache = L.LatencyCache(path)
    cache.get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    # Overwrite the line already read, in place and at the same length: a cache that re-read the
    # whole file would now lose "aaaa"; one that reads only appended bytes keeps it.
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(b"x" * (size - 1))
    other = L.LatencyCache(tmp_path / "other.jsonl")
    other.get_or_measure(_FakeArch("bbbb"), device="cpu", protocol=proto, measure=stub)
    with open(path, "ab") as fh:  # another process appends a record
        fh.write((tmp_path / "other.jsonl").read_bytes())
    assert cache.get("aaaa", proto, L.device_name_for("cpu")) is not None
    assert cache.get("bbbb", proto, L.device_name_for("cpu")) is not None and len(cache) == 2
    # A file replaced under the same path (a new inode) is read from its start.
    os.replace(tmp_path / "other.jsonl", path)
    assert len(cache) == 1 and cache.get("aaaa", proto, L.device_name_for("cpu")) is None
    assert cache.get("bbbb", proto, L.device_name_for("cpu")) is not None and cache.skipped_lines == 0


def test_cache_rejects_unhashed_result_and_bare_module(tmp_path: Path) -> None:
    cache = L.LatencyCache(tmp_path / "c.jsonl")
    r = _CountingMeasure()(_FakeArch("x"), device="cpu", protocol=L.LatencyProtocol.cpu())
    with pytest.raises(UserError, match="arch_hash"):
        cache.put(dataclasses.replace(r, arch_hash=None))
    with pytest.raises(UserError, match="ArchConfig"):
        cache.get_or_measure(_trivial(), device="cpu")
    with pytest.raises(UserError, match="directory"):
        L.LatencyCache(tmp_path)


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--arch", "--device", "--runs", "--warmup", "--out"):
        assert flag in out


def test_cli_cuda_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--preset", "casr", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas.latency: error:") and "no usable CUDA device" in err and "--device cpu" in err
    assert "Traceback" not in err


def test_cli_needs_exactly_one_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--device", "cpu"])
    assert exc.value.code == 2


def test_cli_bad_arch_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--arch", str(tmp_path / "missing.toml"), "--device", "cpu"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["--arch", str(bad), "--device", "cpu"]) == 2
    assert "cannot parse" in capsys.readouterr().err
    assert cli.main(["--preset", "casr", "--device", "cpu", "--hw", "12by3"]) == 2
    assert "--hw" in capsys.readouterr().err


def test_cli_prog_for_a_dispatcher(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`rtsr latency` shows its own name in usage and errors; on its own it stays `python -m nas.latency`."""
    assert cli.build_parser().prog == "python -m nas.latency"
    assert cli.build_parser(prog="rtsr latency").format_usage().startswith("usage: rtsr latency ")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--preset", "casr", "--device", "cuda"], prog="rtsr latency") == 2
    assert capsys.readouterr().err.startswith("rtsr latency: error:")


def test_import_with_torch_alone(tmp_path: Path) -> None:
    """The GPU machine has torch but may lack optuna, ray, thop, pillow, tqdm: nas.latency and
    rtsr.latency must still import, and `python -m nas.latency` run (MACs column skipped, no
    progress bar), with hashes matching this process. nas.latency must not pull in the command layer."""
    blocked = ["optuna", "ray", "thop", "PIL", "pillow_avif", "tqdm", "pandas", "plotly", "scipy"]
    out_json = tmp_path / "out.json"
    code = textwrap.dedent(
        f"""
        import runpy
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError(f"{{name}} is blocked: this machine has torch alone")
                return None

        sys.meta_path.insert(0, Blocker())
        import torch
        torch.set_num_threads(1)
        import nas.latency as L
        assert not [m for m in sys.modules if m == "rtsr" or m.startswith("rtsr.")], "nas.latency imported rtsr"
        import rtsr.latency
        print("HASHES", L.LatencyProtocol.challenge().protocol_hash, L.LatencyProtocol.cpu().protocol_hash)
        sys.argv = ["nas.latency", "--preset", "casr", "--device", "cpu", "--hw", "24x24", "--runs", "2",
                    "--warmup", "0", "--out", {str(out_json)!r}]
        try:
            runpy.run_module("nas.latency", run_name="__main__", alter_sys=True)  # python -m nas.latency
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        else:
            raise AssertionError("python -m nas.latency must exit with main()'s status")
        blocked_loaded = [m for m in sys.modules if m.split(".")[0] in {blocked!r}]
        assert not blocked_loaded, blocked_loaded
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")
    hashes = next(line for line in out.stdout.splitlines() if line.startswith("HASHES")).split()[1:]
    assert hashes == [L.LatencyProtocol.challenge().protocol_hash, L.LatencyProtocol.cpu().protocol_hash]
    assert "MACs" not in out.stdout and "casr" in out.stdout  # no thop: the column is skipped
    data = json.loads(out_json.read_text())
    assert data["results"][0]["macs"] is None and data["results"][0]["latency"]["stats"]["n"] == 2
    assert data["command"].startswith("python -m nas.latency --preset casr")


#: Written by the code before nas/latency.py became a package and before records held their software
#: stack and spread; existing run directories hold these.
CPU_HASH = "d9013c5efd6a"
CACHE_LINE = (
    '{"arch_hash":"abc123","cudnn_version":null,"device_kind":"cuda","device_name":"cuda: X","dtype":"float16",'
    '"extra":{},"name":null,"num_threads":0,"params":null,"peak_memory_mib":null,"protocol":{"backend":"eager",'
    '"device_kind":"cuda","dtype":"float16","input_hw":[540,960],"runs":100,"time_budget_s":null,"version":1,'
    '"warmup":50},"protocol_description":"cuda, float16 weights and input, input 1x3x540x960 randn (HxW), '
    "contiguous (NCHW), eval + inference_mode, cudnn.benchmark=True, 50 warm-up runs, then up to 100 timed runs "
    '(CUDA events around each forward, synchronize after each run), no time budget; protocol v1, hash 00f373984bb0",'
    '"protocol_hash":"00f373984bb0","stats":{"cv_percent":50.91750772173155,"max_ms":3.25,"mean_ms":2.25,'
    '"median_ms":2.5,"min_ms":1.0,"n":3,"p90_ms":3.1,"std_ms":1.14564392373896},"stopped_by":"runs",'
    '"times_ms":[1.0,2.5,3.25],"timestamp":"2024-01-01T00:00:00+00:00","torch_version":""}\n'
)


#: The same record as written now: the keys above plus `software` and the spread in `stats`.
STACKED_CACHE_LINE = (
    '{"arch_hash":"abc123","cudnn_version":90100,"device_kind":"cuda","device_name":"cuda: X","dtype":"float16",'
    '"extra":{},"name":null,"num_threads":0,"params":null,"peak_memory_mib":null,"protocol":{"backend":"eager",'
    '"device_kind":"cuda","dtype":"float16","input_hw":[540,960],"runs":100,"time_budget_s":null,"version":1,'
    '"warmup":50},"protocol_description":"cuda, float16 weights and input, input 1x3x540x960 randn (HxW), '
    "contiguous (NCHW), eval + inference_mode, cudnn.benchmark=True, 50 warm-up runs, then up to 100 timed runs "
    '(CUDA events around each forward, synchronize after each run), no time budget; protocol v1, hash 00f373984bb0",'
    '"protocol_hash":"00f373984bb0","software":{"cuda":"12.4","cudnn":90100,"torch":"2.5.1+cu124"},'
    '"stats":{"cv_percent":50.91750772173155,"iqr_ms":1.125,"iqr_percent":45.0,"max_ms":3.25,"mean_ms":2.25,'
    '"median_ms":2.5,"min_ms":1.0,"n":3,"p90_ms":3.1,"std_ms":1.14564392373896},"stopped_by":"runs",'
    '"times_ms":[1.0,2.5,3.25],"timestamp":"2024-01-01T00:00:00+00:00","torch_version":"2.5.1+cu124"}\n'
)
H100_STACK = L.SoftwareStack(torch="2.5.1+cu124", cuda="12.4", cudnn=90100)


def test_stored_formats_unchanged(tmp_path: Path) -> None:
    """Protocol hashes and latency.jsonl lines key existing run directories: they must not drift
    (the software stack is beside the protocol, not in its hash), and lines only gain keys."""
    assert L.LatencyProtocol.challenge().protocol_hash == "00f373984bb0"
    assert L.LatencyProtocol.cpu().protocol_hash == CPU_HASH
    times = (1.0, 2.5, 3.25)
    result = L.LatencyResult(
        stats=L.summarize_times(times),
        times_ms=times,
        protocol=L.LatencyProtocol.challenge(),
        device_name="cuda: X",
        arch_hash="abc123",
        torch_version="2.5.1+cu124",
        cudnn_version=90100,
        timestamp="2024-01-01T00:00:00+00:00",
        software=H100_STACK,
    )
    L.LatencyCache(tmp_path / "latency.jsonl").put(result)
    assert (tmp_path / "latency.jsonl").read_text() == STACKED_CACHE_LINE
    # everything but the two additions is what the old code wrote
    old = json.loads(CACHE_LINE)
    new = json.loads(STACKED_CACHE_LINE)
    assert set(new) - set(old) == {"software"} and set(new["stats"]) - set(old["stats"]) == {"iqr_ms", "iqr_percent"}


def test_old_cache_lines_load_but_are_never_reused(tmp_path: Path) -> None:
    """A line from before the stack was stored: read without error (spread recomputed from its
    times), but no stack matches it, so the network is timed again and both lines stay."""
    path = tmp_path / "latency.jsonl"
    path.write_text(CACHE_LINE)
    cache = L.LatencyCache(path)
    assert len(cache) == 1 and cache.skipped_lines == 0
    proto = L.LatencyProtocol.challenge()
    for stack in (None, H100_STACK, L.SoftwareStack(torch=""), L.SoftwareStack.current("cuda")):
        assert cache.get("abc123", proto, "cuda: X", stack) is None
    (old,) = cache._entries.values()
    assert old.software is None and old.cache_key[3] == "unknown software stack"
    # sorted 1, 2.5, 3.25: p25 at position 0.5 -> 1.75, p75 at 1.5 -> 2.875; IQR 1.125, 45 % of the median 2.5
    assert old.iqr_ms == pytest.approx(1.125) and old.iqr_percent == pytest.approx(45.0)
    new = dataclasses.replace(old, software=H100_STACK, timestamp="now")
    cache.put(new)
    assert cache.get("abc123", proto, "cuda: X", H100_STACK) == new
    assert len(L.LatencyCache(path)) == 2 and len(path.read_text().splitlines()) == 2


def test_cache_key_includes_the_software_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a torch upgrade the cached number is not reused; going back to the old torch finds it again."""
    path = tmp_path / "latency.jsonl"
    stub = _CountingMeasure()
    proto = L.LatencyProtocol.cpu(input_hw=(8, 8))
    first = L.LatencyCache(path).get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    assert first.software == L.SoftwareStack.current("cpu") and first.software.torch == torch.__version__
    original = torch.__version__
    monkeypatch.setattr(torch, "__version__", "99.0.0+upgraded")
    assert L.SoftwareStack.current("cpu").key != first.software.key
    cache = L.LatencyCache(path)
    assert cache.get("aaaa", proto, L.device_name_for("cpu")) is None
    second = cache.get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub)
    assert stub.calls == 2 and second.software.torch == "99.0.0+upgraded"
    assert second.cache_key[:3] == first.cache_key[:3] and second.cache_key != first.cache_key
    # the CUDA runtime and cuDNN count too, for cuda timings
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    a = L.SoftwareStack.current("cuda")
    assert (a.cuda, a.cudnn) == ("12.4", 90100) and a.label() == "torch 99.0.0+upgraded, CUDA 12.4, cuDNN 90100"
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90200)
    assert L.SoftwareStack.current("cuda").key != a.key
    assert L.SoftwareStack.current("cpu").cudnn is None  # cpu timings never call cuDNN
    monkeypatch.undo()
    assert torch.__version__ == original
    assert L.LatencyCache(path).get_or_measure(_FakeArch("aaaa"), device="cpu", protocol=proto, measure=stub) == first
    assert stub.calls == 2


def test_software_stack_round_trip_and_errors() -> None:
    assert L.SoftwareStack.from_dict(H100_STACK.to_dict()) == H100_STACK
    assert L.SoftwareStack(torch="2.5.1+cpu").label() == "torch 2.5.1+cpu, no CUDA"
    with pytest.raises(TypeError):
        L.SoftwareStack.from_dict({"cuda": "12.4"})
    bad = json.loads(STACKED_CACHE_LINE)
    bad["software"] = "torch 2"
    with pytest.raises(UserError, match="not a latency record"):
        L.LatencyResult.from_dict(bad)


# -- ArchConfig and presets (search_space) -------------------------------------------------------------


def test_measure_arch_builds_and_deploys() -> None:
    from search_space.cost import cost
    from search_space.presets import get_preset

    arch = get_preset("casr").arch
    proto = L.LatencyProtocol.cpu(input_hw=(24, 24), warmup=0, runs=2)
    r = L.measure_latency(arch, device="cpu", protocol=proto)
    assert r.arch_hash == arch.arch_hash and r.n_runs == 2
    assert r.params == cost(arch, hw=(24, 24)).params  # the deploy model was timed, not the training one
    with pytest.raises(UserError, match="down_factor 3"):
        L.measure_latency(arch, device="cpu", protocol=L.LatencyProtocol.cpu(input_hw=(32, 32), runs=1))


def test_cli_preset_table_json_and_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search_space.presets import get_preset

    out = tmp_path / "bench" / "casr.json"
    cache = tmp_path / "latency.jsonl"
    args = ["--preset", "casr", "--device", "cpu", "--hw", "24x24", "--runs", "2", "--warmup", "0", "--threads", "1"]
    assert cli.main([*args, "--out", str(out), "--cache", str(cache), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for needle in ("cpu: ", "mean [ms]", "median [ms]", "p90 [ms]", "IQR [ms]", "CV [%]", "Table 1 [ms, RTX 4090]", "0.468",
                   "(1 thread)", f"torch {torch.__version__}", "IQR: interquartile range"):
        assert needle in text, needle
    data = json.loads(out.read_text())
    row = data["results"][0]
    preset = get_preset("casr")
    assert row["name"] == "casr" and row["table1_runtime_ms"] == 0.468 and row["approximate"] is False
    assert row["latency"]["arch_hash"] == preset.arch.arch_hash and row["arch"] == preset.arch.to_dict()
    assert row["latency"]["stats"]["n"] == 2 and data["protocol"]["input_hw"] == [24, 24]
    assert data["device_name"].startswith("cpu: ") and data["spearman_vs_table1"] is None
    assert data["software"] == L.SoftwareStack.current("cpu").to_dict()
    assert row["latency"]["software"] == data["software"] and row["latency"]["stats"]["iqr_ms"] >= 0
    # thop is installed here, so MACs are reported, at the measured input size (Table 1 is at 540x960)
    assert row["macs"] == pytest.approx(preset.macs_g * 1e9 * (24 * 24) / (540 * 960), rel=0.02)
    # the second run is served from the cache: same record, no new line
    first_ts = row["latency"]["timestamp"]
    assert cli.main([*args, "--out", str(out), "--cache", str(cache), "--no-progress"]) == 0
    assert json.loads(out.read_text())["results"][0]["latency"]["timestamp"] == first_ts
    assert len(cache.read_text().splitlines()) == 1


def test_cli_arch_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomli_w

    from search_space.presets import get_preset

    arch = get_preset("lanczospp").arch
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps(arch.to_dict()))
    as_toml = tmp_path / "export.toml"
    as_toml.write_text(tomli_w.dumps({"arch": arch.to_dict(), "recipe": {"epochs": 3}}))
    for path in (as_json, as_toml):
        out = tmp_path / f"{path.stem}.out.json"
        argv = ["--arch", str(path), "--device", "cpu", "--hw", "24x24", "--runs", "1", "--warmup", "0"]
        assert cli.main([*argv, "--out", str(out)]) == 0
        row = json.loads(out.read_text())["results"][0]
        assert row["name"] == path.stem and row["latency"]["arch_hash"] == arch.arch_hash
        assert row["table1_runtime_ms"] is None
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**arch.to_dict(), "colour": "blue"}))
    assert cli.main(["--arch", str(bad), "--device", "cpu"]) == 2
    assert "colour" in capsys.readouterr().err


def test_correlations_leave_out_approximate_presets() -> None:
    def row(name: str, ours: float, table1: float, approx: bool = False) -> dict:
        stats = L.summarize_times([ours])
        res = L.LatencyResult(stats=stats, times_ms=(ours,), protocol=L.LatencyProtocol.challenge(), device_name="cuda: X")
        return {"name": name, "result": res, "table1_ms": table1, "approximate": approx}

    rows = [row("a", 1.0, 0.4), row("b", 2.0, 0.6), row("c", 3.0, 0.9), row("z", 0.5, 3.0, approx=True)]
    c = cli._correlations(rows, "cuda: X")
    assert c["exact+fitted presets"]["spearman_rho"] == pytest.approx(1.0)
    assert c["exact+fitted presets"]["presets"] == ["a", "b", "c"]
    # all four: ranks ours (2,3,4,1) vs Table 1 (1,2,3,4): d = (1,1,1,-3) -> 1 - 6*12/60
    assert c["all presets"]["spearman_rho"] == pytest.approx(1 - 6 * 12 / 60)


# -- CUDA timing loop, on a simulated CUDA runtime ---------------------------------------------------


class _FakeEvent:
    """Wall-clock stand-in for torch.cuda.Event (CPU work is synchronous, so record == now)."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t: float | None = None

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "_FakeEvent") -> float:
        assert self.t is not None and end.t is not None
        return (end.t - self.t) * 1000.0


def test_cuda_timing_loop_with_simulated_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks the control flow of the GPU path (warm-up, event pairs, budget, cudnn flag restore,
    peak memory) without a GPU; the real thing runs on the device machine."""
    import contextlib

    calls = {"sync": 0, "reset": 0}
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.__setitem__("sync", calls["sync"] + 1))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.__setitem__("reset", calls["reset"] + 1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    torch.backends.cudnn.benchmark = False

    model = _Sleepy(0.01)
    x = torch.zeros(1, 3, 4, 4)
    proto = L.LatencyProtocol.challenge(warmup=2, runs=4, input_hw=(4, 4))
    times, stopped, peak = _time_cuda(model, x, proto, torch.device("cpu"))
    assert len(times) == 4 and stopped == "runs" and all(t >= 10.0 * 0.99 for t in times)
    assert peak == pytest.approx(3.0) and calls["reset"] == 1
    assert calls["sync"] >= 4 + 1  # one per timed run, one after warm-up
    assert torch.backends.cudnn.benchmark is False  # restored

    budget = L.LatencyProtocol.challenge(warmup=1, runs=100, time_budget_s=0.1, input_hw=(4, 4))
    times, stopped, _ = _time_cuda(model, x, budget, torch.device("cpu"))
    assert stopped == "time_budget" and 1 <= len(times) < 100
