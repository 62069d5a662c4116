"""How a latency is measured: the frozen, hashed `LatencyProtocol` and the device-kind check.

Why it is its own module: a latency number means something only together with how and where it
was taken, so the protocol is the identity of every measurement. Its hash keys the latency cache
(`latency.jsonl`) and a run directory's settings, so `to_dict` and the hash must never change for
an unchanged protocol: a run directory made before must resume after.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from search_space.configio import content_hash, reject_unknown_keys
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict

__all__ = ["BACKENDS", "DEVICE_KINDS", "DTYPES", "PROTOCOL_VERSION", "RUNTIMES", "LatencyProtocol", "device_kind_of", "with_runtime"]

#: Bump when the measuring code changes in a way that makes old numbers incomparable; it is part of
#: the protocol hash, so old cache entries are then simply not found.
PROTOCOL_VERSION = 1

DEVICE_KINDS: tuple[str, ...] = ("cuda", "cpu")
DTYPES: tuple[str, ...] = ("float16", "float32")
BACKENDS: tuple[str, ...] = ("eager", "channels_last")
#: What runs the deploy network: eager PyTorch, or its ONNX export in ONNX Runtime (CPU execution
#: provider; `nas.latency.onnxrt`, needs the deploy extra). Deployed real-time SR runs in the latter.
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime"}


def with_runtime(device_name: str, runtime: str | None) -> str:
    """A latency label that names its runtime when it is not eager torch (the default, left unsaid so
    that every label from before runtimes existed reads as before): fronts and figures say where the
    milliseconds were measured."""
    if runtime in (None, "torch"):
        return device_name
    return f"{device_name}, {_RUNTIME_NAMES.get(str(runtime), str(runtime))}"


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency is measured. Two numbers are comparable only if their protocol hashes match.

    `time_budget_s` bounds the measurement of one network (warm-up + timed runs) in seconds:
    warm-up stops early once it has used a quarter of the budget, timed runs stop once the budget is
    spent; at least one warm-up (if `warmup > 0`) and one timed run always happen. `None` means no
    budget (the GPU challenge protocol: always exactly `warmup` + `runs`). On CPU a batch is timed
    interleaved, so the budget counts that network's own forwards, not the wall clock (see
    `nas.latency.measure.measure_latency_batch`); on CUDA it is the wall clock of its measurement.
    The software stack is not part of the protocol: it keys the cache beside it (`SoftwareStack`).
    """

    device_kind: str = "cuda"
    dtype: str = "float16"
    input_hw: tuple[int, int] = (540, 960)
    warmup: int = 50
    runs: int = 100
    time_budget_s: float | None = None
    backend: str = "eager"
    version: int = PROTOCOL_VERSION
    #: Last, and left out of `to_dict` when "torch": every protocol made before it existed keeps its hash.
    runtime: str = "torch"

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
        if self.runtime not in RUNTIMES:
            raise UserError(f"latency protocol: runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.runtime == "onnxruntime" and (self.device_kind != "cpu" or self.backend != "eager"):
            raise UserError("latency protocol: runtime onnxruntime is timed on the cpu (CPU execution provider) with the "
                            "default backend only; use device cpu and backend eager, or runtime torch")

    # -- standard protocols ------------------------------------------------------------------------

    @classmethod
    def challenge(cls, **overrides: object) -> LatencyProtocol:
        """The AIS 2024 / NTIRE23 GPU protocol: fp16, 540x960, 50 warm-ups, 100 CUDA-event runs.

        It follows the AIS 2024 RTSR benchmark (the NTIRE23-RTSR `demo/runtime_demo.py` script; the
        survey reports "the average of 100 runs after GPU warm up" on an RTX 4090): the deploy model
        and a 1x3x540x960 `randn` input in pure fp16 (`.half()`, not autocast),
        `cudnn.benchmark = True`, eval mode, `torch.inference_mode()`, 50 warm-up runs then
        `torch.cuda.synchronize()`, then 100 runs each timed with a pair of CUDA events (record,
        forward, record, synchronize, `elapsed_time`). Only the forward pass is timed. The demo
        script built its input as (960, 540), i.e. H=960, W=540 (a transposed 540p frame); we use
        H x W = 540 x 960, the real frame orientation, with the same pixel count. `channels_last`
        is a separate, labelled backend; the challenge uses the ordinary contiguous layout.
        """
        values: JSONDict = dict(device_kind="cuda", dtype="float16", input_hw=(540, 960), warmup=50, runs=100)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def cpu(cls, **overrides: object) -> LatencyProtocol:
        """The time-bounded CPU protocol: fp32, 540x960, 2 warm-ups, at most 10 runs or 20 s.

        fp32 because fp16 convolutions on CPU are slow or unsupported, so an fp16 CPU number would
        measure the fallback path, not the network. Runs are timed with `time.perf_counter` and
        stopped early by the wall-clock budget so the search never stalls on a big network. The
        thread count is part of the device name; on a shared, loaded machine use one thread:
        multi-threaded runs then mostly time how long OpenMP workers wait to be scheduled (a 24x24
        CASR forward took about 420 ms on 2 busy threads and a few ms on one).
        """
        values: JSONDict = dict(
            device_kind="cpu", dtype="float32", input_hw=(540, 960), warmup=2, runs=10, time_budget_s=20.0
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def default_for(cls, device: str | torch.device, **overrides: object) -> LatencyProtocol:
        """The standard protocol for a device (`cuda`, `cuda:1`, `cpu`)."""
        kind = device_kind_of(device)
        return cls.challenge(**overrides) if kind == "cuda" else cls.cpu(**overrides)

    # -- identity ----------------------------------------------------------------------------------

    def to_dict(self) -> JSONDict:
        """The stored form (JSON-ready); its content hash is `protocol_hash`, so keep it stable."""
        d = dataclasses.asdict(self)
        d["input_hw"] = list(self.input_hw)
        if d["runtime"] == "torch":
            del d["runtime"]  # the hash of every protocol from before runtimes existed
        return d

    @classmethod
    def from_dict(cls, data: JSONDict) -> LatencyProtocol:
        """Inverse of `to_dict`; unknown keys are a `UserError` that lists the valid ones."""
        if not isinstance(data, dict):
            raise UserError(f"latency protocol must be a mapping, got {type(data).__name__}")
        reject_unknown_keys("latency protocol", data, (f.name for f in dataclasses.fields(cls)))
        return cls(**data)

    @property
    def protocol_hash(self) -> str:
        """12 hex digits over `to_dict()`: the key that decides whether two numbers compare."""
        return content_hash(self.to_dict())

    def describe(self) -> str:
        """One human-readable sentence; printed with every table and stored with every result."""
        h, w = self.input_hw
        if self.device_kind == "cuda":
            timer = "CUDA events around each forward, synchronize after each run"
            extra = "cudnn.benchmark=True"
        else:
            timer = "time.perf_counter around each forward, a batch's networks timed in turn, round by round"
            extra = "torch's intra-op thread count as in the device label"
        budget = "no time budget" if self.time_budget_s is None else f"time budget {self.time_budget_s:g} s"
        layout = "channels_last" if self.backend == "channels_last" else "contiguous (NCHW)"
        if self.runtime == "onnxruntime":
            return (
                f"ONNX Runtime (CPU execution provider, fixed-size ONNX export of the deploy model, opset 18), {self.dtype}, "
                f"input 1x3x{h}x{w} randn (HxW), intra-op threads as in the device label, {self.warmup} warm-up runs, "
                f"then up to {self.runs} timed runs (time.perf_counter around each session.run), {budget}; "
                f"protocol v{self.version}, hash {self.protocol_hash}"
            )
        return (
            f"{self.device_kind}, {self.dtype} weights and input, input 1x3x{h}x{w} randn (HxW), {layout}, "
            f"eval + inference_mode, {extra}, {self.warmup} warm-up runs, then up to {self.runs} timed runs "
            f"({timer}), {budget}; protocol v{self.version}, hash {self.protocol_hash}"
        )


def device_kind_of(device: str | torch.device) -> str:
    """`cuda`/`cpu` for a device spec (`cuda:1` -> `cuda`); anything else is a user error.

    Every entry point checks the device with this first, so a typo fails before any work is done."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cuda, cuda:N or cpu") from None
    if dev.type not in DEVICE_KINDS:
        raise UserError(f"device {device!r} is not supported for latency; use cuda, cuda:N or cpu")
    return dev.type
