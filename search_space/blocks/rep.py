"""RepVGG-family blocks without BatchNorm: `rep`, `rep_expand` (Lanczos++ style), `rep_casr` (CASR).

All three are linear sums of conv chains during training and one 3x3 conv (+ activation) at deploy
(`LinearBlock`: with online re-parameterization on, training runs that one conv too).
They are BN-free, as in the SR variants (CASR, RVSR, ECBSR), so the `bias` flag controls every
bias of the training form and of the deploy conv. Code: DingXiaoH/RepVGG repvgg.py, rlghksdbs/CASR source/models/RepConv_block.py.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from search_space.blocks.base import LinearBlock, check_width, minus_identity_, register_block, zero_
from search_space.blocks.fusion import (
    Conv,
    add_branches,
    from_conv2d,
    fuse_1x1_then_3x3,
    fuse_3x3_then_1x1,
    identity_kernel,
    pad_with_bias,
)

__all__ = ["Conv1x1Conv3x3", "RepBlock", "RepCASRBlock", "RepExpandBlock"]


class Conv1x1Conv3x3(nn.Module):
    """A 1x1 conv (in -> mid) then an unpadded 3x3 conv (mid -> out) on the bias-padded 1x1 output.

    Padding the intermediate with the 1x1 bias (not zeros) is what makes the fused 3x3 exact on the
    border ring (reference 1.0, P-13). Shared by `rep_expand` and `ecb`.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, *, bias: bool) -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_ch, mid_ch, 1, bias=bias)
        self.conv = nn.Conv2d(mid_ch, out_ch, 3, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(pad_with_bias(self.expand(x), self.expand.bias))

    def equivalent(self) -> Conv:
        """The single 3x3 conv (`padding=1`) this branch equals."""
        return fuse_1x1_then_3x3(from_conv2d(self.expand), from_conv2d(self.conv))

    @property
    def last(self) -> nn.Conv2d:
        """The branch's final conv: zeroing it (weight and bias) silences the branch."""
        return self.conv


@register_block("rep")
class RepBlock(LinearBlock):
    """RepVGG without BN: `act(conv3x3(x) + conv1x1(x) + shortcut(x))`.

    The shortcut is the identity when `in_ch == out_ch`, otherwise a 1x1 conv (CASR's `conv1_res`),
    so the block can also change width (head/tail layers). The identity carries no bias.
    """

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
        self.shortcut = None if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.conv3(x) + self.conv1(x) + skip

    def fused_kernel(self) -> Conv:
        weight = self.conv3.weight
        if self.shortcut is None:
            skip: Conv = (identity_kernel(self.out_ch, dtype=weight.dtype, device=weight.device), None)
        else:
            skip = from_conv2d(self.shortcut)
        return add_branches(from_conv2d(self.conv3), from_conv2d(self.conv1), skip)

    def zero_output_(self) -> None:
        zero_(self.conv3.weight, self.conv3.bias, self.conv1.weight, self.conv1.bias)
        if self.shortcut is None:
            minus_identity_(self.conv1)  # conv1(x) = -x cancels the identity shortcut
        else:
            zero_(self.shortcut.weight, self.shortcut.bias)


@register_block("rep_expand")
class RepExpandBlock(LinearBlock):
    """Lanczos++ RepBlock: `act(reduce1x1(conv3x3(expand1x1(x))) + shortcut1x1(x))`.

    The 1x1 expands `in_ch -> expand * in_ch` (4x in the survey, Sec. 3.2), the 3x3 keeps that width
    and sees the expand output padded with the expand bias, the final 1x1 reduces to `out_ch`; a
    parallel 1x1 shortcut maps `in_ch -> out_ch`. Deploy: P-13, then P-31, then P-par.
    Training cost is about 17x the deploy weights at `expand=4`.
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu", expand: int = 4
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "expand", expand)
        mid = expand * in_ch
        self.expand = expand
        self.body = Conv1x1Conv3x3(in_ch, mid, mid, bias=bias)
        self.reduce = nn.Conv2d(mid, out_ch, 1, bias=bias)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.reduce(self.body(x)) + self.shortcut(x)

    def fused_kernel(self) -> Conv:
        main = fuse_3x3_then_1x1(self.body.equivalent(), from_conv2d(self.reduce))
        return add_branches(main, from_conv2d(self.shortcut))

    def zero_output_(self) -> None:
        zero_(self.reduce.weight, self.reduce.bias, self.shortcut.weight, self.shortcut.bias)


@register_block("rep_casr")
class RepCASRBlock(LinearBlock):
    """CASR RepBlockV5: `act(A(x) + B(x) + shortcut(x))`, A/B = 3x3 (in -> mid) then 1x1 (mid -> out).

    `mid_a=256`, `mid_b=128` are CASR's widths (fixed, independent of the channel count); they only
    cost training time. The shortcut is the identity when `in_ch == out_ch`, otherwise a 1x1 conv.
    The 3x3 comes first, so the fusion (P-31) needs no padding trick.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        bias: bool = True,
        act: str = "relu",
        mid_a: int = 256,
        mid_b: int = 128,
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "mid_a", mid_a)
        check_width(self.name, "mid_b", mid_b)
        self.branch_a = nn.Sequential(
            nn.Conv2d(in_ch, mid_a, 3, padding=1, bias=bias), nn.Conv2d(mid_a, out_ch, 1, bias=bias)
        )
        self.branch_b = nn.Sequential(
            nn.Conv2d(in_ch, mid_b, 3, padding=1, bias=bias), nn.Conv2d(mid_b, out_ch, 1, bias=bias)
        )
        self.shortcut = None if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.branch_a(x) + self.branch_b(x) + skip

    def fused_kernel(self) -> Conv:
        branches = [
            fuse_3x3_then_1x1(from_conv2d(seq[0]), from_conv2d(seq[1]))
            for seq in (self.branch_a, self.branch_b)
        ]
        weight = self.branch_a[0].weight
        if self.shortcut is None:
            branches.append((identity_kernel(self.out_ch, dtype=weight.dtype, device=weight.device), None))
        else:
            branches.append(from_conv2d(self.shortcut))
        return add_branches(*branches)

    @torch.no_grad()
    def zero_output_(self) -> None:
        branches = (self.branch_a, self.branch_b)
        if self.shortcut is None and self.out_ch > sum(seq[0].out_channels for seq in branches):
            raise NotImplementedError(
                f"rep_casr {self.in_ch}->{self.out_ch}: cancelling the identity needs {self.out_ch} mid "
                f"channels, but mid_a + mid_b = {sum(seq[0].out_channels for seq in branches)}"
            )
        for seq in branches:
            zero_(seq[1].weight, seq[1].bias)
        if self.shortcut is not None:
            zero_(self.shortcut.weight, self.shortcut.bias)
            return
        # Cancel the identity: route channel c through one mid channel (3x3 centre tap 1, the rest of
        # that row and its bias 0) and back with weight -1, so the branches sum to exactly -x.
        # Branch A carries the first mid_a channels, branch B the rest; other mid rows keep their init.
        start = 0
        for first, last in branches:
            taken = torch.arange(start, min(start + first.out_channels, self.out_ch))
            mid = torch.arange(len(taken))
            first.weight[mid] = 0.0
            if first.bias is not None:
                first.bias[mid] = 0.0
            first.weight[mid, taken, 1, 1] = 1.0
            last.weight[taken, mid, 0, 0] = -1.0
            start += len(taken)
