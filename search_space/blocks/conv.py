"""`conv`: a plain 3x3 convolution plus activation; its training and deploy forms are the same."""

from __future__ import annotations

import copy

import torch
from torch import nn

from search_space.blocks.base import Block, register_block, zero_

__all__ = ["PlainConv"]


@register_block("conv")
class PlainConv(Block):
    """Baseline block: what every re-parameterizable block must beat at equal deploy cost."""

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    def fuse(self) -> nn.Module:
        return nn.Sequential(copy.deepcopy(self.conv), self._deploy_act())

    def zero_output_(self) -> None:
        zero_(self.conv.weight, self.conv.bias)
