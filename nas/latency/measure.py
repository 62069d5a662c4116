"""Timing a deploy-form network on one device: `measure_latency`, its `LatencyResult` and device labels.

Why results carry so much: a latency is one of the two search objectives, and it is only
meaningful with how and where it was taken. So every result holds its protocol, the device label
(`cuda: <GPU>` / `cpu: <processor> (<n> threads)`, so CPU and GPU numbers can never be mixed up) and
the software versions. `search_space.network` is imported only when an `ArchConfig` is measured.
"""

from __future__ import annotations

import copy
import gc
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from nas.latency.protocol import LatencyProtocol, device_kind_of
from nas.latency.stats import LatencyStats, summarize_times
from search_space.errors import UserError

__all__ = ["LatencyResult", "device_name_for", "measure_latency"]

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}


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
        """The stored form (one `latency.jsonl` record, a trial's latency attribute): keep keys stable."""
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
        """(arch hash, protocol hash, device label): a cached number is reused only if all three match."""
        return (self.arch_hash, self.protocol_hash, self.device_name)


def _cpu_processor_name() -> str:
    """The CPU model for the device label; /proc/cpuinfo names it where `platform` often does not."""
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
    kind = device_kind_of(device)
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
    """Parameters of the deploy model actually timed (not the training form)."""
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
    kind = device_kind_of(device)
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
    """Whether `fraction` of the wall-clock budget is still unspent (always, with no budget)."""
    return budget is None or (time.perf_counter() - start) < budget * fraction


def _time_cpu(model: nn.Module, x: torch.Tensor, protocol: LatencyProtocol) -> tuple[list[float], str]:
    """Per-run forward times (ms) by `perf_counter`, and why the runs stopped (`runs` or `time_budget`)."""
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
    """Per-run forward times (ms) by CUDA events, why the runs stopped, and peak memory (MiB).

    cudnn.benchmark is switched on for the challenge protocol and restored afterwards, so timing
    never changes the caller's global setting."""
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
