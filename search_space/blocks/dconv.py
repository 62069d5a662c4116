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
The multi-branch training form computes every branch from explicit pixel differences/sums (not
from the folded kernel), so the fusion test compares two independent computations; with online
re-parameterization on, training runs the folded kernel instead (`fused_kernel()`, shared with
`fuse()`).

Approximate: no code or factsheet for DConv is public (reference 1.9), so the exact weighting of
each operator is our reading of the text above.

`DecoupledStridedConv` is the team's kernel-4, stride-2 DConv ("a single DecoupleConv (DConv) with a
kernel size of 4 and a stride of 2 to form the feature mapping layer", Fig. 16): the same five
branches on a 4x4 window, folded into one 4x4 stride-2 conv. It is a plain module, not a registered
block (blocks are 3x3 stride-1 by contract); its choices are in its docstring.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.base import LinearBlock, OnlineReparam, make_activation, register_block, zero_
from search_space.blocks.fusion import (
    Conv,
    add_bias,
    centre_taps,
    fold_directional_difference,
    fold_pixel_difference,
)
from search_space.errors import UserError

__all__ = ["DecoupledConvBlock", "DecoupledStridedConv"]

#: The difference/aggregation branches' tensors, in creation order (the order of the random draws).
_BRANCH_TENSORS = (
    "central_weight",
    "central_bias",
    "horizontal_weight",
    "horizontal_bias",
    "vertical_weight",
    "vertical_bias",
    "aggregate_weight",
    "aggregate_bias",
)


def _kaiming(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _optional_bias(out_ch: int, fan_in: int, enabled: bool) -> nn.Parameter | None:
    return _kaiming((out_ch,), fan_in) if enabled else None


def _add_branch_parameters(module: nn.Module, in_ch: int, out_ch: int, kernel: int, bias: bool) -> None:
    """Give `module` the `_BRANCH_TENSORS`: k x k central/aggregate weights, one per row/column for the
    directional ones, each with its own bias (None when `bias` is False)."""
    fan_window, fan_line = kernel * kernel * in_ch, kernel * in_ch
    module.central_weight = _kaiming((out_ch, in_ch, kernel, kernel), fan_window)
    module.central_bias = _optional_bias(out_ch, fan_window, bias)
    module.horizontal_weight = _kaiming((out_ch, in_ch, kernel), fan_line)
    module.horizontal_bias = _optional_bias(out_ch, fan_line, bias)
    module.vertical_weight = _kaiming((out_ch, in_ch, kernel), fan_line)
    module.vertical_bias = _optional_bias(out_ch, fan_line, bias)
    module.aggregate_weight = _kaiming((out_ch, in_ch, kernel, kernel), fan_window)
    module.aggregate_bias = _optional_bias(out_ch, fan_window, bias)


def _folded_kernel(module: nn.Module) -> Conv:
    """The five branches of a decoupled conv summed into one `(k x k kernel, bias)` (P-pd, P-par, any
    kernel size). Differentiable: the online forward and `fuse()` both use it."""
    branches = [
        (module.vanilla.weight, module.vanilla.bias),
        (fold_pixel_difference(module.central_weight, sign=-1.0), module.central_bias),
        (fold_directional_difference(module.horizontal_weight, direction="horizontal"), module.horizontal_bias),
        (fold_directional_difference(module.vertical_weight, direction="vertical"), module.vertical_bias),
        (fold_pixel_difference(module.aggregate_weight, sign=1.0), module.aggregate_bias),
    ]
    weight = branches[0][0]
    bias = branches[0][1]
    for branch_weight, branch_bias in branches[1:]:
        weight = weight + branch_weight
        bias = add_bias(bias, branch_bias)
    return weight, bias


def _zero_branches(module: nn.Module) -> None:
    # Every branch is one weight (and bias) applied to differences/sums of pixels.
    zero_(module.vanilla.weight, module.vanilla.bias, *(getattr(module, name) for name in _BRANCH_TENSORS))


@register_block("dconv")
class DecoupledConvBlock(LinearBlock):
    """Vanilla 3x3 + central/horizontal/vertical difference + aggregation branches, then `act`."""

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        self.vanilla = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        _add_branch_parameters(self, in_ch, out_ch, 3, bias)

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

    def forward_branches(self, x: Tensor) -> Tensor:
        y = self.vanilla(x)
        y = y + self._centre_sum(x, self.central_weight, self.central_bias, sign=-1.0)
        y = y + self._horizontal(x) + self._vertical(x)
        return y + self._centre_sum(x, self.aggregate_weight, self.aggregate_bias, sign=1.0)

    def fused_kernel(self) -> Conv:
        return _folded_kernel(self)

    def zero_output_(self) -> None:
        _zero_branches(self)


class DecoupledStridedConv(OnlineReparam, nn.Module):
    """USTC Noah's strided DConv: five decoupled branches on a `kernel` x `kernel` window, stride `stride`.

    Default 4x4, stride 2, padding 1: an even H x W input gives exactly H/2 x W/2 (window rows
    2i-1 .. 2i+2 of the zero-padded input). Padding is `(kernel - stride) / 2`, so the output is
    H/stride x W/stride whenever the stride divides H and W. With the window's taps `x_{u,v}`
    (zero outside the image) and centre `c` = the mean of its central 2x2 taps (the central tap for
    an odd kernel), the branches are, each with its own weights and bias:

    - vanilla:     `sum_{u,v} w_{u,v} x_{u,v}`;
    - central:     `sum_{u,v} w_{u,v} (x_{u,v} - c)`            (surround minus centre);
    - horizontal:  `sum_u a_u (left half of row u - right half of row u)`, halves summed;
    - vertical:    `sum_v a_v (top half of column v - bottom half of column v)`;
    - aggregation: `sum_{u,v} w_{u,v} (x_{u,v} + c)`.

    Summed, then `act`. Our choices, since the team's code is not public: the 2x2-mean centre (a 4x4
    window has no centre pixel; at stride 2 it is exactly the input's 2x2 block the output pixel
    replaces), one weight per row/column for the halves (the 3x3 `dconv` rule, left column minus right
    column, is the k = 3 case; a weight per mirrored pair would be the richer alternative). At k = 3,
    stride 1 this module computes what `dconv` computes with the same weights.

    The multi-branch training form reads every branch from explicit differences of the zero-padded
    window (`F.unfold`), not from the folded kernel. `fuse()` folds them into one conv of the same
    geometry (`fused_kernel()`); with online re-parameterization on, training runs that conv.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int = 4,
        stride: int = 2,
        bias: bool = True,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise UserError(f"DecoupledStridedConv: channels must be >= 1, got {in_ch}->{out_ch}")
        if kernel < 2 or stride < 1 or kernel < stride or (kernel - stride) % 2:
            raise UserError(
                f"DecoupledStridedConv: kernel {kernel}, stride {stride} has no symmetric padding that gives "
                "H/stride x W/stride; use kernel >= stride, kernel >= 2 and an even kernel - stride (e.g. 4, 2)"
            )
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel, self.stride, self.padding = kernel, stride, (kernel - stride) // 2
        self.bias = bias
        self.act_name = act
        self.vanilla = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=self.padding, bias=bias)
        _add_branch_parameters(self, in_ch, out_ch, kernel, bias)
        self.act = make_activation(act, out_ch)

    def _windows(self, x: Tensor) -> Tensor:
        """(N, in, k, k, L): every window's taps, zero outside the image (the deploy conv's padding)."""
        windows = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)
        return windows.view(x.shape[0], self.in_ch, self.kernel, self.kernel, -1)

    def forward(self, x: Tensor) -> Tensor:
        if self.runs_online():
            weight, bias = self.fused_kernel()
            return self.act(F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding))
        return self.act(self.forward_branches(x))

    def fused_kernel(self) -> Conv:
        """`(kernel x kernel weight, bias or None)` of the one strided conv the branches sum to."""
        return _folded_kernel(self)

    def forward_branches(self, x: Tensor) -> Tensor:
        """The multi-branch form, before the activation."""
        height, width = (
            (size + 2 * self.padding - self.kernel) // self.stride + 1 for size in x.shape[-2:]
        )
        taps = self._windows(x)
        centre = taps[:, :, centre_taps(self.kernel), centre_taps(self.kernel)].mean(dim=(2, 3))
        centre = centre[:, :, None, None]
        half = self.kernel // 2  # taps are (N, in, row u, column v, L)
        left_minus_right = taps[:, :, :, :half].sum(dim=3) - taps[:, :, :, -half:].sum(dim=3)  # per row u
        top_minus_bottom = taps[:, :, :half].sum(dim=2) - taps[:, :, -half:].sum(dim=2)  # per column v
        y = torch.einsum("oiuv,niuvl->nol", self.central_weight, taps - centre)
        y = y + torch.einsum("oiu,niul->nol", self.horizontal_weight, left_minus_right)
        y = y + torch.einsum("oiv,nivl->nol", self.vertical_weight, top_minus_bottom)
        y = y + torch.einsum("oiuv,niuvl->nol", self.aggregate_weight, taps + centre)
        for branch_bias in (self.central_bias, self.horizontal_bias, self.vertical_bias, self.aggregate_bias):
            if branch_bias is not None:
                y = y + branch_bias[:, None]
        return y.view(x.shape[0], self.out_ch, height, width) + self.vanilla(x)

    @torch.no_grad()
    def fuse(self) -> nn.Sequential:
        """`nn.Sequential(nn.Conv2d(in, out, kernel, stride, padding, bias=bias), act)`: fresh tensors."""
        weight, bias = self.fused_kernel()
        conv = nn.Conv2d(
            self.in_ch,
            self.out_ch,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias,
            dtype=weight.dtype,
            device=weight.device,
        )
        conv.weight.copy_(weight)
        if conv.bias is not None:
            assert bias is not None
            conv.bias.copy_(bias)
        return nn.Sequential(conv, copy.deepcopy(self.act))

    def zero_output_(self) -> None:
        """Zero every branch's weight and bias: the output is exactly 0, as `Block.zero_output_()`."""
        _zero_branches(self)

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}->{self.out_ch}, kernel={self.kernel}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias}, act={self.act_name}"
        )
