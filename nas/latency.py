"""Runtime of a deploy-form network under a stated, hashable protocol, with a result cache and a CLI.

Why this module exists: latency is one of the two search objectives, and a latency number is only
meaningful together with *how* and *where* it was taken. So every measurement carries its protocol
(a frozen, hashed `LatencyProtocol`), the device it ran on, and the software versions; CPU and GPU
numbers are labelled `cpu: ...` / `cuda: ...` everywhere so the two can never be mixed up.

GPU protocol (`LatencyProtocol.challenge()`), following the AIS 2024 RTSR benchmark (the NTIRE23-RTSR
`demo/runtime_demo.py` script; the survey reports "the average of 100 runs after GPU warm up" on an
RTX 4090): the deploy model and a 1x3x540x960 `randn` input in pure fp16 (`.half()`, not autocast),
`cudnn.benchmark = True`, eval mode, `torch.inference_mode()`, 50 warm-up runs then
`torch.cuda.synchronize()`, then 100 runs each timed with a pair of CUDA events
(record, forward, record, synchronize, `elapsed_time`). Only the forward pass is timed. The demo
script built its input as (960, 540), i.e. H=960, W=540 (a transposed 540p frame); we use H x W =
540 x 960, the real frame orientation, with the same pixel count. `channels_last` is available as a
separate, labelled backend; the default (and the challenge) is the ordinary contiguous layout.

CPU protocol (`LatencyProtocol.cpu()`): fp32 (fp16 convolutions on CPU are slow or unsupported, so
an fp16 CPU number would measure the fallback path, not the network), a few warm-ups, then up to N
runs timed with `time.perf_counter`, stopped early by a wall-clock budget so the search never stalls
on a big network. The thread count is part of the device name. On a shared, loaded machine use one
thread (`--threads 1`): multi-threaded runs then mostly time how long OpenMP workers wait to be
scheduled (a 24x24 CASR forward took about 420 ms on 2 busy threads and a few ms on one).

This module must import with torch and the standard library alone: the GPU machines that run it may
lack optuna, ray, thop, pillow or tqdm. Everything else (search_space.network / presets / cost, tqdm,
tomli) is imported lazily inside functions, and optional extras degrade gracefully.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_space.confighash import content_hash
from search_space.errors import UserError

__all__ = [
    "PROTOCOL_VERSION",
    "LatencyCache",
    "LatencyProtocol",
    "LatencyResult",
    "LatencyStats",
    "average_ranks",
    "build_parser",
    "device_name_for",
    "main",
    "measure_latency",
    "spearman",
    "summarize_times",
]

#: Bump when the measuring code changes in a way that makes old numbers incomparable; it is part of
#: the protocol hash, so old cache entries are then simply not found.
PROTOCOL_VERSION = 1

DEVICE_KINDS: tuple[str, ...] = ("cuda", "cpu")
DTYPES: tuple[str, ...] = ("float16", "float32")
BACKENDS: tuple[str, ...] = ("eager", "channels_last")
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}

#: The survey's Table 1 runtimes were measured on this GPU; printed next to them so nobody compares
#: them with our numbers without seeing the device.
TABLE1_DEVICE = "NVIDIA RTX 4090 (AIS 2024 survey, Table 1)"


def _short_hash(payload: dict[str, Any]) -> str:
    """First 12 hex digits of sha256 over canonical JSON: stable across runs, processes and machines."""
    return content_hash(payload)


# --------------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency is measured. Two numbers are comparable only if their protocol hashes match.

    `time_budget_s` bounds the whole measurement (warm-up + timed runs) in wall-clock seconds:
    warm-up stops early once it has used a quarter of the budget, timed runs stop once the budget is
    spent; at least one warm-up (if `warmup > 0`) and one timed run always happen. `None` means no
    budget (the GPU challenge protocol: always exactly `warmup` + `runs`).
    """

    device_kind: str = "cuda"
    dtype: str = "float16"
    input_hw: tuple[int, int] = (540, 960)
    warmup: int = 50
    runs: int = 100
    time_budget_s: float | None = None
    backend: str = "eager"
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        hw = self.input_hw
        if isinstance(hw, list):  # from JSON/TOML
            object.__setattr__(self, "input_hw", tuple(hw))
            hw = self.input_hw
        if self.device_kind not in DEVICE_KINDS:
            raise UserError(f"latency protocol: device kind {self.device_kind!r} is not one of {', '.join(DEVICE_KINDS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"latency protocol: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device_kind == "cpu" and self.dtype == "float16":
            raise UserError(
                "latency protocol: float16 on CPU times PyTorch's slow fp16 fallback, not the network; "
                "use dtype float32 for CPU (the GPU challenge protocol is the fp16 one)"
            )
        if (
            not isinstance(hw, tuple)
            or len(hw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw)
        ):
            raise UserError(f"latency protocol: input_hw must be two positive integers (H, W), got {hw!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UserError(f"latency protocol: warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise UserError(f"latency protocol: runs must be an integer >= 1, got {self.runs!r}")
        if self.time_budget_s is not None and not (
            isinstance(self.time_budget_s, (int, float)) and math.isfinite(self.time_budget_s) and self.time_budget_s > 0
        ):
            raise UserError(
                f"latency protocol: time_budget_s must be a positive number of seconds or null, got {self.time_budget_s!r}"
            )
        if self.time_budget_s is not None:  # 20 and 20.0 must hash alike
            object.__setattr__(self, "time_budget_s", float(self.time_budget_s))
        if self.backend not in BACKENDS:
            raise UserError(f"latency protocol: backend {self.backend!r} is not one of {', '.join(BACKENDS)}")

    # -- standard protocols ------------------------------------------------------------------------

    @classmethod
    def challenge(cls, **overrides: Any) -> LatencyProtocol:
        """The AIS 2024 / NTIRE23 GPU protocol: fp16, 540x960, 50 warm-ups, 100 CUDA-event runs."""
        values: dict[str, Any] = dict(device_kind="cuda", dtype="float16", input_hw=(540, 960), warmup=50, runs=100)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def cpu(cls, **overrides: Any) -> LatencyProtocol:
        """The time-bounded CPU protocol: fp32, 540x960, 2 warm-ups, at most 10 runs or 20 s."""
        values: dict[str, Any] = dict(
            device_kind="cpu", dtype="float32", input_hw=(540, 960), warmup=2, runs=10, time_budget_s=20.0
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def default_for(cls, device: str | torch.device, **overrides: Any) -> LatencyProtocol:
        """The standard protocol for a device (`cuda`, `cuda:1`, `cpu`)."""
        kind = _device_kind(device)
        return cls.challenge(**overrides) if kind == "cuda" else cls.cpu(**overrides)

    # -- identity ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_hw"] = list(self.input_hw)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyProtocol:
        if not isinstance(data, dict):
            raise UserError(f"latency protocol must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"latency protocol: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**data)

    @property
    def protocol_hash(self) -> str:
        return _short_hash(self.to_dict())

    def describe(self) -> str:
        """One human-readable sentence; printed with every table and stored with every result."""
        h, w = self.input_hw
        if self.device_kind == "cuda":
            timer = "CUDA events around each forward, synchronize after each run"
            extra = "cudnn.benchmark=True"
        else:
            timer = "time.perf_counter around each forward"
            extra = "torch's intra-op thread count as in the device label"
        budget = "no time budget" if self.time_budget_s is None else f"time budget {self.time_budget_s:g} s"
        layout = "channels_last" if self.backend == "channels_last" else "contiguous (NCHW)"
        return (
            f"{self.device_kind}, {self.dtype} weights and input, input 1x3x{h}x{w} randn (HxW), {layout}, "
            f"eval + inference_mode, {extra}, {self.warmup} warm-up runs, then up to {self.runs} timed runs "
            f"({timer}), {budget}; protocol v{self.version}, hash {self.protocol_hash}"
        )


def _device_kind(device: str | torch.device) -> str:
    """`cuda`/`cpu` for a device spec; anything else is a user error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cuda, cuda:N or cpu") from None
    if dev.type not in DEVICE_KINDS:
        raise UserError(f"device {device!r} is not supported for latency; use cuda, cuda:N or cpu")
    return dev.type


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-run times in milliseconds.

    `std_ms` is the sample standard deviation (n-1 denominator; 0 for a single run), `cv_percent`
    is 100 * std / mean, `p90_ms` is the 90th percentile with linear interpolation between order
    statistics (position 0.9 * (n-1) in the sorted list, numpy's default rule).
    """

    n: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv_percent: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def summarize_times(times_ms: Sequence[float]) -> LatencyStats:
    """Mean, median, p90, min, max, std and CV of a non-empty list of run times (ms)."""
    values = [float(t) for t in times_ms]
    if not values:
        raise ValueError("summarize_times needs at least one time")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"run times must be finite and >= 0 ms, got {values!r}")
    n = len(values)
    s = sorted(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        n=n,
        mean_ms=mean,
        median_ms=_percentile(s, 0.5),
        p90_ms=_percentile(s, 0.9),
        min_ms=s[0],
        max_ms=s[-1],
        std_ms=std,
        cv_percent=100.0 * std / mean if mean > 0 else 0.0,
    )


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values all get the mean of the ranks they span (e.g. [10, 20, 20] -> [1, 2.5, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1  # mean of 1-based positions i+1 .. j+1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson correlation of average ranks (exact with ties).

    Returns NaN when either side has no variation (all values tied): the correlation is undefined.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError("spearman needs at least two pairs")
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = math.fsum(rx) / len(rx), math.fsum(ry) / len(ry)
    cov = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.fsum((a - mx) ** 2 for a in rx)
    vy = math.fsum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return math.nan
    return cov / math.sqrt(vx * vy)


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    """One measurement: statistics plus everything needed to know whether two numbers compare."""

    stats: LatencyStats
    times_ms: tuple[float, ...]
    protocol: LatencyProtocol
    device_name: str  # "cuda: NVIDIA H100 80GB HBM3" or "cpu: AMD EPYC (2 threads)"
    arch_hash: str | None = None
    name: str | None = None
    params: int | None = None
    stopped_by: str = "runs"  # "runs" or "time_budget"
    num_threads: int = 0
    peak_memory_mib: float | None = None
    torch_version: str = ""
    cudnn_version: int | None = None
    timestamp: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # Convenience views, so callers can write result.median_ms.
    @property
    def mean_ms(self) -> float:
        return self.stats.mean_ms

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    @property
    def p90_ms(self) -> float:
        return self.stats.p90_ms

    @property
    def min_ms(self) -> float:
        return self.stats.min_ms

    @property
    def std_ms(self) -> float:
        return self.stats.std_ms

    @property
    def cv_percent(self) -> float:
        return self.stats.cv_percent

    @property
    def n_runs(self) -> int:
        return self.stats.n

    @property
    def device_kind(self) -> str:
        return self.protocol.device_kind

    @property
    def dtype(self) -> str:
        return self.protocol.dtype

    @property
    def protocol_hash(self) -> str:
        return self.protocol.protocol_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch_hash": self.arch_hash,
            "device_name": self.device_name,
            "device_kind": self.device_kind,
            "dtype": self.dtype,
            "protocol_hash": self.protocol_hash,
            "protocol": self.protocol.to_dict(),
            "protocol_description": self.protocol.describe(),
            "stats": self.stats.to_dict(),
            "times_ms": list(self.times_ms),
            "params": self.params,
            "stopped_by": self.stopped_by,
            "num_threads": self.num_threads,
            "peak_memory_mib": self.peak_memory_mib,
            "torch_version": self.torch_version,
            "cudnn_version": self.cudnn_version,
            "timestamp": self.timestamp,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        """Inverse of `to_dict`; derived fields (kind, dtype, hash, description) are recomputed."""
        try:
            return cls(
                stats=LatencyStats.from_dict(data["stats"]),
                times_ms=tuple(float(t) for t in data["times_ms"]),
                protocol=LatencyProtocol.from_dict(data["protocol"]),
                device_name=str(data["device_name"]),
                arch_hash=data.get("arch_hash"),
                name=data.get("name"),
                params=data.get("params"),
                stopped_by=data.get("stopped_by", "runs"),
                num_threads=int(data.get("num_threads", 0)),
                peak_memory_mib=data.get("peak_memory_mib"),
                torch_version=data.get("torch_version", ""),
                cudnn_version=data.get("cudnn_version"),
                timestamp=data.get("timestamp", ""),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"not a latency record (missing or malformed field {exc}); was it written by nas.latency?") from None

    @property
    def cache_key(self) -> tuple[str | None, str, str]:
        return (self.arch_hash, self.protocol_hash, self.device_name)


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def _cpu_processor_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name_for(device: str | torch.device) -> str:
    """The label stored with every number: `cuda: <GPU name>` or `cpu: <processor> (<n> threads)`.

    Raises `UserError` for `cuda` when no CUDA device is usable, so callers fail before measuring.
    """
    kind = _device_kind(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda was requested but this machine has no usable CUDA device "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "run on a GPU machine or use --device cpu (CPU numbers are labelled cpu and are not "
                "comparable with the challenge's GPU runtimes)"
            )
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return f"cuda: {torch.cuda.get_device_name(index)}"
    n = torch.get_num_threads()
    return f"cpu: {_cpu_processor_name()} ({n} thread{'s' if n != 1 else ''})"


def _as_deploy_model(model_or_arch: Any) -> tuple[nn.Module, str | None]:
    """A private copy of the deploy model and the arch hash (None for a bare module)."""
    if isinstance(model_or_arch, nn.Module):
        # Copy: .half()/.to() work in place, and the caller's model must stay as it was.
        return copy.deepcopy(model_or_arch), None
    if hasattr(model_or_arch, "arch_hash"):
        from search_space.network import build, deploy  # lazy: only needed for configs

        return deploy(build(model_or_arch)), str(model_or_arch.arch_hash)
    raise UserError(
        f"measure_latency needs an ArchConfig or a deployed torch.nn.Module, got {type(model_or_arch).__name__}"
    )


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(
    model_or_arch: Any,
    *,
    device: str | torch.device = "cuda",
    protocol: LatencyProtocol | None = None,
    name: str | None = None,
    arch_hash: str | None = None,
) -> LatencyResult:
    """Time the forward pass of a deploy model under `protocol` (default: the device's standard one).

    `model_or_arch` is either an `ArchConfig` (built and fused here) or an already-deployed module
    (copied, never modified). `arch_hash` labels a bare module's result (needed for caching it).
    """
    kind = _device_kind(device)
    protocol = protocol if protocol is not None else LatencyProtocol.default_for(kind)
    if protocol.device_kind != kind:
        raise UserError(
            f"latency protocol is for {protocol.device_kind} but device is {device!r}; "
            f"use LatencyProtocol.default_for({kind!r}) or match the device"
        )
    dev_name = device_name_for(device)  # fails early and clearly without CUDA
    u = getattr(model_or_arch, "down_factor", 1)
    if not isinstance(model_or_arch, nn.Module) and isinstance(u, int) and u > 1:
        h, w = protocol.input_hw
        if h % u or w % u:
            raise UserError(
                f"input {h}x{w} is not divisible by the architecture's down_factor {u}; "
                f"use a multiple of {u} (540x960 works for every down_factor)"
            )
    model, derived_hash = _as_deploy_model(model_or_arch)
    arch_hash = arch_hash if arch_hash is not None else derived_hash
    params = _count_params(model)
    dev = torch.device(device)
    if kind == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())

    dtype = _TORCH_DTYPES[protocol.dtype]
    model = model.to(device=dev, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *protocol.input_hw, generator=gen).to(device=dev, dtype=dtype)
    if protocol.backend == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    if kind == "cuda":
        times, stopped_by, peak = _time_cuda(model, x, protocol, dev)
    else:
        times, stopped_by = _time_cpu(model, x, protocol)
        peak = None
    return LatencyResult(
        stats=summarize_times(times),
        times_ms=tuple(times),
        protocol=protocol,
        device_name=dev_name,
        arch_hash=arch_hash,
        name=name,
        params=params,
        stopped_by=stopped_by,
        num_threads=torch.get_num_threads(),
        peak_memory_mib=peak,
        torch_version=torch.__version__,
        cudnn_version=torch.backends.cudnn.version() if kind == "cuda" else None,
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _budget_left(start: float, budget: float | None, fraction: float = 1.0) -> bool:
    return budget is None or (time.perf_counter() - start) < budget * fraction


def _time_cpu(model: nn.Module, x: torch.Tensor, protocol: LatencyProtocol) -> tuple[list[float], str]:
    budget = protocol.time_budget_s
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(protocol.warmup):
            model(x)
            if not _budget_left(start, budget, 0.25):
                break
        gc.collect()
        times: list[float] = []
        stopped_by = "runs"
        for i in range(protocol.runs):
            t0 = time.perf_counter()
            model(x)
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1000.0)
            if i + 1 < protocol.runs and not _budget_left(start, budget):
                stopped_by = "time_budget"
                break
    return times, stopped_by


def _time_cuda(
    model: nn.Module, x: torch.Tensor, protocol: LatencyProtocol, dev: torch.device
) -> tuple[list[float], str, float]:
    # The control flow is unit-tested on a simulated CUDA runtime; the real runs need a GPU machine.
    budget = protocol.time_budget_s
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.cuda.device(dev):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            start = time.perf_counter()
            with torch.inference_mode():
                for _ in range(protocol.warmup):
                    model(x)
                    if budget is not None:
                        torch.cuda.synchronize()
                        if not _budget_left(start, budget, 0.25):
                            break
                torch.cuda.synchronize()
                gc.collect()
                t_start = torch.cuda.Event(enable_timing=True)
                t_end = torch.cuda.Event(enable_timing=True)
                times: list[float] = []
                stopped_by = "runs"
                for i in range(protocol.runs):
                    t_start.record()
                    model(x)
                    t_end.record()
                    torch.cuda.synchronize()
                    times.append(float(t_start.elapsed_time(t_end)))
                    if i + 1 < protocol.runs and not _budget_left(start, budget):
                        stopped_by = "time_budget"
                        break
            peak = torch.cuda.max_memory_allocated(dev) / 2**20
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    return times, stopped_by, peak


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

CacheKey = tuple[str, str, str]


class LatencyCache:
    """Append-only JSON-lines cache of `LatencyResult`s keyed by (arch hash, protocol hash, device name).

    Each record is appended with one `os.write` on an `O_APPEND` descriptor, so concurrent writers
    (several processes in one run directory) never interleave inside a line. A process killed
    mid-write leaves at most a truncated last line: it is skipped on load, and the next append
    starts on a fresh line. The file is re-read whenever its size changed, so entries written by
    other processes are seen.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"latency cache {self.path} is a directory; pass a file path such as {self.path / 'latency.jsonl'}")
        self._entries: dict[CacheKey, LatencyResult] = {}
        self._loaded_size = -1
        self.skipped_lines = 0

    def _refresh(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self._entries, self._loaded_size, self.skipped_lines = {}, -1, 0
            return
        if size == self._loaded_size:
            return
        data = self.path.read_bytes()
        entries: dict[CacheKey, LatencyResult] = {}
        skipped = 0
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                result = LatencyResult.from_dict(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
                # Appends are single writes, so a bad line can only be a record cut short by a
                # crash; skipping it just means that network is measured again.
                skipped += 1
                continue
            if result.arch_hash is not None:
                entries[result.cache_key] = result  # type: ignore[index]
        self._entries, self._loaded_size, self.skipped_lines = entries, len(data), skipped

    def __len__(self) -> int:
        self._refresh()
        return len(self._entries)

    def get(self, arch_hash: str, protocol: LatencyProtocol, device_name: str) -> LatencyResult | None:
        """The cached result for this arch, protocol and device, or None."""
        self._refresh()
        return self._entries.get((arch_hash, protocol.protocol_hash, device_name))

    def put(self, result: LatencyResult) -> None:
        """Append one record (atomic line write); later records win over earlier ones on load."""
        if result.arch_hash is None:
            raise UserError("a latency result without arch_hash cannot be cached; pass arch_hash= to measure_latency")
        line = json.dumps(result.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _ends_without_newline(self.path):
                line = b"\n" + line  # a truncated record precedes us: start our own line
            os.write(fd, line)
        finally:
            os.close(fd)
        self._refresh()

    def get_or_measure(
        self,
        arch: Any,
        *,
        device: str | torch.device = "cuda",
        protocol: LatencyProtocol | None = None,
        name: str | None = None,
        measure: Callable[..., LatencyResult] | None = None,
    ) -> LatencyResult:
        """The cached latency of `arch` (anything with `.arch_hash`), measuring and storing it on a miss.

        `measure` defaults to `measure_latency`; it is called as
        `measure(arch, device=device, protocol=protocol, name=name)`.
        """
        if not hasattr(arch, "arch_hash"):
            raise UserError("LatencyCache.get_or_measure needs an ArchConfig (something with .arch_hash), not a bare module")
        kind = _device_kind(device)
        protocol = protocol if protocol is not None else LatencyProtocol.default_for(kind)
        dev_name = device_name_for(device)
        hit = self.get(str(arch.arch_hash), protocol, dev_name)
        if hit is not None:
            return hit
        fn = measure if measure is not None else measure_latency
        result = fn(arch, device=device, protocol=protocol, name=name)
        if result.arch_hash is None:
            result = dataclasses.replace(result, arch_hash=str(arch.arch_hash))
        self.put(result)
        return result


def _ends_without_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `nas.latency` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nas.latency",
        description=(
            "Runtime of deploy-form SR networks. On cuda: the AIS 2024 challenge protocol (fp16, "
            "1x3x540x960 randn, cudnn.benchmark, 50 warm-ups, 100 CUDA-event runs). On cpu: fp32, a "
            "few warm-ups, at most 10 runs or 20 s, labelled cpu (not comparable with GPU numbers)."
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a published design (see `python -m search_space.presets`), or 'all'")
    what.add_argument("--arch", help="an architecture file (.toml or .json; the arch at top level or under [arch])")
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="where to measure (auto: cuda when available, else cpu)",
    )
    parser.add_argument("--runs", type=int, help="timed runs (default: 100 on cuda, at most 10 on cpu)")
    parser.add_argument("--warmup", type=int, help="warm-up runs (default: 50 on cuda, 2 on cpu)")
    parser.add_argument("--hw", help="input size HxW (default 540x960, the challenge's 540p frame)")
    parser.add_argument("--time-budget", type=float, help="seconds per network (default: none on cuda, 20 on cpu)")
    parser.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (a separate, labelled backend)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="cpu only: torch intra-op threads (default: torch's choice); part of the device label",
    )
    parser.add_argument("--cache", help="a JSON-lines latency cache to read and extend (e.g. runs/rtsr/latency.jsonl)")
    parser.add_argument("--out", help="write everything as JSON to this file (e.g. benchmarks/latency_h100.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _parse_hw(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--hw {text!r}: expected HxW such as 540x960") from None
    if h < 1 or w < 1:
        raise UserError(f"--hw {text!r}: height and width must be >= 1")
    return h, w


def _load_arch_file(path_text: str) -> Any:
    """An ArchConfig from a .toml or .json file (arch at top level or under an `arch` key)."""
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"--arch {path}: no such file; pass a .toml or .json architecture file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raise UserError(f"--arch {path}: unsupported extension {suffix!r}; use .toml or .json")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(exc, UserError):
            raise
        raise UserError(f"--arch {path}: cannot parse ({exc}); fix the file syntax") from None
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]
    if not isinstance(data, dict):
        raise UserError(f"--arch {path}: expected a table/object describing the architecture")
    from search_space.arch import ArchConfig

    return ArchConfig.from_dict(data)


@dataclass
class _Job:
    name: str
    arch: Any
    table1_ms: float | None = None
    approximate: bool = False


def _preset_jobs(spec: str) -> list[_Job]:
    from search_space import presets

    names = list(presets.list_presets()) if spec == "all" else [spec]
    jobs = []
    for n in names:
        p = presets.get_preset(n)
        jobs.append(_Job(name=n, arch=p.arch, table1_ms=float(p.runtime_ms), approximate=p.status == "approximate"))
    return jobs


def _macs_of(arch: Any, hw: tuple[int, int]) -> float | None:
    """Deploy MACs via `search_space.cost` (thop, lazily); None when thop is missing or it fails.

    MACs are an optional column: a machine without thop still gets its runtimes.
    """
    try:
        from search_space.cost import cost

        return float(cost(arch, hw=hw).macs)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - an optional column must not lose the measured runtimes
        print(f"nas.latency: MACs not available for {arch.summary() if hasattr(arch, 'summary') else arch}: {exc}", file=sys.stderr)
        return None


def _progress(items: list[_Job], *, enabled: bool) -> Any:
    if not enabled or len(items) < 2:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="latency", unit="net", file=sys.stderr)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _render_table(rows: list[dict[str, Any]], *, show_macs: bool) -> str:
    header = ["name"]
    if show_macs:
        header.append("MACs [G]")
    header += ["params [k]", "mean [ms]", "median [ms]", "p90 [ms]", "CV [%]", "Table 1 [ms, RTX 4090]", "device"]
    body = []
    for r in rows:
        res: LatencyResult = r["result"]
        line = [r["name"] + (" (approx.)" if r["approximate"] else "")]
        if show_macs:
            line.append(_fmt(r["macs"] / 1e9 if r["macs"] is not None else None, ".4g"))
        line += [
            _fmt(res.params / 1e3 if res.params is not None else None, ".1f"),
            _fmt(res.mean_ms, ".3f"),
            _fmt(res.median_ms, ".3f"),
            _fmt(res.p90_ms, ".3f"),
            _fmt(res.cv_percent, ".1f"),
            _fmt(r["table1_ms"], ".3f"),
            res.device_name,
        ]
        body.append(line)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in body]
    return "\n".join(out)


def _correlations(rows: list[dict[str, Any]], dev_name: str) -> dict[str, Any]:
    """Spearman rho of our mean runtimes vs Table 1's, over the exact/fitted presets and over all.

    Approximate presets are different networks from the teams' (same family, own MACs), so the
    headline number leaves them out; the all-presets number is reported beside it.
    """
    out: dict[str, Any] = {}
    groups = {
        "confirmed+fitted presets": [r for r in rows if r["table1_ms"] is not None and not r["approximate"]],
        "all presets": [r for r in rows if r["table1_ms"] is not None],
    }
    for label, group in groups.items():
        if len(group) < 2:
            continue
        rho = spearman([r["result"].mean_ms for r in group], [r["table1_ms"] for r in group])
        out[label] = {
            "spearman_rho": None if math.isnan(rho) else rho,
            "n": len(group),
            "presets": [r["name"] for r in group],
            "ours": f"mean runtime [ms] on {dev_name}",
            "reference": f"Table 1 runtime [ms] on {TABLE1_DEVICE}",
        }
    return out


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    from trainers.fileio import atomic_write  # stdlib only: keeps this module importable with torch alone

    atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def _run_cli(args: argparse.Namespace, argv: Sequence[str]) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: use a positive number of threads")
        if device != "cpu":
            raise UserError("--threads only applies to --device cpu (GPU timing does not depend on it)")
        torch.set_num_threads(args.threads)
    dev_name = device_name_for(device)  # clear error before anything else when CUDA is missing

    overrides: dict[str, Any] = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    if args.hw is not None:
        overrides["input_hw"] = _parse_hw(args.hw)
    if args.time_budget is not None:
        overrides["time_budget_s"] = args.time_budget
    if args.channels_last:
        overrides["backend"] = "channels_last"
    protocol = LatencyProtocol.default_for(device, **overrides)
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a directory; pass a file name such as {Path(args.out) / 'latency.json'}")

    if args.preset is not None:
        jobs = _preset_jobs(args.preset)
    else:
        jobs = [_Job(name=Path(args.arch).stem, arch=_load_arch_file(args.arch))]
    cache = LatencyCache(args.cache) if args.cache else None

    print(f"device: {dev_name}; torch {torch.__version__}" + (f", cuDNN {torch.backends.cudnn.version()}" if device.startswith("cuda") else ""))
    print(f"protocol: {protocol.describe()}")
    rows: list[dict[str, Any]] = []
    for job in _progress(jobs, enabled=not args.no_progress):
        if cache is not None:
            result = cache.get_or_measure(job.arch, device=device, protocol=protocol, name=job.name)
        else:
            result = measure_latency(job.arch, device=device, protocol=protocol, name=job.name)
        rows.append(
            {
                "name": job.name,
                "approximate": job.approximate,
                "arch": job.arch.to_dict() if hasattr(job.arch, "to_dict") else None,
                "macs": _macs_of(job.arch, protocol.input_hw),
                "table1_ms": job.table1_ms,
                "result": result,
            }
        )
    show_macs = any(r["macs"] is not None for r in rows)
    print(_render_table(rows, show_macs=show_macs))
    if show_macs:
        h, w = protocol.input_hw
        print(f"MACs: deploy form at input {h}x{w}.")
    if any(r["table1_ms"] is not None for r in rows):
        print(f"Table 1 runtimes: {TABLE1_DEVICE}; ours: {dev_name}.")

    correlation: dict[str, Any] | None = None
    if args.preset == "all":
        if device.startswith("cuda"):
            correlation = _correlations(rows, dev_name)
            for label, c in correlation.items():
                print(
                    f"Spearman rank correlation, our mean runtime on {dev_name} vs Table 1 on RTX 4090, "
                    f"{label} (n={c['n']}): rho = {_fmt(c['spearman_rho'], '.3f')}"
                )
        else:
            print("Spearman rank correlation vs Table 1: not computed (cpu timings do not rank like the RTX 4090's).")

    if args.out:
        payload = {
            "format": "rtsr-nas latency benchmark v1",
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python -m nas.latency", *argv]),
            "device_name": dev_name,
            "torch_version": torch.__version__,
            "cudnn_version": torch.backends.cudnn.version() if device.startswith("cuda") else None,
            "python_version": platform.python_version(),
            "protocol": protocol.to_dict(),
            "protocol_hash": protocol.protocol_hash,
            "protocol_description": protocol.describe(),
            "table1_device": TABLE1_DEVICE,
            "results": [
                {
                    "name": r["name"],
                    "approximate": r["approximate"],
                    "arch": r["arch"],
                    "macs": r["macs"],
                    "table1_runtime_ms": r["table1_ms"],
                    "latency": r["result"].to_dict(),
                }
                for r in rows
            ],
            "spearman_vs_table1": correlation,
        }
        _write_json_atomic(Path(args.out), payload)
        print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _run_cli(args, argv)
    except UserError as exc:
        print(f"nas.latency: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
