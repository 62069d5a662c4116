"""Kernel arithmetic that turns linear multi-branch blocks into one 3x3 convolution.

Every re-parameterizable block is a composition of the primitives below (reference
github.com/xindongzhang/ECBSR models/ecb.py, DingXiaoH/RepVGG repvgg.py). A conv is a pair `(weight, bias)` applied as cross-correlation
with `F.conv2d`; `bias` may be `None`, which means "no bias" and stays `None` through every
primitive as long as no input has one. That is what lets `bias=False` blocks fuse into bias-free
deploy convs instead of convs holding an all-zero bias. The two difference folds
(`fold_pixel_difference`, `fold_directional_difference`) take any square kernel and any stride (the
4x4 stride-2 `dconv.DecoupledStridedConv` uses them); the rest is 1x1/3x3, stride 1.

Why a separate module: the maths is shared by several blocks and is where the subtle part lives
(the 1x1 -> 3x3 border term), so it is tested once, against direct convolutions, on its own.

Training-time helper: `pad_with_bias` is the one non-obvious step of the *training* form. A 1x1
conv followed by an unpadded 3x3 is only equal to the fused 3x3 (which zero-pads `x`) if the 1x1
output is padded with the 1x1 bias, because `W1 . 0 + b1 = b1` is what the fused conv "sees"
outside the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Conv",
    "add_bias",
    "add_branches",
    "centre_taps",
    "depthwise_to_dense",
    "fold_directional_difference",
    "fold_pixel_difference",
    "fuse_1x1_then_3x3",
    "from_conv2d",
    "fuse_3x3_then_1x1",
    "identity_kernel",
    "pad_to_3x3",
    "pad_with_bias",
    "to_conv2d",
]

#: A convolution as data: (weight of shape (out, in, k, k), bias of shape (out,) or None).
Conv = tuple[Tensor, Tensor | None]


def pad_to_3x3(weight: Tensor) -> Tensor:
    """A 1x1 kernel placed at the centre of a 3x3 kernel of zeros; 3x3 kernels pass unchanged.

    With `padding=1` on the 3x3 conv this is the same map as the 1x1 conv with `padding=0`.
    """
    kh, kw = weight.shape[-2:]
    if (kh, kw) == (3, 3):
        return weight
    if (kh, kw) != (1, 1):
        raise ValueError(f"pad_to_3x3 expects a 1x1 or 3x3 kernel, got {kh}x{kw}")
    return F.pad(weight, (1, 1, 1, 1))


def identity_kernel(channels: int, *, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """The 3x3 kernel of the identity map on `channels` channels (stride 1, `padding=1`)."""
    kernel = torch.zeros(channels, channels, 3, 3, dtype=dtype, device=device)
    index = torch.arange(channels, device=device)
    kernel[index, index, 1, 1] = 1.0
    return kernel


def add_bias(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """`a + b` where `None` means "no bias": the sum of two optional biases (None + None is None)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def add_branches(*branches: Conv) -> Conv:
    """Parallel sum (P-par): branches with 1x1 or 3x3 kernels summed into one 3x3 conv.

    The bias is `None` only if every branch is bias-free.
    """
    if not branches:
        raise ValueError("add_branches needs at least one branch")
    kernel: Tensor | None = None
    bias: Tensor | None = None
    for weight, branch_bias in branches:
        padded = pad_to_3x3(weight)
        kernel = padded if kernel is None else kernel + padded
        bias = add_bias(bias, branch_bias)
    assert kernel is not None
    return kernel, bias


def fuse_1x1_then_3x3(first: Conv, second: Conv) -> Conv:
    """P-13: a 1x1 conv then a 3x3 conv as one 3x3 conv.

    `K[o,i,u,v] = sum_m W2[o,m,u,v] W1[m,i]` and `B = b2 + sum_{m,u,v} W2[o,m,u,v] b1[m]`.
    Exact over the whole image only if, in the training form, the 1x1 output was padded with `b1`
    (`pad_with_bias`) before the unpadded 3x3; with zero padding the border ring would miss the
    `b1` term for the taps outside the image.
    """
    w1, b1 = first
    w2, b2 = second
    if w1.shape[-2:] != (1, 1) or w2.shape[-2:] != (3, 3):
        raise ValueError(
            f"fuse_1x1_then_3x3 needs 1x1 then 3x3 kernels, got {tuple(w1.shape)}, {tuple(w2.shape)}"
        )
    kernel = torch.einsum("omuv,mi->oiuv", w2, w1[:, :, 0, 0])
    bias = b2
    if b1 is not None:
        bias = add_bias(torch.einsum("omuv,m->o", w2, b1), b2)
    return kernel, bias


def fuse_3x3_then_1x1(first: Conv, second: Conv) -> Conv:
    """P-31: a 3x3 conv then a 1x1 conv as one 3x3 conv (`K = W2 . W1` per tap, `B = W2 b1 + b2`).

    Always exact: the 1x1 acts pixel-wise, so there is no padding subtlety. Also accepts a 1x1
    first conv (then it is the plain product of two 1x1 convs, still returned as 1x1).
    """
    w1, b1 = first
    w2, b2 = second
    if w2.shape[-2:] != (1, 1):
        raise ValueError(f"fuse_3x3_then_1x1 needs a 1x1 second kernel, got {tuple(w2.shape)}")
    mix = w2[:, :, 0, 0]
    kernel = torch.einsum("om,miuv->oiuv", mix, w1)
    bias = b2
    if b1 is not None:
        bias = add_bias(mix @ b1, b2)
    return kernel, bias


def centre_taps(k: int) -> slice:
    """The centre taps of a k-tap kernel axis: the middle one for odd k, the middle two for even k.

    `fold_pixel_difference`'s centre: training forms read their centre pixels with it.
    """
    return slice((k - 1) // 2, k // 2 + 1)


def fold_pixel_difference(weight: Tensor, *, sign: float = -1.0) -> Tensor:
    """P-pd: the kernel of `y(p) = sum_k w_k (x(p+k) + sign * c(p))`, `c` = the window's centre.

    `sign=-1` is the central (pixel) difference conv, `sign=+1` its aggregation ("add") counterpart.
    For an odd k x k kernel `c` is the centre tap (3x3: `K = w`, `K[:, :, 1, 1] += sign * sum_k w_k`);
    for an even one it is the mean of the central 2x2 taps, each of which gets `sign * sum_k w_k / 4`.
    Any stride and padding: the identity holds per window. Exact with zero padding as long as the
    training form reads the centre from the same zero-padded window.
    """
    kh, kw = weight.shape[-2:]
    if kh != kw:
        raise ValueError(f"fold_pixel_difference needs a square kernel, got {tuple(weight.shape)}")
    centre = centre_taps(kh)
    taps = (2 - kh % 2) ** 2
    kernel = weight.clone()
    total = weight.sum(dim=(2, 3), keepdim=True)
    kernel[:, :, centre, centre] = kernel[:, :, centre, centre] + sign * total / taps
    return kernel


def fold_directional_difference(weight: Tensor, *, direction: str) -> Tensor:
    """The k x k kernel of a directional difference conv with one weight per row (or column).

    `weight` has shape (out, in, k), k >= 2. The left (top) half of the window are the first k // 2
    columns (rows), the right (bottom) half the last k // 2; an odd k leaves the middle one out.
    - `horizontal`: per row r, `w_r (sum of the left half - sum of the right half)`, so
      `K[:, :, r, :k//2] = w_r`, `K[:, :, r, -(k//2):] = -w_r` (3x3: left column minus right column).
    - `vertical`: per column c, top half minus bottom half, the same with rows and columns swapped.
    Every tap lies in the window, so this is exact with zero padding, at any stride.
    """
    if weight.dim() != 3 or weight.shape[-1] < 2:
        raise ValueError(
            f"fold_directional_difference needs weights of shape (out, in, k), k >= 2, got {tuple(weight.shape)}"
        )
    out_ch, in_ch, k = weight.shape
    half = k // 2
    kernel = weight.new_zeros(out_ch, in_ch, k, k)
    if direction == "horizontal":
        kernel[:, :, :, :half] = weight.unsqueeze(-1)
        kernel[:, :, :, k - half :] = -weight.unsqueeze(-1)
    elif direction == "vertical":
        kernel[:, :, :half, :] = weight.unsqueeze(-2)
        kernel[:, :, k - half :, :] = -weight.unsqueeze(-2)
    else:
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
    return kernel


def depthwise_to_dense(weight: Tensor) -> Tensor:
    """A depthwise kernel (C, 1, k, k) as the equivalent dense (C, C, k, k) kernel (diagonal)."""
    if weight.shape[1] != 1:
        raise ValueError(f"depthwise_to_dense needs a (C, 1, k, k) kernel, got {tuple(weight.shape)}")
    channels = weight.shape[0]
    dense = weight.new_zeros(channels, channels, *weight.shape[-2:])
    index = torch.arange(channels, device=weight.device)
    dense[index, index] = weight[:, 0]
    return dense


def pad_with_bias(x: Tensor, bias: Tensor | None) -> Tensor:
    """Pad `x` (N, C, H, W) by one pixel on every side with the per-channel value `bias` (0 if None).

    Training-time helper for a 1x1 -> 3x3 sequence: the ring then holds what the 1x1 conv would
    output on a zero-padded input, which is what the fused 3x3 conv computes.
    """
    padded = F.pad(x, (1, 1, 1, 1))
    if bias is None:
        return padded
    ring = torch.ones_like(padded)
    ring[:, :, 1:-1, 1:-1] = 0
    return padded + ring * bias.view(1, -1, 1, 1)


def from_conv2d(layer: nn.Conv2d) -> Conv:
    """The `(weight, bias)` pair of a dense (groups=1), stride-1 training conv."""
    if layer.groups != 1 or layer.stride != (1, 1) or layer.dilation != (1, 1):
        raise ValueError(f"only dense stride-1 convs can be fused, got {layer}")
    return layer.weight, layer.bias


def to_conv2d(conv: Conv) -> nn.Conv2d:
    """A fresh 3x3, stride-1, `padding=1` `nn.Conv2d` holding a detached copy of `conv`.

    The deploy layer has a bias parameter only if `conv` has one, so bias-free blocks stay
    bias-free at deploy time (fewer parameters and no bias add in the timed model).
    """
    weight, bias = conv
    weight = pad_to_3x3(weight)
    out_ch, in_ch = weight.shape[:2]
    layer = nn.Conv2d(
        in_ch, out_ch, 3, padding=1, bias=bias is not None, dtype=weight.dtype, device=weight.device
    )
    with torch.no_grad():
        layer.weight.copy_(weight.detach())
        if bias is not None:
            assert layer.bias is not None
            layer.bias.copy_(bias.detach())
    return layer
