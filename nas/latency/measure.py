"""Timing deploy-form networks on one device: `measure_latency(_batch)`, `LatencyResult`, device labels.

Why results carry so much: a latency is one of the two search objectives, and it is only
meaningful with how and where it was taken. So every result holds its protocol, the device label
(`cuda: <GPU>` / `cpu: <processor> (<n> threads)`, so CPU and GPU numbers can never be mixed up) and
the software stack (`SoftwareStack`). On CPU a batch is timed interleaved (A B C A B C ...) so that
load drift on a shared machine lands on every network alike instead of on whichever came last; on
CUDA each network is timed on its own, as the challenge script does, on a GPU nothing else uses.
`search_space.network` is imported only when an `ArchConfig` is measured.
"""

from __future__ import annotations

import copy
import gc
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from nas.latency.protocol import LatencyProtocol, device_kind_of
from nas.latency.software import UNKNOWN_STACK_KEY, SoftwareStack
from nas.latency.stats import LatencyStats, spread_of, summarize_times
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from search_space.arch import ArchConfig

__all__ = ["LatencyResult", "device_name_for", "measure_latency", "measure_latency_batch"]

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}

#: The CPU timer; a module attribute so tests can drive the timing loop with a fake clock.
_clock: Callable[[], float] = time.perf_counter


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
    extra: JSONDict = field(default_factory=dict)
    #: None only for records written before the stack was stored: they are never reused from the cache.
    software: SoftwareStack | None = None

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
    def iqr_ms(self) -> float:
        return self.stats.iqr_ms

    @property
    def iqr_percent(self) -> float:
        return self.stats.iqr_percent

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

    def to_dict(self) -> JSONDict:
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
            "software": self.software.to_dict() if self.software is not None else None,
        }

    @classmethod
    def from_dict(cls, data: JSONDict) -> LatencyResult:
        """Inverse of `to_dict`; derived fields (kind, dtype, hash, description) are recomputed.

        Records from before the spread and the software stack were stored still load: their IQR
        is recomputed from `times_ms`, and their stack is None (so the cache never reuses them)."""
        try:
            times = tuple(float(t) for t in data["times_ms"])
            stats = dict(data["stats"])
            if "iqr_ms" not in stats and times:
                stats.update(spread_of(times))
            software = data.get("software")
            return cls(
                stats=LatencyStats.from_dict(stats),
                times_ms=times,
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
                software=SoftwareStack.from_dict(software) if software is not None else None,
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"not a latency record (missing or malformed field {exc}); was it written by nas.latency?") from None

    @property
    def cache_key(self) -> tuple[str | None, str, str, str]:
        """(arch hash, protocol hash, device label, software stack): a cached number is reused only if all match.

        A record without a stored stack gets `UNKNOWN_STACK_KEY`, which no real stack equals."""
        stack = self.software.key if self.software is not None else UNKNOWN_STACK_KEY
        return (self.arch_hash, self.protocol_hash, self.device_name, stack)


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


def _as_deploy_model(model_or_arch: nn.Module | ArchConfig) -> tuple[nn.Module, str | None]:
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
    model_or_arch: nn.Module | ArchConfig,
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
    result = measure_latency_batch(
        [model_or_arch], device=device, protocol=protocol, names=[name], arch_hashes=[arch_hash], errors="raise"
    )[0]
    assert isinstance(result, LatencyResult)  # errors="raise" returns results only
    return result


def measure_latency_batch(
    items: Sequence[nn.Module | ArchConfig],
    *,
    device: str | torch.device = "cuda",
    protocol: LatencyProtocol | None = None,
    names: Sequence[str | None] | None = None,
    arch_hashes: Sequence[str | None] | None = None,
    errors: Literal["raise", "return"] = "raise",
    on_done: Callable[[int], None] | None = None,
) -> list[LatencyResult | Exception]:
    """Time several deploy models under one protocol; one entry per item, in order.

    On CPU every model is built first, each is warmed up, and then the timed runs go round the
    batch (A B C A B C ...) until each model has `runs` runs or has spent its `time_budget_s`
    (counted per model: its own warm-up and timed forwards). Load on a shared machine drifts over
    seconds; interleaved, the drift reaches every model alike, so it widens each model's spread
    (`iqr_ms`) instead of biasing the later models' medians. On CUDA each model is timed on its
    own (warm-up then runs, CUDA events, peak memory of that model alone), as the challenge script
    does: the GPU is held exclusively, so it has no load drift to cancel.

    `errors="raise"` raises the first failure (on CPU a build error before anything is timed);
    `errors="return"` puts the exception in that item's place and times the rest, so one broken
    network does not lose a batch. A device or protocol problem always raises. `on_done(i)` is
    called once per item when it is finished (timed or failed), for progress bars.
    """
    kind = device_kind_of(device)
    protocol = protocol if protocol is not None else LatencyProtocol.default_for(kind)
    if protocol.device_kind != kind:
        raise UserError(
            f"latency protocol is for {protocol.device_kind} but device is {device!r}; "
            f"use LatencyProtocol.default_for({kind!r}) or match the device"
        )
    dev_name = device_name_for(device)  # fails early and clearly without CUDA
    names = list(names) if names is not None else [None] * len(items)
    arch_hashes = list(arch_hashes) if arch_hashes is not None else [None] * len(items)
    if not (len(names) == len(arch_hashes) == len(items)):
        raise ValueError("measure_latency_batch: names and arch_hashes must have one entry per item")
    dev = torch.device(device)
    if kind == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    stack = SoftwareStack.timing(protocol)
    done = on_done if on_done is not None else (lambda i: None)
    if protocol.runtime == "onnxruntime":
        return _time_onnxruntime(items, protocol=protocol, dev_name=dev_name, stack=stack, names=names,
                                 arch_hashes=arch_hashes, errors=errors, on_done=done)

    def finish(prep: _Prepared, times: list[float], stopped_by: str, peak: float | None) -> LatencyResult:
        return LatencyResult(
            stats=summarize_times(times),
            times_ms=tuple(times),
            protocol=protocol,
            device_name=dev_name,
            arch_hash=prep.arch_hash,
            name=prep.name,
            params=prep.params,
            stopped_by=stopped_by,
            num_threads=torch.get_num_threads(),
            peak_memory_mib=peak,
            torch_version=stack.torch,
            cudnn_version=stack.cudnn,
            timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            software=stack,
        )

    def time_one_cuda(i: int) -> LatencyResult:
        # A function of its own, so this model is freed before the next one is built.
        prep = _prepare(items[i], protocol=protocol, dev=dev, name=names[i], arch_hash=arch_hashes[i])
        times, stopped_by, peak = _time_cuda(prep.model, _input_for(protocol, dev), protocol, dev)
        return finish(prep, times, stopped_by, peak)

    out: list[LatencyResult | Exception | None] = [None] * len(items)
    if kind == "cuda":
        for i in range(len(items)):
            try:
                out[i] = time_one_cuda(i)
            except Exception as exc:
                if errors == "raise":
                    raise
                out[i] = exc
            done(i)
        return out  # type: ignore[return-value]

    preps: list[_Prepared | None] = [None] * len(items)
    for i, item in enumerate(items):
        try:
            preps[i] = _prepare(item, protocol=protocol, dev=dev, name=names[i], arch_hash=arch_hashes[i])
        except Exception as exc:
            if errors == "raise":
                raise
            out[i] = exc
            done(i)
    ready = [i for i, p in enumerate(preps) if p is not None]
    timed = _time_cpu_interleaved(
        [preps[i].model for i in ready],  # type: ignore[union-attr]
        _input_for(protocol, dev),
        protocol,
        raise_errors=errors == "raise",
        on_done=lambda j: done(ready[j]),
    )
    for i, outcome in zip(ready, timed):
        out[i] = outcome if isinstance(outcome, Exception) else finish(preps[i], *outcome, None)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


@dataclass
class _Prepared:
    """One deploy model on its device in the protocol's dtype and layout, with its labels."""

    model: nn.Module
    params: int
    arch_hash: str | None
    name: str | None


def _time_onnxruntime(
    items: Sequence[nn.Module | ArchConfig],
    *,
    protocol: LatencyProtocol,
    dev_name: str,
    stack: SoftwareStack,
    names: Sequence[str | None],
    arch_hashes: Sequence[str | None],
    errors: Literal["raise", "return"],
    on_done: Callable[[int], None],
) -> list[LatencyResult | Exception]:
    """`measure_latency_batch` in ONNX Runtime: each network exported, checked and timed in turn."""
    from nas.latency.onnxrt import time_in_onnxruntime

    out: list[LatencyResult | Exception] = []
    for i, item in enumerate(items):
        try:
            model, derived_hash = _as_deploy_model(item)
            times, stopped_by = time_in_onnxruntime(model, down_factor=int(getattr(item, "down_factor", 1)), protocol=protocol)
            out.append(LatencyResult(
                stats=summarize_times(times), times_ms=tuple(times), protocol=protocol, device_name=dev_name,
                arch_hash=arch_hashes[i] if arch_hashes[i] is not None else derived_hash, name=names[i],
                params=_count_params(model), stopped_by=stopped_by, num_threads=torch.get_num_threads(),
                torch_version=stack.torch, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                software=stack, extra={"runtime": "onnxruntime", "onnxruntime": stack.onnxruntime},
            ))
        except Exception as exc:
            if errors == "raise":
                raise
            # name the network: a batch's first failure is what the command prints
            out.append(type(exc)(f"{names[i] or 'network'}: {exc}") if type(exc) in (UserError, RuntimeError) else exc)
        on_done(i)
    return out


def _prepare(
    model_or_arch: nn.Module | ArchConfig, *, protocol: LatencyProtocol, dev: torch.device, name: str | None, arch_hash: str | None
) -> _Prepared:
    """Build (or copy) the deploy model, check it fits the input, move it and freeze it for timing."""
    u = getattr(model_or_arch, "down_factor", 1)
    if not isinstance(model_or_arch, nn.Module) and isinstance(u, int) and u > 1:
        h, w = protocol.input_hw
        if h % u or w % u:
            raise UserError(
                f"input {h}x{w} is not divisible by the architecture's down_factor {u}; "
                f"use a multiple of {u} (540x960 works for every down_factor)"
            )
    model, derived_hash = _as_deploy_model(model_or_arch)
    params = _count_params(model)
    model = model.to(device=dev, dtype=_TORCH_DTYPES[protocol.dtype]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if protocol.backend == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    return _Prepared(model=model, params=params, arch_hash=arch_hash if arch_hash is not None else derived_hash, name=name)


def _input_for(protocol: LatencyProtocol, dev: torch.device) -> torch.Tensor:
    """The protocol's input: 1x3xHxW randn from a fixed seed, in its dtype and layout."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *protocol.input_hw, generator=gen).to(device=dev, dtype=_TORCH_DTYPES[protocol.dtype])
    if protocol.backend == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _budget_left(start: float, budget: float | None, fraction: float = 1.0) -> bool:
    """Whether `fraction` of the wall-clock budget is still unspent (always, with no budget)."""
    return budget is None or (time.perf_counter() - start) < budget * fraction


def _timed_forward(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds one forward took by `_clock`."""
    t0 = _clock()
    model(x)
    return _clock() - t0


def _time_cpu_interleaved(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    protocol: LatencyProtocol,
    *,
    raise_errors: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> list[tuple[list[float], str] | Exception]:
    """Per-model run times (ms) and why each stopped (`runs` / `time_budget`), timed in rounds.

    Warm-up is per model (its own `warmup` forwards, cut at a quarter of its budget); then each
    round times every unfinished model once, in batch order. A model's budget counts only its own
    forwards, so a model gets the same number of runs whatever else is in its batch."""
    budget = protocol.time_budget_s
    spent = [0.0] * len(models)
    times: list[list[float]] = [[] for _ in models]
    outcome: list[tuple[list[float], str] | Exception | None] = [None] * len(models)

    def fail(i: int, exc: Exception) -> None:
        if raise_errors:
            raise exc
        outcome[i] = exc
        if on_done is not None:
            on_done(i)

    with torch.inference_mode():
        for i, model in enumerate(models):
            try:
                for _ in range(protocol.warmup):
                    spent[i] += _timed_forward(model, x)
                    if budget is not None and spent[i] >= 0.25 * budget:
                        break
            except Exception as exc:  # noqa: BLE001 - reported per model
                fail(i, exc)
        gc.collect()
        active = [i for i in range(len(models)) if outcome[i] is None]
        while active:
            still: list[int] = []
            for i in active:
                try:
                    dt = _timed_forward(models[i], x)
                except Exception as exc:  # noqa: BLE001 - reported per model
                    fail(i, exc)
                    continue
                spent[i] += dt
                times[i].append(dt * 1000.0)
                if len(times[i]) >= protocol.runs:
                    outcome[i] = (times[i], "runs")
                elif budget is not None and spent[i] >= budget:
                    outcome[i] = (times[i], "time_budget")
                else:
                    still.append(i)
                    continue
                if on_done is not None:
                    on_done(i)
            active = still
    return outcome  # type: ignore[return-value]


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
