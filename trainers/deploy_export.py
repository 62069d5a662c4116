"""Files of the fused deploy network that run without this project: ONNX and a `torch.export` program.

Real-time SR is deployed in ONNX Runtime or TensorRT (both read ONNX), and the challenge times the
deploy network, so the file a user ships must compute what was measured. Every export is therefore
checked against the torch deploy model on real images (builtin val photos and renders, not only
noise) BEFORE the file is written, atomically: a file on disk is one that matched.

Input sizes: both formats take any input size divisible by the arch's down factor (at least `MIN_SIDE`),
except networks with a module that declares `ONNX_FIXED_SIZE` (SAFM++'s adaptive max pool over uneven
windows: its windows depend on the size, and both exporters specialise the graph to the example's). Those are
exported for one input size (default the challenge's 540p LR, `DEPLOY_INPUT`), and the log and the
returned record say so. ONNX needs the optional `deploy` extra (`pip install -e ".[deploy]"`);
`torch.export` needs torch alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from search_space.configio import atomic_write
from search_space.errors import UserError

__all__ = [
    "DEPLOY_INPUT",
    "MIN_SIDE",
    "ONNX_OPSET",
    "TOLERANCE_255",
    "DeployFile",
    "export_onnx",
    "export_program",
    "fixed_size_reason",
    "onnx_available",
    "real_inputs",
    "require_onnx",
]

#: The ONNX opset written (ONNX Runtime >= 1.17 and TensorRT >= 8.6 read it).
ONNX_OPSET = 18
#: Largest |exported - torch| allowed, in 8-bit levels (outputs are on [0, 1] and scaled by 255).
TOLERANCE_255 = 0.01
#: (height, width) of the challenge's LR input (960x540 -> 4K): the size of a fixed-size export.
DEPLOY_INPUT = (540, 960)
#: Smallest input side a size-generic export accepts (in LR pixels).
MIN_SIDE = 8
_INSTALL_HINT = 'pip install -e ".[deploy]"'


@dataclass(frozen=True)
class DeployFile:
    """What an export wrote and how it was checked (for logs and metrics.json)."""

    path: Path
    format: str  # "onnx" or "pt2"
    opset: int | None  # ONNX only
    fixed_size: tuple[int, int] | None  # None: any size divisible by the down factor
    max_diff_255: float  # worst |exported - torch| over the check inputs, in 8-bit levels
    checked_sizes: tuple[tuple[int, int], ...]

    def describe(self) -> str:
        size = "any input size" if self.fixed_size is None else f"fixed input {self.fixed_size[1]}x{self.fixed_size[0]}"
        opset = f", opset {self.opset}" if self.opset is not None else ""
        return f"{self.path.name} ({self.format}{opset}, {size}; max diff {self.max_diff_255:.2g}/255 vs torch on builtin val images)"


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """`(onnx, onnxruntime)`, or one UserError line naming the extra to install."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise UserError(f"ONNX export needs the deploy extra ({exc.name} is not installed); run: {_INSTALL_HINT}") from None
    return onnx, onnxruntime


def onnx_available() -> bool:
    """Whether the deploy extra is installed (callers that export ONNX only when they can)."""
    try:
        require_onnx()
    except UserError:
        return False
    return True


def fixed_size_reason(model: nn.Module) -> str | None:
    """Why `model` cannot be exported for every input size (a module's `ONNX_FIXED_SIZE`), or None."""
    for module in model.modules():
        reason = getattr(module, "ONNX_FIXED_SIZE", None)
        if reason:
            return str(reason)
    return None


def real_inputs(*, multiple: int, size: tuple[int, int] | None = None, count: int = 2) -> list[Tensor]:
    """`count` builtin val images as network inputs (1x3xHxW on [0, 1]).

    Without `size`: each image's Lanczos x4 downscale (the LR a network sees), cropped to `multiple`,
    every other one cropped further so that at least two sizes are checked. With `size`: the HR image
    cropped, or mirrored out, to exactly `size` (a fixed-size export is checked at its own size)."""
    from trainers.builtin import builtin_images
    from trainers.lanczos import lanczos_downscale

    images = [img for _, img in builtin_images("val", progress=False)][:count]
    out = []
    for i, img in enumerate(images):
        if size is None:
            lr = lanczos_downscale(img, 4)
            h, w = (s // multiple * multiple for s in lr.shape[:2])
            if i % 2:
                h, w = max(multiple, h - 3 * multiple), max(multiple, w - 5 * multiple)
            arr = lr[:h, :w]
        else:
            h, w = size
            pad = ((0, max(0, h - img.shape[0])), (0, max(0, w - img.shape[1])), (0, 0))
            arr = np.pad(img, pad, mode="symmetric")[:h, :w]
        out.append(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255.0)
    return out


def _dynamic_shapes(down_factor: int, *, fixed: bool) -> tuple[dict[int, object]]:
    """The batch always free (a teacher runs on batches); unless `fixed`, height and width as free
    multiples of the down factor (the network checks divisibility), at least `MIN_SIDE` pixels: below
    that SAFM++'s pooled map takes another branch (a global max)."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=4096)
    if fixed:
        return ({0: batch},)
    low = -(-MIN_SIDE // down_factor)
    h, w = Dim("h_over_u", min=low, max=4096), Dim("w_over_u", min=low, max=4096)
    return ({0: batch, 2: h * down_factor, 3: w * down_factor} if down_factor > 1 else {0: batch, 2: h, 3: w},)


def _example(checks: Sequence[Tensor]) -> tuple[Tensor]:
    """The export's example input: a batch of 2, since torch.export specialises a size-1 dimension."""
    return (torch.cat([checks[0], checks[0]]),)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, progress lines): our log says what matters."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _plan(model: nn.Module, *, down_factor: int, input_size: tuple[int, int] | None,
          inputs: Sequence[Tensor] | None) -> tuple[nn.Module, tuple[int, int] | None, list[Tensor]]:
    model = model.eval().cpu().float()
    if fixed_size_reason(model) is not None and input_size is None:
        input_size = DEPLOY_INPUT
    if input_size is not None and (input_size[0] % down_factor or input_size[1] % down_factor):
        raise UserError(f"export input {input_size[1]}x{input_size[0]} is not divisible by the down factor {down_factor}; pass a size that is")
    checks = list(inputs) if inputs is not None else real_inputs(multiple=down_factor, size=input_size)
    return model, input_size, checks


def _worst_diff(model: nn.Module, checks: Sequence[Tensor], run: object, what: str, tolerance: float = TOLERANCE_255) -> float:
    """Largest |run(x) - model(x)| * 255 over the check inputs; raises if it exceeds `tolerance`."""
    worst = 0.0
    with torch.no_grad():
        for x in checks:
            expected = model(x).numpy()
            got = run(x)  # type: ignore[operator]
            if got.shape != expected.shape:
                raise RuntimeError(f"{what} gives shape {got.shape} for input {tuple(x.shape)}, torch {expected.shape}; not written")
            worst = max(worst, float(np.abs(got - expected).max()) * 255.0)
    if not worst <= tolerance:
        raise RuntimeError(f"{what} differs from the torch deploy model by {worst:.4g}/255 on the check images "
                           f"(tolerance {tolerance}); not written")
    return worst


def export_onnx(model: nn.Module, path: str | Path, *, down_factor: int, input_size: tuple[int, int] | None = None,
                inputs: Sequence[Tensor] | None = None, opset: int = ONNX_OPSET,
                tolerance_255: float = TOLERANCE_255) -> DeployFile:
    """Export the fused deploy `model` to ONNX at `path`, after checking it in ONNX Runtime (CPU).

    Size-generic (any H, W divisible by `down_factor`) unless the network has a fixed-size module
    (then `input_size`, default `DEPLOY_INPUT`). The graph passes `onnx.checker.check_model`, and ORT's
    output on `inputs` (default `real_inputs`) is within `tolerance_255` 8-bit levels of torch's, before
    writing (a looser one only for untrained weights, whose outputs are far outside [0, 1])."""
    onnx, ort = require_onnx()
    model, input_size, checks = _plan(model, down_factor=down_factor, input_size=input_size, inputs=inputs)
    dynamic = _dynamic_shapes(down_factor, fixed=input_size is not None)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(model, _example(checks), dynamo=True, opset_version=opset, dynamic_shapes=dynamic,
                                        input_names=["lr"], output_names=["sr"], verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter's failures are many and deep; say which network
        raise RuntimeError(f"torch.onnx could not export this network ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> np.ndarray:
        try:
            return session.run(None, {"lr": x.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - e.g. a graph the exporter specialised to one size
            raise RuntimeError(f"ONNX Runtime cannot run the export on input {tuple(x.shape)} ({str(exc).splitlines()[0]}); not written") from None

    worst = _worst_diff(model, checks, run, "the ONNX export in ONNX Runtime", tolerance_255)
    written = atomic_write(path, data)
    return DeployFile(path=written, format="onnx", opset=opset, fixed_size=input_size, max_diff_255=worst,
                      checked_sizes=tuple((int(x.shape[-2]), int(x.shape[-1])) for x in checks))


def export_program(model: nn.Module, path: str | Path, *, down_factor: int, input_size: tuple[int, int] | None = None,
                   inputs: Sequence[Tensor] | None = None) -> DeployFile:
    """Save the fused deploy `model` as a `torch.export` program (`torch.export.load(path).module()`).

    Size-generic like `export_onnx`, and fixed-size for the same networks (torch.export specialises
    SAFM++'s adaptive pool too); checked on `inputs` (default `real_inputs`) within `TOLERANCE_255`
    before writing. Replaces TorchScript, which torch deprecated."""
    model, input_size, checks = _plan(model, down_factor=down_factor, input_size=input_size, inputs=inputs)
    dynamic = _dynamic_shapes(down_factor, fixed=input_size is not None)
    try:
        with _quiet_exporter():
            program = torch.export.export(model, _example(checks), dynamic_shapes=dynamic)
    except Exception as exc:  # noqa: BLE001 - say which format failed, keep torch's reason
        raise RuntimeError(f"torch.export could not export this network ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    module = program.module()
    with torch.no_grad():
        worst = _worst_diff(model, checks, lambda x: module(x).numpy(), "the torch.export program")
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    written = atomic_write(path, buffer.getvalue())
    return DeployFile(path=written, format="pt2", opset=None, fixed_size=input_size, max_diff_255=worst,
                      checked_sizes=tuple((int(x.shape[-2]), int(x.shape[-1])) for x in checks))
