"""The network template: `build(arch)` gives the training form, `deploy(model)` the fused form.

Input: LR RGB in [0, 1], shape (N, 3, H, W) with H and W divisible by the arch's `down_factor` u.
The network does not pad: padding would change what the border pixels see, so callers pad or crop
(540x960 is divisible by every u in {1, 2, 3, 4}, and the patch sampler draws multiples of u).
A non-divisible input raises a `UserError` instead of a shape error from deep inside torch.
Output: (N, 3, 4H, 4W), not clamped (metrics clamp and round, as the benchmark does).

Strided downsampling (PixelArtAI, Bicubic++, USTC-Noah's stride-2 conv): the head conv itself is
3 -> C with stride u, kernel `strided_kernel(u)` (the smallest odd size >= max(3, u): 3, 3, 3, 5
for u = 1..4) and padding (k - 1) / 2, so every input pixel is seen and the output is exactly
H/u x W/u. With u = 2 this is Bicubic++'s 3x3/stride-2 conv, which reproduces PixelArtAI's
9.67 GMACs (DESIGN.md table).

`deploy()` replaces every `Block` by its `fuse()` in a copy of the model: the result holds plain
`nn.Conv2d` layers, activations and parameter-free glue (pixel (un)shuffle, additions, SPAB's
attention), is in eval mode and has `requires_grad=False` everywhere. It is what is timed,
counted and exported.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.arch import SCALE, ArchConfig
from search_space.blocks import Block, get_block, make_activation
from search_space.errors import UserError

__all__ = [
    "CascadeReconstruction",
    "DirectReconstruction",
    "SRNet",
    "UpsampleResidual",
    "build",
    "deploy",
    "strided_kernel",
]


def strided_kernel(down_factor: int) -> int:
    """Kernel size of the strided head conv: the smallest odd size >= max(3, u)."""
    k = max(3, down_factor)
    return k if k % 2 else k + 1


class UpsampleResidual(nn.Module):
    """The global residual: x upsampled x4 by `mode` ('nearest' = ANUNet's anchor, or 'bilinear')."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise UserError(f"global residual mode {mode!r}; choose 'nearest' or 'bilinear'")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=SCALE, mode="nearest")
        return F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class DirectReconstruction(nn.Module):
    """conv C -> 3*(4u)^2 -> pixel-shuffle(4u)."""

    def __init__(self, conv: nn.Module, factor: int) -> None:
        super().__init__()
        self.conv = conv
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(features))


class CascadeReconstruction(nn.Module):
    """CASR: conv C -> 3u^2 -> pixel-shuffle(u) -> + x -> conv 3 -> 48 -> pixel-shuffle(4)."""

    def __init__(self, to_lr: nn.Module, to_hr: nn.Module, down_factor: int) -> None:
        super().__init__()
        self.to_lr = to_lr
        self.shuffle_lr = nn.PixelShuffle(down_factor)
        self.to_hr = to_hr
        self.shuffle_hr = nn.PixelShuffle(SCALE)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.shuffle_hr(self.to_hr(self.shuffle_lr(self.to_lr(features)) + x))


class SRNet(nn.Module):
    """One instance of the template; `arch` is kept on the module so any copy knows what it is."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        if not isinstance(arch, ArchConfig):
            raise TypeError(f"SRNet needs an ArchConfig, got {type(arch).__name__}")
        self.arch = arch
        u, c, bias, act = arch.down_factor, arch.channels, arch.bias, arch.activation
        end = get_block(arch.end_block)

        if arch.downsample == "strided":
            k = strided_kernel(u)
            self.down: nn.Module = nn.Identity()
            self.head: nn.Module = nn.Sequential(
                nn.Conv2d(3, c, k, stride=u, padding=(k - 1) // 2, bias=bias), make_activation(act, c)
            )
        else:
            self.down = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
            self.head = end(3 * u * u, c, bias=bias, act=act)

        body = get_block(arch.block)
        self.body = nn.Sequential(*(body(c, c, bias=bias, act=act) for _ in range(arch.blocks)))
        self.body_skip = arch.body_skip

        if arch.reconstruction == "cascade":
            self.recon: nn.Module = CascadeReconstruction(
                end(c, 3 * u * u, bias=bias, act="none"), end(3, 3 * SCALE * SCALE, bias=bias, act="none"), u
            )
        else:
            out = 3 * (SCALE * u) ** 2
            conv = end(c, out, bias=bias, act="none") if arch.tail_kernel == 3 else nn.Conv2d(c, out, 1, bias=bias)
            self.recon = DirectReconstruction(conv, SCALE * u)

        self.residual = UpsampleResidual(arch.global_residual) if arch.global_residual != "none" else None

    def forward(self, x: Tensor) -> Tensor:
        u = self.arch.down_factor
        if x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"the network takes RGB batches shaped (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % u or x.shape[-1] % u:
            raise UserError(
                f"input {x.shape[-2]}x{x.shape[-1]} is not divisible by down_factor {u}; "
                f"pad or crop it to a multiple of {u} first"
            )
        head = self.head(self.down(x))
        features = self.body(head)
        if self.body_skip:
            features = features + head
        y = self.recon(features, x)
        if self.residual is not None:
            y = y + self.residual(x)
        return y

    def extra_repr(self) -> str:
        return f"arch={self.arch.summary()!r} ({self.arch.arch_hash})"


def build(arch: ArchConfig) -> SRNet:
    """The training form of `arch` (float32, CPU, train mode, fresh initialization)."""
    return SRNet(arch)


def _fuse_blocks(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, Block):
            setattr(module, name, child.fuse())
        else:
            _fuse_blocks(child)


@torch.no_grad()
def deploy(model: nn.Module) -> nn.Module:
    """A fused copy of `model`: every `Block` replaced by its `fuse()`, eval mode, no gradients.

    `model` itself is left unchanged (still trainable). Deploying a deployed model is a no-op copy.
    """
    if isinstance(model, Block):
        fused = model.fuse()
    else:
        fused = copy.deepcopy(model)
        _fuse_blocks(fused)
    fused.eval()
    fused.requires_grad_(False)
    return fused
