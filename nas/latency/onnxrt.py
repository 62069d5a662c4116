"""Latency in ONNX Runtime: the deploy network's ONNX export timed in an ORT session on the CPU.

Why a runtime of its own: deployed real-time SR runs in ONNX Runtime or TensorRT, whose graph
optimisations (constant folding, fused conv + activation) can rank networks differently from eager
torch. The export is `trainers.deploy_export.export_onnx` at the protocol's fixed input size (ORT
plans its memory for that size), checked against torch before timing. Networks are timed one after
another, each in its own session with torch's intra-op thread count. Imported only when a protocol
says `runtime = "onnxruntime"`, so `nas.latency` still imports with torch alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from nas.latency.protocol import LatencyProtocol

__all__ = ["CHECK_TOLERANCE_255", "time_in_onnxruntime"]

#: |ORT - torch| allowed (8-bit levels) when checking the export that is timed.
CHECK_TOLERANCE_255 = 0.5


def _session_for(model: nn.Module, *, down_factor: int, protocol: LatencyProtocol, threads: int) -> object:
    """An ORT CPU session of `model`'s checked ONNX export at the protocol's input size."""
    from trainers.deploy_export import export_onnx, require_onnx

    _, ort = require_onnx()
    gen = torch.Generator().manual_seed(1)
    check = [torch.rand(1, 3, *protocol.input_hw, generator=gen)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        # Untrained weights (a search times networks before training) give outputs far outside
        # [0, 1], where fp32 reordering alone exceeds the deploy tolerance; 0.5 levels still catches
        # a graph that computes something else.
        export_onnx(model, path, down_factor=down_factor, input_size=protocol.input_hw, inputs=check,
                    tolerance_255=CHECK_TOLERANCE_255)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _time_session(session: object, x: object, protocol: LatencyProtocol) -> tuple[list[float], str]:
    """Run times (ms) of `session` on `x` and why they stopped, with the protocol's warm-up and budget."""
    run = session.run  # type: ignore[attr-defined]
    budget = protocol.time_budget_s
    start = time.perf_counter()
    for _ in range(protocol.warmup):
        run(None, {"lr": x})
        if budget is not None and time.perf_counter() - start > budget / 4:
            break
    times: list[float] = []
    spent = 0.0
    while len(times) < protocol.runs:
        t0 = time.perf_counter()
        run(None, {"lr": x})
        elapsed = time.perf_counter() - t0
        times.append(elapsed * 1000.0)
        spent += elapsed
        if budget is not None and spent >= budget:
            return times, "time_budget"
    return times, "runs"


def time_in_onnxruntime(model: nn.Module, *, down_factor: int, protocol: LatencyProtocol) -> tuple[list[float], str]:
    """Run times (ms) of `model`'s checked ONNX export in ONNX Runtime and why they stopped (`runs` /
    `time_budget`), on the protocol's fixed-seed randn input, with torch's intra-op thread count."""
    session = _session_for(model, down_factor=down_factor, protocol=protocol, threads=torch.get_num_threads())
    x = torch.randn(1, 3, *protocol.input_hw, generator=torch.Generator().manual_seed(0)).numpy()
    return _time_session(session, x, protocol)
