"""The one rule for `--device auto|cpu|cuda`, shared by `nas.run`, `nas.latency` and `nas.calibrate`.

Why one rule: the three commands used to decide "auto" each in their own way. Here: an explicit
`cpu` or `cuda` wins; `auto` is the kind a resumed run recorded (so a run is never resumed on another
kind of device by accident), else `cuda` where there is one, else `cpu`; `cuda` where there is none
is a `UserError` that names the fix.
"""

from __future__ import annotations

from typing import Literal

from search_space.errors import UserError

__all__ = ["DEVICE_CHOICES", "DeviceKind", "choose_device"]

DeviceKind = Literal["cpu", "cuda"]
#: What `--device` accepts on every command.
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(requested: str, *, has_cuda: bool, recorded: str | None = None, where: str = "this machine",
                  fix: str = "") -> DeviceKind:
    """`cpu` or `cuda` for `--device requested` (see the module docstring).

    `has_cuda`: whether the place that will run the work has a GPU; `recorded`: the device kind a
    resumed run stored (None for a new run); `where` and `fix` word the error for that place."""
    if requested not in DEVICE_CHOICES:
        raise UserError(f"--device {requested}: use one of {', '.join(DEVICE_CHOICES)}")
    if requested != "auto":
        cuda = requested == "cuda"
    elif recorded in ("cpu", "cuda"):
        cuda = recorded == "cuda"
    else:
        cuda = has_cuda
    if cuda and not has_cuda:
        raise UserError(f"--device cuda: {where} has no usable CUDA device; {fix}use --device cpu")
    return "cuda" if cuda else "cpu"
