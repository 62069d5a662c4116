"""`rep_edge`: RESR's reparameterized edge-extraction RepConv (team FZUQXT, survey Sec. 3.7, Fig. 13).

From the survey (arXiv:2404.16484; no code is public): parallel training paths of
"3x3 and 1x1 convolution for channel expansion and compression, as well as sobel and laplacian
filters", merged into "a 3x3 convolution" at inference. That is ECB (`ecb.py`) with one change,
branch 2, and this block is `ecb` with that branch swapped (all else is inherited):

1. 3x3 conv (in -> out);
2. 1x1 expand (in -> mid) -> 3x3 (mid -> mid, on the bias-padded 1x1 output) -> 1x1 compress
   (mid -> out), where ECB has 1x1 -> 3x3 (mid -> out);
3-5. 1x1 then Sobel-x / Sobel-y / Laplacian with a per-channel scale and bias (ECB's `EdgeBranch`);
summed, then the activation. Deploy: one 3x3 conv (+ bias), exact on the border (P-13, P-31, P-par).

Our choices, not in the text: mid = 2 * out_ch (ECB's depth multiplier, `depth_multiplier=2.0`);
the 3x3 of branch 2 keeps the expanded width (as Lanczos++'s `rep_expand` and SPAN's Conv3XC); the
edge filters' scale/bias and bias-free 1x1 are ECB's; ECB's optional identity (`with_idt`, off by
default) carries over, since RESR's text neither adds nor rules it out.
"""

from __future__ import annotations

from torch import Tensor, nn

from search_space.blocks.base import register_block
from search_space.blocks.ecb import ECBlock
from search_space.blocks.fusion import Conv, from_conv2d, fuse_3x3_then_1x1
from search_space.blocks.rep import Conv1x1Conv3x3

__all__ = ["ExpandCompress", "RepEdgeBlock"]


class ExpandCompress(Conv1x1Conv3x3):
    """1x1 (in -> mid), 3x3 (mid -> mid) on the bias-padded 1x1 output, then 1x1 (mid -> out)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, *, bias: bool) -> None:
        super().__init__(in_ch, mid_ch, mid_ch, bias=bias)
        self.compress = nn.Conv2d(mid_ch, out_ch, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.compress(super().forward(x))

    def equivalent(self) -> Conv:
        """The single 3x3 conv (`padding=1`) this branch equals: P-13, then P-31."""
        return fuse_3x3_then_1x1(super().equivalent(), from_conv2d(self.compress))

    @property
    def last(self) -> nn.Conv2d:
        return self.compress


@register_block("rep_edge")
class RepEdgeBlock(ECBlock):
    """RESR's RepConv: `ecb` with a 1x1 -> 3x3 -> 1x1 expand/compress path as branch 2."""

    @staticmethod
    def _expand_path(in_ch: int, mid: int, out_ch: int, *, bias: bool) -> Conv1x1Conv3x3:
        return ExpandCompress(in_ch, mid, out_ch, bias=bias)
