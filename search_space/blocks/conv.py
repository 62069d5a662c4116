"""`conv`: a plain 3x3 convolution plus activation; its training and deploy forms are the same."""

from __future__ import annotations

import torch
from torch import nn

from search_space.blocks.base import LinearBlock, register_block, zero_
from search_space.blocks.fusion import Conv, from_conv2d

__all__ = ["PlainConv"]


@register_block("conv")
class PlainConv(LinearBlock):
    """Baseline block: what every re-parameterizable block must beat at equal deploy cost.

    A `LinearBlock` with one branch, so that code merging blocks' kernels (the dual stream) can
    read every single-conv block's kernel the same way; online it runs the very same conv.
    """

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def fused_kernel(self) -> Conv:
        return from_conv2d(self.conv)

    def zero_output_(self) -> None:
        zero_(self.conv.weight, self.conv.bias)
