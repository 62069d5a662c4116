"""`rep_rvsr` / `repvit`: RVSR's RepConv and its RepViT block (reference 1.5 and 2.1).

Follows huai-chang/RVSR (AIS 2024 RTSR, XJTU) models/train_arch.py for the training form and
reparameterize.py / models/inference_arch.py for the deploy form.

RVSR RepConv (`RVSRRepConv`), a linear sum of five branches that folds into one dense 3x3 conv:
    x (identity) + conv3x3(x) + conv1x1(x) + sum_{j=1,2} reduce_j(fea_j(pad_b(expand_j(x))))
with `expand_j` a 1x1 (C -> 2C), `fea_j` an unpadded 3x3 (2C -> 2C) on the expand output padded
with the expand bias (RVSR's `pad_tensor`; our `pad_with_bias`), `reduce_j` a 1x1 (2C -> C).
Fusion: P-13, P-31, then P-par with the identity (reference 1.0).

RepViT block as RVSR trains it (not the original RepViT: its token mixer is RVSR's RepConv, which
fuses to a *dense* 3x3, groups=1, not a depthwise one; 9*C*C MACs/px, 2,304 at C=16, which is what
reproduces the paper's 15.6 G):
    t = RepConv(x)                              token mixer (its own identity is the only skip here)
    s = t * sigmoid(W2 relu(W1 mean_hw(t)))     timm SqueezeExcite(C, 0.25): C -> make_divisible(C/4, 8)
    y = s + W4 act(W3 s)                        FFN residual, 1x1 C -> 2C -> C, GELU in RVSR
There is no residual around the squeeze-excite or around the whole block. Deploy: the RepConv is one
3x3 conv; the squeeze-excite and the FFN stay 1x1 convs with their pooling and activations. Online
re-parameterization fuses the RepConv alone (its branches are linear); the rest trains as deployed.
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
    minus_identity_,
    register_block,
    zero_,
)
from search_space.blocks.fusion import (
    Conv,
    add_branches,
    from_conv2d,
    fuse_3x3_then_1x1,
    identity_kernel,
    to_conv2d,
)
from search_space.blocks.rep import Conv1x1Conv3x3

__all__ = [
    "GlobalAvgPool",
    "RVSRRepConv",
    "RVSRRepConvBlock",
    "RepViTBlock",
    "RepViTDeploy",
    "SqueezeExcite",
    "se_width",
]

#: Squeeze-excite reduction of RepViT/RVSR (`SqueezeExcite(N, 0.25)`) and timm's channel divisor.
SE_RATIO = 0.25
SE_DIVISOR = 8


def se_width(channels: int, *, ratio: float = SE_RATIO, divisor: int = SE_DIVISOR) -> int:
    """Squeeze width of timm's SE module: `channels * ratio` rounded to the nearest multiple of
    `divisor`, at least `divisor` (timm `make_divisible(..., round_limit=0)`, so never bumped up).

    16 channels give 8, not 4: that is what RVSR's 32,960 parameters require.
    """
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class GlobalAvgPool(nn.Module):
    """Mean over height and width, kept as a 1x1 map (the squeeze).

    A leaf module of its own, not `nn.AdaptiveAvgPool2d`: thop charges that one per input element,
    while our MAC count is convolutions only, and this module has no thop rule (counted as 0).
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class SqueezeExcite(nn.Module):
    """timm's SE module as RVSR uses it: pool -> 1x1 (C -> r) -> ReLU -> 1x1 (r -> C) -> sigmoid gate.

    The same module serves the training and the deploy form (there is nothing to fold). Its two
    convs run on a 1x1 map, so they cost `2 * C * r` MACs per image whatever its size.
    """

    def __init__(self, channels: int, *, bias: bool = True) -> None:
        super().__init__()
        width = se_width(channels)
        self.pool = GlobalAvgPool()
        self.squeeze = nn.Conv2d(channels, width, 1, bias=bias)
        self.relu = nn.ReLU()
        self.excite = nn.Conv2d(width, channels, 1, bias=bias)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.excite(self.relu(self.squeeze(self.pool(x)))))


class ExpandConvReduce(nn.Module):
    """One RepConv branch: 1x1 (in -> mid), unpadded 3x3 (mid -> mid) on the bias-padded 1x1 output,
    1x1 (mid -> out)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, *, bias: bool) -> None:
        super().__init__()
        self.body = Conv1x1Conv3x3(in_ch, mid_ch, mid_ch, bias=bias)
        self.reduce = nn.Conv2d(mid_ch, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(self.body(x))

    def equivalent(self) -> Conv:
        return fuse_3x3_then_1x1(self.body.equivalent(), from_conv2d(self.reduce))


class RVSRRepConv(OnlineReparam, nn.Module):
    """RVSR's RepConv (see the module docstring), generalised to `in_ch != out_ch`.

    When the widths differ the identity is dropped (there is no identity to add) and nothing
    replaces it: a 1x1 shortcut would duplicate the parallel 1x1 branch. The branches expand to
    `ratio * in_ch` channels (RVSR: `n_feats * 2`). No activation: the callers add their own.
    """

    def __init__(self, in_ch: int, out_ch: int, *, ratio: int = 2, bias: bool = True) -> None:
        super().__init__()
        mid = ratio * in_ch
        self.branches = nn.ModuleList(ExpandConvReduce(in_ch, mid, out_ch, bias=bias) for _ in range(2))
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
        self.identity = in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.runs_online():
            weight, bias = self.fused_kernel()
            return F.conv2d(x, weight, bias, padding=1)
        return self.forward_branches(x)

    def forward_branches(self, x: Tensor) -> Tensor:
        """The multi-branch form."""
        out = self.conv3(x) + self.conv1(x)
        for branch in self.branches:
            out = out + branch(x)
        return out + x if self.identity else out

    def fused_kernel(self) -> Conv:
        """The single 3x3 conv (`padding=1`) this module equals, border included (differentiable)."""
        parts = [branch.equivalent() for branch in self.branches]
        parts += [from_conv2d(self.conv3), from_conv2d(self.conv1)]
        if self.identity:
            weight = self.conv3.weight
            parts.append((identity_kernel(weight.shape[0], dtype=weight.dtype, device=weight.device), None))
        return add_branches(*parts)

    @torch.no_grad()
    def zero_output_(self) -> None:
        """Exactly zero output: each branch's last conv to 0, and the 1x1 branch to `-x` when the
        identity is present (`-x + x` is exactly 0, and so is the fused centre tap `-1 + 1`)."""
        for branch in self.branches:
            zero_(branch.reduce.weight, branch.reduce.bias)
        zero_(self.conv3.weight, self.conv3.bias)
        if self.identity:
            minus_identity_(self.conv1)
        else:
            zero_(self.conv1.weight, self.conv1.bias)


@register_block("rep_rvsr")
class RVSRRepConvBlock(LinearBlock):
    """`act(RepConv(x))`: RVSR's RepConv as a standalone re-parameterizable 3x3 block.

    In RVSR it appears without an activation (the tail's `RepConv -> 1x1`; use `act="none"` for
    that). `ratio` is the expansion of the two 1x1-3x3-1x1 branches (RVSR: 2). `bias=False`
    removes every bias (RVSR always has them). Deploy: one 3x3 conv plus the activation.
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu", ratio: int = 2
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "ratio", ratio)
        self.ratio = ratio
        self.repconv = RVSRRepConv(in_ch, out_ch, ratio=ratio, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.repconv.forward_branches(x)

    def fused_kernel(self) -> Conv:
        return self.repconv.fused_kernel()

    def zero_output_(self) -> None:
        self.repconv.zero_output_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio}"


def _se_and_ffn(
    t: Tensor, se: SqueezeExcite, ffn_in: nn.Conv2d, act: nn.Module, ffn_out: nn.Conv2d
) -> Tensor:
    """The part of a RepViT block after the token mixer, shared by the training and deploy forms."""
    s = se(t)
    return s + ffn_out(act(ffn_in(s)))


class RepViTDeploy(nn.Module):
    """Deploy form of `repvit`: one 3x3 conv, the squeeze-excite, and the 1x1 FFN with its residual."""

    def __init__(
        self, mixer: nn.Conv2d, se: SqueezeExcite, ffn_in: nn.Conv2d, act: nn.Module, ffn_out: nn.Conv2d
    ) -> None:
        super().__init__()
        self.mixer = mixer
        self.se = se
        self.ffn_in = ffn_in
        self.act = act
        self.ffn_out = ffn_out

    def forward(self, x: Tensor) -> Tensor:
        return _se_and_ffn(self.mixer(x), self.se, self.ffn_in, self.act, self.ffn_out)


@register_block("repvit")
class RepViTBlock(Block):
    """RVSR's RepViT block: RepConv token mixer, squeeze-excite, FFN residual (see the module doc).

    `act` is the FFN activation (RVSR: GELU, the default); the squeeze-excite keeps timm's fixed
    ReLU and sigmoid, and nothing is applied after the block. `ratio` is the RepConv expansion
    (RVSR: 2), `ffn_ratio` the FFN expansion (RVSR: 2). The squeeze width is `se_width(C)` (8 at
    C=16). RVSR has a bias on every conv; `bias=False` makes every conv bias-free, the squeeze-excite's
    included. Needs `in_ch == out_ch` (the residuals).

    Deploy cost at C channels on an H x W map: MACs `(9 C^2 + 2 ffn_ratio C^2) H W + 2 C se_width(C)`,
    i.e. 3,328 per pixel plus 256 per image at C=16; the SE term does not scale with the area.
    """

    supports_channel_change: ClassVar[bool] = False
    cost_scales_with_area: ClassVar[bool] = False

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        bias: bool = True,
        act: str = "gelu",
        ratio: int = 2,
        ffn_ratio: int = 2,
    ) -> None:
        super().__init__(in_ch, out_ch, bias=bias, act=act)
        check_width(self.name, "ratio", ratio)
        check_width(self.name, "ffn_ratio", ffn_ratio)
        self.ratio = ratio
        self.ffn_ratio = ffn_ratio
        hidden = ffn_ratio * out_ch
        self.mixer = RVSRRepConv(in_ch, out_ch, ratio=ratio, bias=bias)
        self.se = SqueezeExcite(out_ch, bias=bias)
        self.ffn_in = nn.Conv2d(out_ch, hidden, 1, bias=bias)
        # The FFN activation runs on the hidden width (PReLU needs one slope per hidden channel).
        self.act = make_activation(act, hidden)
        self.ffn_out = nn.Conv2d(hidden, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return _se_and_ffn(self.mixer(x), self.se, self.ffn_in, self.act, self.ffn_out)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return RepViTDeploy(
            to_conv2d(self.mixer.fused_kernel()),
            copy.deepcopy(self.se),
            copy.deepcopy(self.ffn_in),
            self._deploy_act(),
            copy.deepcopy(self.ffn_out),
        )

    def zero_output_(self) -> None:
        """The token mixer outputs exactly 0 (its identity cancelled), so the SE output `0 * gate` is
        0, and the FFN's last conv is zeroed: `0 + 0 = 0` for any input and any activation. The SE
        and the FFN's first conv keep their init; the mixer still gets gradients through the gate."""
        self.mixer.zero_output_()
        zero_(self.ffn_out.weight, self.ffn_out.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio}, ffn_ratio={self.ffn_ratio}"
