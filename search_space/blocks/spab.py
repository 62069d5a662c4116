"""`spab` / `spab_noatt`: SPAN's swift parameter-free attention block (reference 1.8, 1.10), and
`conv3xc`, SPAN's re-parameterizable conv on its own.

Training form:
    out1 = c1(x); out2 = c2(act(out1)); out3 = c3(act(out2))
    spab:       out = (out3 + x) * (sigmoid(out3) - 0.5)
    spab_noatt: out = out3 + x                       (the "attention off" ablation)
where each `c` is a Conv3XC: 1x1 (C -> gC) -> 3x3 (gC -> gC, unpadded) -> 1x1 (gC -> C) on the
zero-padded input, plus a parallel 1x1 skip. Zero-padding `x` *before* the first 1x1 makes the
intermediate ring equal to the 1x1 bias, which is what makes the fused 3x3 exact on the border
(the alternative to `pad_with_bias`, reference 1.0 P-13).

The attention is parameter-free and odd-symmetric; the activations and the attention sit between
the convs, so fusion stops there: the deploy form (`SPABDeploy`) keeps three 3x3 convs and the
non-linear glue. Online re-parameterization fuses each Conv3XC on its own (its linear part), so a
SPAB trains as three 3x3 convs too. The block's `act` is the in-block activation (SiLU in SPAN, the default here);
nothing is applied after the block. `in_ch == out_ch` is required by the residual.

`bias=False` removes every bias of the Conv3XC convs (SPAN always keeps them), so the deploy
convs are bias-free as well.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.base import (
    Block,
    LinearBlock,
    OnlineReparam,
    check_width,
    make_activation,
    register_block,
    zero_,
)
from search_space.blocks.fusion import (
    Conv,
    add_branches,
    from_conv2d,
    fuse_1x1_then_3x3,
    fuse_3x3_then_1x1,
    to_conv2d,
)

__all__ = ["Conv3XC", "Conv3XCBlock", "SPABDeploy", "SPABlock", "SPABlockNoAttention"]


class Conv3XC(OnlineReparam, nn.Module):
    """SPAN's re-parameterizable conv: `reduce(conv3(expand(pad0(x)))) + skip(x)`, gain `g`.

    With online re-parameterization on, training runs the one 3x3 conv it equals (`fused_kernel()`).
    """

    def __init__(self, in_ch: int, out_ch: int, *, gain: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_ch, in_ch * gain, 1, bias=bias)
        self.conv = nn.Conv2d(in_ch * gain, out_ch * gain, 3, padding=0, bias=bias)
        self.reduce = nn.Conv2d(out_ch * gain, out_ch, 1, bias=bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.runs_online():
            weight, bias = self.fused_kernel()
            return F.conv2d(x, weight, bias, padding=1)
        return self.forward_branches(x)

    def forward_branches(self, x: Tensor) -> Tensor:
        """The multi-branch form."""
        return self.reduce(self.conv(self.expand(F.pad(x, (1, 1, 1, 1))))) + self.skip(x)

    def fused_kernel(self) -> Conv:
        """The single 3x3 conv (`padding=1`) this module equals (differentiable)."""
        main = fuse_1x1_then_3x3(from_conv2d(self.expand), from_conv2d(self.conv))
        main = fuse_3x3_then_1x1(main, from_conv2d(self.reduce))
        return add_branches(main, from_conv2d(self.skip))


@register_block("conv3xc")
class Conv3XCBlock(LinearBlock):
    """SPAN's Conv3XC as a block of its own (then `act`): SPAN trains its head (`conv_1`, 3 -> C) and
    the conv before its feature concatenation (`conv_2`) this way (hongyuanyu/SPAN span_arch.py), so
    it is the `end_block` of the `xiaomimm` preset. Fuses into one 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu", gain: int = 2) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "gain", gain)
        self.gain = gain
        self.conv = Conv3XC(in_ch, out_ch, gain=gain, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.conv.forward_branches(x)

    def fused_kernel(self) -> Conv:
        return self.conv.fused_kernel()

    def zero_output_(self) -> None:
        # Both branches end in a 1x1 (reduce, skip): zero them and the sum is exactly 0.
        zero_(self.conv.reduce.weight, self.conv.reduce.bias, self.conv.skip.weight, self.conv.skip.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gain={self.gain}"


def _spab_output(out3: Tensor, x: Tensor, *, attention: bool) -> Tensor:
    if not attention:
        return out3 + x
    return (out3 + x) * (torch.sigmoid(out3) - 0.5)


class SPABDeploy(nn.Module):
    """Deploy form of a SPAB: three plain 3x3 convs, two activations and the attention glue."""

    def __init__(
        self,
        convs: tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d],
        acts: tuple[nn.Module, nn.Module],
        *,
        attention: bool,
    ) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = convs
        self.act1, self.act2 = acts
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_inner(x)[0]

    def forward_with_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(block output, act(c1(x))), as `SPABlock.forward_with_inner`."""
        inner = self.act1(self.c1(x))
        out3 = self.c3(self.act2(self.c2(inner)))
        return _spab_output(out3, x, attention=self.attention), inner

    def extra_repr(self) -> str:
        return f"attention={self.attention}"


@register_block("spab")
class SPABlock(Block):
    """SPAN block with parameter-free attention `sigmoid(out3) - 0.5`."""

    supports_channel_change: ClassVar[bool] = False
    has_inner_tap: ClassVar[bool] = True
    attention: ClassVar[bool] = True

    def __init__(
        self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "silu", gain: int = 2
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "gain", gain)
        self.gain = gain
        self.c1 = Conv3XC(in_ch, out_ch, gain=gain, bias=bias)
        self.c2 = Conv3XC(out_ch, out_ch, gain=gain, bias=bias)
        self.c3 = Conv3XC(out_ch, out_ch, gain=gain, bias=bias)
        # `self.act` (from Block) follows c1; a second instance follows c2 so PReLU slopes are per use.
        self.act2 = make_activation(act, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_inner(x)[0]

    def forward_with_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(block output, act(c1(x))): SPAN concatenates the latter from its last block.

        SPAN's SPAB returns `out1`, c1's output, but its `nn.SiLU(inplace=True)` has overwritten that
        tensor with SiLU(out1) by then, so the feature SPAN's trained weights see is the activated one
        (hongyuanyu/SPAN span_arch.py; tests/search_space/test_span_reference.py shows the difference)."""
        inner = self.act(self.c1(x))
        out3 = self.c3(self.act2(self.c2(inner)))
        return _spab_output(out3, x, attention=self.attention), inner

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        c1, c2, c3 = (to_conv2d(conv.fused_kernel()) for conv in (self.c1, self.c2, self.c3))
        acts = (self._deploy_act(), copy.deepcopy(self.act2))
        return SPABDeploy((c1, c2, c3), acts, attention=self.attention)

    def zero_output_(self) -> None:
        # out3 = 0 makes the attention factor sigmoid(0) - 0.5 exactly 0, so (0 + x) * 0 = 0.
        if not self.can_zero_output:
            raise NotImplementedError(
                f"block {self.name!r} adds its input after non-linear convs (out3 + x); no weights make "
                "its output zero, so it cannot be a network's last layer"
            )
        zero_(self.c3.reduce.weight, self.c3.reduce.bias, self.c3.skip.weight, self.c3.skip.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gain={self.gain}, attention={self.attention}"


@register_block("spab_noatt")
class SPABlockNoAttention(SPABlock):
    """SPAB without the attention (`out3 + x`): the "SPAB attention on vs off" ablation."""

    attention: ClassVar[bool] = False
    can_zero_output: ClassVar[bool] = False
