"""`safmpp`: VPEG's SAFMN++ block (SimpleSAFM then CCM), the AIS 2024 fidelity-track winner "VPEG-S".

Follows sunny2109/SAFMN AIS2024-RTSR/light_safmnpp_arch.py (`SimpleSAFM`, `CCM`, `AttBlock`) as built by
AIS2024-RTSR/inference.py (`SAFMN_VIS24(dim=32, n_blocks=2, ffn_scale=1.5)`, every conv bias-free);
AIS 2024 RTSR survey (arXiv:2404.16484) Sec. 3.3. For a C-channel input x:

    y = proj(x)                                 3x3, C -> C
    m, p = y[:, :ceil(C/2)], y[:, ceil(C/2):]   the first half is modulated, the second passes
    g = up(dw(maxpool(m)))                      pool to (h // 8, w // 8), depthwise 3x3, bilinear back
    s = out(act(cat(p, act(g) * m)))            1x1, C -> C   (SimpleSAFM)
    out = reduce(act(expand(s)))                3x3 C -> int(C * ffn_scale), 1x1 back to C  (CCM)

There is no residual, no normalisation and no variance term inside the block (the original SAFMN's
LayerNorm and `+ x` are gone in this light version; the network adds its head features once after all
blocks). `act` is the in-block activation (GELU in the code, the default), used at its three places with
its own module each, so PReLU slopes are per use; nothing follows the block's last 1x1.

Nothing fuses across the pooling, the multiply or the activations, so the deploy form keeps the five
convs (3x3, depthwise 3x3 at the pooled size, 1x1, 3x3, 1x1) and parameter-free glue modules; its MACs
are not proportional to the area (the depthwise conv runs at floor(h/8) x floor(w/8)).

Online re-parameterization has nothing to do here: the training form already is the deploy form. The
one adjacent linear pair, `out` (1x1) then CCM's `expand` (3x3, zero-padded), is not one conv at the
border when it has biases (the ring would need `out`'s bias, reference 1.0 P-13), and the deploy form
keeps both convs; fusing them for training alone would save about 1/14 of the pair's MACs.

Sizes the code does not handle: `adaptive_max_pool2d` to `h // 8` gives an empty map below 8 pixels and
the interpolation then fails; here the pooled size is at least 1 (a global max), which equals the code
wherever the code runs. An odd C cannot be chunked into the code's `C // 2`-channel depthwise conv; here
the modulated part takes the first ceil(C/2) channels, as `torch.chunk` splits them.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.base import Block, make_activation, register_block, zero_
from search_space.errors import UserError

__all__ = [
    "POOL_DIVISOR",
    "MaxPoolToFraction",
    "Multiply",
    "ResizeBilinearLike",
    "SAFMPPBlock",
    "SAFMPPDeploy",
    "adaptive_windows",
    "max_over_windows",
    "pooled_size",
]

#: SimpleSAFM pools the modulated half to (h // 8, w // 8) (floor, as in the code).
POOL_DIVISOR = 8


def pooled_size(h: int, w: int) -> tuple[int, int]:
    """The modulation map's size for an h x w feature map: the code's floor division, at least 1."""
    return max(1, h // POOL_DIVISOR), max(1, w // POOL_DIVISOR)


class MaxPoolToFraction(nn.Module):
    """Adaptive max pooling to `pooled_size(h, w)`: overlapping windows where 8 does not divide.

    PyTorch's window i spans rows [floor(i*h/oh), ceil((i+1)*h/oh)); at h = 540 (oh = 67) that is 64
    windows of 9 rows and 3 of 10, consecutive ones sharing a row; at w = 960 it is exactly 8 columns.
    Those windows depend on the input size, and torch's ONNX exporter specialises the graph to the
    example's size: a network holding this module is exported to ONNX for one input size. ONNX has
    no adaptive max pool over uneven windows either, so an export computes the same maxima as
    `max_over_windows` (stride-1 max pools and a gather, exact); eager torch keeps the native op.
    """

    #: Read by `trainers.deploy_export.fixed_size_reason`: why the ONNX graph is for one size only.
    ONNX_FIXED_SIZE: ClassVar[str] = ("SAFM++'s adaptive max pool to (h // 8, w // 8) uses windows that depend on the input "
                                      "size, so the ONNX graph is exported for one input size")

    def forward(self, x: Tensor) -> Tensor:
        size = pooled_size(*x.shape[-2:])
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            return max_over_windows(max_over_windows(x, dim=-2, outputs=size[0]), dim=-1, outputs=size[1])
        return F.adaptive_max_pool2d(x, size)


def adaptive_windows(length: int, outputs: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling windows `(start, end)` of `outputs` cells over `length` pixels."""
    return [(i * length // outputs, -(-(i + 1) * length // outputs)) for i in range(outputs)]


def max_over_windows(x: Tensor, *, dim: int, outputs: int) -> Tensor:
    """Adaptive max pooling along one spatial `dim` (-2 rows, -1 columns) from ops every exporter has.

    A max over a rectangle is the max over its rows of the max over its columns, so the 2D pool is
    two 1D ones. Equal windows are one max pool (kernel = stride); uneven ones take, for each window
    length L that occurs, a stride-1 max pool with kernel L (the max of every run of L pixels), then
    gather each window's run by its start. Exact: a max involves no rounding."""
    length = x.shape[dim]
    kernel = (lambda k: (k, 1)) if dim in (-2, x.dim() - 2) else (lambda k: (1, k))
    if length % outputs == 0:
        step = length // outputs
        return F.max_pool2d(x, kernel(step), stride=kernel(step))
    windows = adaptive_windows(length, outputs)
    runs, offsets, total = [], {}, 0
    for size in sorted({end - start for start, end in windows}):
        offsets[size] = total
        runs.append(F.max_pool2d(x, kernel(size), stride=1))
        total += length - size + 1
    index = torch.tensor([offsets[end - start] + start for start, end in windows], device=x.device)
    return torch.cat(runs, dim=dim).index_select(dim, index)


class ResizeBilinearLike(nn.Module):
    """Bilinear resize of `x` to the size of `like`, `align_corners=False` (the code's default)."""

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Multiply(nn.Module):
    """Elementwise product: the modulation `act(g) * m`, a module so the deploy form lists it."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b


class _SAFMPPLayers(nn.Module):
    """The layers and the forward shared by the training and the deploy form (they are the same maps).

    Attribute order matters: `act` comes first (the Block base class registers it first), so the
    PReLU slopes are listed in the same order by both forms.
    """

    act: nn.Module
    proj: nn.Conv2d
    pool: MaxPoolToFraction
    dwconv: nn.Conv2d
    resize: ResizeBilinearLike
    mod_act: nn.Module
    multiply: Multiply
    out: nn.Conv2d
    expand: nn.Conv2d
    ffn_act: nn.Module
    reduce: nn.Conv2d

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x)
        modulated, passed = y.split([self.dwconv.in_channels, y.shape[1] - self.dwconv.in_channels], dim=1)
        gate = self.resize(self.dwconv(self.pool(modulated)), modulated)
        mixed = self.out(self.act(torch.cat([passed, self.multiply(self.mod_act(gate), modulated)], dim=1)))
        return self.reduce(self.ffn_act(self.expand(mixed)))


#: Every layer of the block, in registration order (the order `modules()` lists PReLU slopes in).
_LAYER_NAMES = (
    "act", "proj", "pool", "dwconv", "resize", "mod_act", "multiply", "out", "expand", "ffn_act", "reduce"
)


class SAFMPPDeploy(_SAFMPPLayers):
    """Deploy form of a SAFMN++ block: the same five convs, activations and glue, as independent copies."""

    def __init__(self, layers: _SAFMPPLayers) -> None:
        super().__init__()
        for name in _LAYER_NAMES:
            setattr(self, name, copy.deepcopy(getattr(layers, name)))


@register_block("safmpp")
class SAFMPPBlock(_SAFMPPLayers, Block):
    """SimpleSAFM (3x3, pooled depthwise modulation of half the channels, 1x1) followed by CCM."""

    supports_channel_change: ClassVar[bool] = False
    cost_scales_with_area: ClassVar[bool] = False

    def __init__(
        self, in_ch: int, out_ch: int, *, bias: bool = False, act: str = "gelu", ffn_scale: float = 1.5
    ) -> None:
        Block.__init__(self, in_ch, out_ch, bias=bias, act=act)
        if isinstance(ffn_scale, bool) or not isinstance(ffn_scale, (int, float)) or not ffn_scale > 0:
            raise UserError(f"block {self.name!r}: ffn_scale must be a number > 0, got {ffn_scale!r}")
        hidden = int(out_ch * ffn_scale)  # the code's int() truncation: 32 * 1.5 = 48
        if hidden < 1:
            raise UserError(
                f"block {self.name!r}: ffn_scale {ffn_scale} gives int({out_ch} * {ffn_scale}) = 0 hidden "
                f"channels; use ffn_scale >= {1 / out_ch:g}"
            )
        self.ffn_scale = ffn_scale
        modulated = out_ch - out_ch // 2
        self.proj = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
        self.pool = MaxPoolToFraction()
        self.dwconv = nn.Conv2d(modulated, modulated, 3, padding=1, groups=modulated, bias=bias)
        self.resize = ResizeBilinearLike()
        self.mod_act = make_activation(act, modulated)
        self.multiply = Multiply()
        self.out = nn.Conv2d(out_ch, out_ch, 1, bias=bias)
        self.expand = nn.Conv2d(out_ch, hidden, 3, padding=1, bias=bias)
        self.ffn_act = make_activation(act, hidden)
        self.reduce = nn.Conv2d(hidden, out_ch, 1, bias=bias)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return SAFMPPDeploy(self)

    def zero_output_(self) -> None:
        # The block ends in CCM's 1x1 with no residual around it: zero weights give exactly 0.
        zero_(self.reduce.weight, self.reduce.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ffn_scale={self.ffn_scale}"
