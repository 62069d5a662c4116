"""MACs and parameters of an architecture's deploy model.

What is counted (the definition used everywhere in this project, and in DESIGN.md's preset
table): MACs = the multiply-accumulates of the convolutions, sum over convs of
output pixels x Cin/groups x Cout x k^2, bias excluded. Elementwise work (activations, additions,
SPAB's attention, pixel (un)shuffle, the nearest/bilinear anchors) is not counted. That makes the
count exactly half of `torch.utils.flop_counter.FlopCounterMode`'s total, which counts only
convolutions/matmuls at 2 FLOPs per MAC; the tests check this equality on every preset.

thop (package `ultralytics-thop`, imported lazily) is the counter. Measured on the installed
2.2.3: its Conv2d rule is the formula above; it already counts ReLU, LeakyReLU, Identity,
PixelShuffle, PixelUnshuffle and nn.Sequential as 0; but it charges PReLU 1 op per element (in eval
mode) and has no rule for GELU, SiLU or our own container modules (which `report_missing` lists).
`mac_rules(model)` gives thop a rule for every such module type: 0 for parameter-free modules and
for containers (their convs are counted by their children's rules). A module that holds its own
parameters (or buffers, e.g. fixed filter taps) and has no rule is an error, because it could be
hiding a convolution.

Anchors (global residuals): nearest/bilinear call `F.interpolate` inside `UpsampleResidual`
(rule 0, so 0 MACs; thop's `nn.Upsample` rule, which would charge bilinear 11 ops per output
element, is never involved; bilinear written as a grouped 3x3 conv would be 0.22 GMACs at
540x960). `lanczos` and `linear` are plain `nn.Conv2d` children (thop's conv rule divides Cin by
groups, so the grouped Lanczos convs are right): at 540x960 lanczos costs
518,400 x (12 + 48) x 7 = 0.218 GMACs and no parameters (its taps are buffers), linear
518,400 x 3 x 48 x 49 = 3.66 GMACs and 7,056 weights (+48 biases); `fitted3/5/7` are plain convs
too (0.67 / 1.87 / 3.66 GMACs) and their frozen filters count as parameters (3 x 48 x K^2 + 48:
they are fitted to data and shipped like weights). FlopCounterMode, for its part,
counts only convolutions and matrix products (no activations, interpolation or shuffles).

Speed: the deploy model is profiled on a tiny input of 2 x 3 cells of u x u pixels and the count is
scaled by the number of cells (except for body blocks whose cost does not scale with the area,
`Block.cost_scales_with_area` False: RepViT's squeeze-excite, SAFM++'s pooled branch; those are
profiled at the real input size, a forward pass at 540x960 LR). That is exact, not an estimate: every stage of the template runs at
H/u x W/u times a fixed factor (1, u^2, 16u^2; the anchors' convs run at H x W) with same-size
padding, so each conv's MACs are a whole multiple of the cell count (`tests/search_space/test_cost.py`
checks it against direct counts).
No 4K forward pass is ever run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_space.arch import ArchConfig
from search_space.blocks import get_block
from search_space.errors import UserError
from search_space.network import build, deploy, fitted_anchors

__all__ = ["DEFAULT_HW", "Cost", "cost", "mac_rules", "profile_macs"]

#: The challenge input (height, width): 540p LR for a 4K output.
DEFAULT_HW: tuple[int, int] = (540, 960)

# Cells of u x u pixels in the profiling input: 2 x 3 rather than 1 x 1 so that height and width
# differ (a swapped axis would show up) and no feature map is a single pixel.
_CELLS_HW: tuple[int, int] = (2, 3)


@dataclass(frozen=True)
class Cost:
    """Deploy-model cost: `macs` (conv multiply-accumulates per image) and `params` (all parameters)."""

    macs: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, int]:
        return {"macs": self.macs, "params": self.params}


def _zero_rule(module: nn.Module, inputs: Any, output: Any) -> None:
    """thop rule for modules that do no convolution of their own."""
    module.total_ops += 0


def _has_builtin_rule(module_type: type, builtin: dict[type, Callable]) -> bool:
    return any(t in builtin for t in module_type.__mro__)


def mac_rules(model: nn.Module) -> dict[type, Callable]:
    """thop `custom_ops` that make its count the conv-only MACs of `model` (see the module docstring).

    Raises RuntimeError for a module type that holds parameters or buffers but has no rule: such a
    module could compute a convolution functionally, and counting it as 0 would be silently wrong.
    """
    from thop.profile import register_hooks  # noqa: PLC0415  (thop is optional at import time)

    rules: dict[type, Callable] = {nn.PReLU: _zero_rule}  # thop charges 1 op/element; we count convs only
    for module in model.modules():
        kind = type(module)
        if kind in rules or _has_builtin_rule(kind, register_hooks):
            continue
        own_tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if own_tensors:
            raise RuntimeError(
                f"no MAC rule for {kind.__qualname__}, which holds parameters or buffers of its own; "
                "give it a rule in search_space.cost.mac_rules or make its convs nn.Conv2d children"
            )
        rules[kind] = _zero_rule
    return rules


def profile_macs(model: nn.Module, *, hw: tuple[int, int]) -> int:
    """Conv MACs of one forward pass of `model` on a (1, 3, *hw) input, counted directly by thop."""
    import thop  # noqa: PLC0415

    param = next(model.parameters(), None)
    like = param if param is not None else torch.zeros(())
    x = torch.zeros(1, 3, *hw, dtype=like.dtype, device=like.device)
    macs, _ = thop.profile(model, inputs=(x,), custom_ops=mac_rules(model), verbose=False)
    if macs != int(macs):
        raise RuntimeError(f"thop returned a fractional MAC count {macs!r}")
    return int(macs)


def _check_hw(hw: object, down_factor: int) -> tuple[int, int]:
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw)
    ):
        raise UserError(f"hw must be (height, width) in pixels, two integers >= 1; got {hw!r}")
    h, w = hw
    if h % down_factor or w % down_factor:
        raise UserError(
            f"input size {h}x{w} is not divisible by down_factor {down_factor}; "
            f"use a multiple of {down_factor} (540x960 works for every u)"
        )
    return h, w


@functools.lru_cache(maxsize=1024)
def _cost(arch: ArchConfig, hw: tuple[int, int]) -> Cost:
    u = arch.down_factor
    h, w = _check_hw(hw, u)
    model = deploy(build(arch))
    # A fitted anchor's filter is fitted to data, stored and shipped like learned weights (only not by
    # the optimizer), so it counts; the Lanczos anchor's taps are constants and do not.
    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for anchor in fitted_anchors(model) for b in anchor.buffers())
    if not get_block(arch.block).cost_scales_with_area and arch.blocks:
        # A squeeze-excite or a pooling to a fraction of the size: profile the real input.
        return Cost(macs=profile_macs(model, hw=(h, w)), params=params)
    cells_h, cells_w = _CELLS_HW
    small = profile_macs(model, hw=(cells_h * u, cells_w * u))
    per_cell, remainder = divmod(small, cells_h * cells_w)
    if remainder:
        raise RuntimeError(f"{arch.summary()}: MACs {small} are not a whole multiple of the cell count")
    return Cost(macs=per_cell * (h // u) * (w // u), params=params)


def cost(arch: ArchConfig, hw: tuple[int, int] = DEFAULT_HW) -> Cost:
    """MACs and params of `arch`'s deploy model for one (1, 3, *hw) input; cached per (arch, hw)."""
    if not isinstance(arch, ArchConfig):
        raise TypeError(f"cost() needs an ArchConfig, got {type(arch).__name__}")
    hw = tuple(hw) if isinstance(hw, list) else hw
    _check_hw(hw, arch.down_factor)
    return _cost(arch, hw)
