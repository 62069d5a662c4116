"""`ecb`: ECBSR's Edge-oriented Convolution Block (github.com/xindongzhang/ECBSR models/ecb.py).

Five parallel branches, summed, then the activation:
1. a 3x3 conv;
2. a 1x1 conv (in -> depth_multiplier * out) then a 3x3 conv (-> out) on the bias-padded 1x1 output;
3-5. a 1x1 conv (in -> out) then a fixed depthwise edge filter (Sobel-x, Sobel-y, Laplacian) with a
   learnable per-channel scale and bias (the 1x1 has no bias here: it would cancel, see EdgeBranch).
Fixed edge filters give the block cheap access to high frequencies, which is where SR gains live.
All branches are linear, so the deploy form is one 3x3 conv plus the activation (a `LinearBlock`:
online re-parameterization trains that conv's kernel as a function of the branches).

`bias=False` removes every bias: the convs' and the edge branches' learnable bias. The per-channel
scale of the edge branches stays; it multiplies the mask and creates no bias, so the deploy conv is
bias-free too. An identity branch (ECBSR's `with_idt`, off in its official configs) can be switched
on and, as in ECBSR, only applies when `in_ch == out_ch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.base import LinearBlock, minus_identity_, register_block, zero_
from search_space.blocks.fusion import (
    Conv,
    add_branches,
    depthwise_to_dense,
    from_conv2d,
    fuse_1x1_then_3x3,
    identity_kernel,
    pad_with_bias,
)
from search_space.blocks.rep import Conv1x1Conv3x3
from search_space.errors import UserError

__all__ = ["EDGE_MASKS", "ECBlock", "EdgeBranch"]

#: Fixed 3x3 edge filters, (row, column) indexing, applied as cross-correlation.
EDGE_MASKS: dict[str, tuple[tuple[float, ...], ...]] = {
    "sobel_x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobel_y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


class EdgeBranch(nn.Module):
    """1x1 conv (in -> out), then a depthwise `scale * mask` filter plus `bias` per channel.

    The scale/bias start small (std 1e-3, as ECBSR) so the edge branches grow in gradually. The
    mask is a buffer: it is part of the structure, not a trained weight.

    Unlike ECBSR, the 1x1 conv here has no bias: every mask sums to zero, so a per-channel constant
    added before the filter (the 1x1 bias, written into the padded ring too) cancels exactly. That
    bias would be a dead parameter with zero gradient; dropping it changes neither the function
    nor the deploy conv.
    """

    def __init__(self, in_ch: int, out_ch: int, *, kind: str, bias: bool) -> None:
        super().__init__()
        if kind not in EDGE_MASKS:
            raise ValueError(f"unknown edge filter {kind!r}; choose one of {', '.join(EDGE_MASKS)}")
        self.kind = kind
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.scale = nn.Parameter(torch.randn(out_ch, 1, 1, 1) * 1e-3)
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.randn(out_ch) * 1e-3)
        else:
            self.register_parameter("bias", None)
        mask = torch.tensor(EDGE_MASKS[kind]).expand(out_ch, 1, 3, 3).clone()
        self.register_buffer("mask", mask)

    def depthwise(self) -> Tensor:
        """The depthwise kernel (out, 1, 3, 3) this branch applies after its 1x1 conv."""
        return self.scale * self.mask

    def forward(self, x: Tensor) -> Tensor:
        padded = pad_with_bias(self.conv(x), self.conv.bias)
        return F.conv2d(padded, self.depthwise(), self.bias, groups=self.mask.shape[0])

    def equivalent(self) -> Conv:
        """The single 3x3 conv (`padding=1`) this branch equals."""
        return fuse_1x1_then_3x3(from_conv2d(self.conv), (depthwise_to_dense(self.depthwise()), self.bias))


@register_block("ecb")
class ECBlock(LinearBlock):
    """Edge-oriented Convolution Block: five linear branches (+ optional identity), then `act`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        bias: bool = True,
        act: str = "relu",
        depth_multiplier: float = 2.0,
        with_idt: bool = False,
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        mid = int(out_ch * depth_multiplier)
        if mid < 1:
            raise UserError(
                f"block {self.name!r}: depth_multiplier {depth_multiplier!r} gives a 1x1 width of {mid} "
                f"for {out_ch} output channels; use a value with out_ch * depth_multiplier >= 1"
            )
        self.depth_multiplier = depth_multiplier
        self.with_idt = bool(with_idt) and in_ch == out_ch
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        self.expand = self._expand_path(in_ch, mid, out_ch, bias=bias)
        self.edges = nn.ModuleList(EdgeBranch(in_ch, out_ch, kind=kind, bias=bias) for kind in EDGE_MASKS)

    @staticmethod
    def _expand_path(in_ch: int, mid: int, out_ch: int, *, bias: bool) -> Conv1x1Conv3x3:
        """Branch 2 (`equivalent()` gives its 3x3 conv, `last` its final conv); `rep_edge` overrides it."""
        return Conv1x1Conv3x3(in_ch, mid, out_ch, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        y = self.conv3(x) + self.expand(x)
        for edge in self.edges:
            y = y + edge(x)
        if self.with_idt:
            y = y + x
        return y

    def fused_kernel(self) -> Conv:
        branches = [from_conv2d(self.conv3), self.expand.equivalent()]
        branches += [edge.equivalent() for edge in self.edges]
        if self.with_idt:
            weight = self.conv3.weight
            branches.append((identity_kernel(self.out_ch, dtype=weight.dtype, device=weight.device), None))
        return add_branches(*branches)

    def zero_output_(self) -> None:
        # Last stage of each branch: the 3x3, the expand path's last conv, each edge filter's scale and bias.
        zero_(self.conv3.weight, self.conv3.bias, self.expand.last.weight, self.expand.last.bias)
        for edge in self.edges:
            zero_(edge.scale, edge.bias)
        if self.with_idt:
            minus_identity_(self.conv3)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, depth_multiplier={self.depth_multiplier}, with_idt={self.with_idt}"
