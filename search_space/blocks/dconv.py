"""`dconv`: the decoupled convolution of team USTC Noah (survey Sec. 3.9), as we read the text.

What the survey says (Sec. 3.9, "Efficient Real-Time Image Super-Resolution Via Decouple
Convolution"), and how each phrase maps to a branch here:

- "refined the existing vanilla convolution unit by performing feature decoupling within local
  regions": a plain 3x3 conv stays as one branch, the other branches decouple the same 3x3 window
  into differences and sums of pixels.
- "introduce gradient (sub) operators ... differential operations ... to preemptively capture
  horizontal, vertical, and central-surrounding directions": three difference branches,
    * central:    `y(p) = sum_k w_k (x(p+k) - x(p))`                    (neighbour minus centre),
    * horizontal: `y(p) = sum_r a_r (x(p+(r,-1)) - x(p+(r,+1)))`         (left minus right, per row),
    * vertical:   `y(p) = sum_c a_c (x(p+(-1,c)) - x(p+(+1,c)))`         (top minus bottom, per column).
- "incorporated an aggregation (add) operation into the convolution to boost the network's
  sensitivity to statistical features": the add counterpart of the central difference,
    * aggregation: `y(p) = sum_k w_k (x(p+k) + x(p))`                    (neighbour plus centre).
- "decoupled convolutions with reparameterization ... Prior to inference, it is necessary to perform
  an equivalent transformation of the parameters": every branch is linear in `x` and only uses taps
  inside the 3x3 window, so the sum folds into one 3x3 conv (reference 1.0 P-pd and P-par; 1.9).
  The fold is exact with zero padding, borders included: a tap outside the image is 0 in both forms.

Each branch has its own learnable weights (and bias when `bias=True`); the deploy bias is their sum.
The training form computes every branch from explicit pixel differences/sums (not from the folded
kernel), so the fusion test compares two independent computations.

Approximate: no code or factsheet for DConv is public (reference 1.9), so the exact weighting of
each operator is our reading of the text above. Not implemented here: the kernel-4, stride-2 DConv the
team uses to downsample; downsampling belongs to the network template (strided conv), and body blocks
are 3x3 stride-1 by contract.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.base import Block, register_block, zero_
from search_space.blocks.fusion import (
    add_branches,
    fold_directional_difference,
    fold_pixel_difference,
    from_conv2d,
    to_conv2d,
)

__all__ = ["DecoupledConvBlock"]


def _kaiming(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _optional_bias(out_ch: int, fan_in: int, enabled: bool) -> nn.Parameter | None:
    return _kaiming((out_ch,), fan_in) if enabled else None


@register_block("dconv")
class DecoupledConvBlock(Block):
    """Vanilla 3x3 + central/horizontal/vertical difference + aggregation branches, then `act`."""

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        fan3, fan1 = 9 * in_ch, 3 * in_ch
        self.vanilla = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        self.central_weight = _kaiming((out_ch, in_ch, 3, 3), fan3)
        self.central_bias = _optional_bias(out_ch, fan3, bias)
        self.horizontal_weight = _kaiming((out_ch, in_ch, 3), fan1)
        self.horizontal_bias = _optional_bias(out_ch, fan1, bias)
        self.vertical_weight = _kaiming((out_ch, in_ch, 3), fan1)
        self.vertical_bias = _optional_bias(out_ch, fan1, bias)
        self.aggregate_weight = _kaiming((out_ch, in_ch, 3, 3), fan3)
        self.aggregate_bias = _optional_bias(out_ch, fan3, bias)

    def _centre_sum(self, x: Tensor, weight: Tensor, bias: Tensor | None, *, sign: float) -> Tensor:
        # sum_k w_k x(p+k) + sign * (sum_k w_k) x(p): the neighbour term is a 3x3 conv, the centre
        # term a 1x1 conv with the summed weights.
        neighbours = F.conv2d(x, weight, bias, padding=1)
        return neighbours + sign * F.conv2d(x, weight.sum(dim=(2, 3), keepdim=True))

    def _horizontal(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (1, 1, 0, 0))
        diff = padded[..., :, :-2] - padded[..., :, 2:]  # x(left) - x(right) at every pixel
        return F.conv2d(diff, self.horizontal_weight.unsqueeze(-1), self.horizontal_bias, padding=(1, 0))

    def _vertical(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (0, 0, 1, 1))
        diff = padded[..., :-2, :] - padded[..., 2:, :]  # x(top) - x(bottom) at every pixel
        return F.conv2d(diff, self.vertical_weight.unsqueeze(-2), self.vertical_bias, padding=(0, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.vanilla(x)
        y = y + self._centre_sum(x, self.central_weight, self.central_bias, sign=-1.0)
        y = y + self._horizontal(x) + self._vertical(x)
        y = y + self._centre_sum(x, self.aggregate_weight, self.aggregate_bias, sign=1.0)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        fused = add_branches(
            from_conv2d(self.vanilla),
            (fold_pixel_difference(self.central_weight, sign=-1.0), self.central_bias),
            (
                fold_directional_difference(self.horizontal_weight, direction="horizontal"),
                self.horizontal_bias,
            ),
            (fold_directional_difference(self.vertical_weight, direction="vertical"), self.vertical_bias),
            (fold_pixel_difference(self.aggregate_weight, sign=1.0), self.aggregate_bias),
        )
        return nn.Sequential(to_conv2d(fused), self._deploy_act())

    def zero_output_(self) -> None:
        # Every branch is one weight (and bias) applied to differences/sums of pixels.
        zero_(
            self.vanilla.weight,
            self.vanilla.bias,
            self.central_weight,
            self.central_bias,
            self.horizontal_weight,
            self.horizontal_bias,
            self.vertical_weight,
            self.vertical_bias,
            self.aggregate_weight,
            self.aggregate_bias,
        )
