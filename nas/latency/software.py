"""`SoftwareStack`: the torch / CUDA / cuDNN versions a latency was measured with.

Why it is part of every cached number's key: a torch or cuDNN upgrade changes kernels (and the
algorithms `cudnn.benchmark` picks), so a timing from the old stack is not a timing of the new
one. It is kept out of the protocol hash on purpose: the protocol says *how* we measure and must
hash alike across installs, while the stack is *what* ran; both key the cache, and a run directory
records both (`run.json`), so a resumed run refuses to mix stacks just as it refuses to mix devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nas.latency.protocol import LatencyProtocol
    from nas.task import JSONDict

__all__ = ["UNKNOWN_STACK_KEY", "SoftwareStack"]

#: The cache-key part of a record written before the stack was stored: it never equals a real
#: stack's key, so such a record is loaded (and counted) but never reused.
UNKNOWN_STACK_KEY = "unknown software stack"


@dataclass(frozen=True)
class SoftwareStack:
    """torch's version string (it names the build, e.g. `2.5.1+cu124`), the CUDA runtime torch was
    built for (`torch.version.cuda`, None for a CPU-only build) and cuDNN's version number.

    `cudnn` is recorded for cuda timings only: CPU convolutions never call cuDNN, so a cuDNN
    upgrade must not discard CPU numbers (the same rule as `LatencyResult.cudnn_version`).
    """

    torch: str
    cuda: str | None = None
    cudnn: int | None = None
    #: ONNX Runtime's version, for timings in it only (None otherwise, and then absent from the stored form).
    onnxruntime: str | None = None

    @classmethod
    def current(cls, device_kind: str, runtime: str = "torch") -> SoftwareStack:
        """This process's stack, as it applies to timings on `device_kind` (`cuda` or `cpu`) in `runtime`."""
        cudnn = torch.backends.cudnn.version() if device_kind == "cuda" else None
        ort = None
        if runtime == "onnxruntime":
            from importlib.metadata import PackageNotFoundError, version

            try:
                ort = version("onnxruntime")
            except PackageNotFoundError:
                ort = "not installed"
        return cls(torch=str(torch.__version__), cuda=torch.version.cuda, cudnn=int(cudnn) if cudnn is not None else None,
                   onnxruntime=ort)

    @classmethod
    def timing(cls, protocol: LatencyProtocol) -> SoftwareStack:
        """This process's stack for timings under `protocol` (its device kind and runtime): the one
        way callers get it, so none can leave out the runtime (ONNX Runtime's version)."""
        return cls.current(protocol.device_kind, protocol.runtime)

    @property
    def key(self) -> str:
        """The cache-key part; equal keys mean the same kernels can have run."""
        return self.label()

    def label(self) -> str:
        """`torch 2.5.1+cu124, CUDA 12.4, cuDNN 90100`; printed in tables and error messages."""
        parts = [f"torch {self.torch}", f"CUDA {self.cuda}" if self.cuda else "no CUDA"]
        if self.cudnn is not None:
            parts.append(f"cuDNN {self.cudnn}")
        if self.onnxruntime is not None:
            parts.append(f"onnxruntime {self.onnxruntime}")
        return ", ".join(parts)

    def to_dict(self) -> JSONDict:
        """The stored form (a latency record's and run.json's `software`)."""
        d: JSONDict = {"torch": self.torch, "cuda": self.cuda, "cudnn": self.cudnn}
        if self.onnxruntime is not None:
            d["onnxruntime"] = self.onnxruntime
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoftwareStack:
        """Inverse of `to_dict`; a malformed value raises TypeError (the record reader reports it)."""
        if not isinstance(data, dict) or not isinstance(data.get("torch"), str):
            raise TypeError(f"software stack must be a mapping with a 'torch' version string, got {data!r}")
        cudnn = data.get("cudnn")
        return cls(torch=data["torch"], cuda=data.get("cuda"), cudnn=int(cudnn) if cudnn is not None else None,
                   onnxruntime=data.get("onnxruntime"))

