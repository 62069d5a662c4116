"""Pixel (un)shuffle that trains fast: the same permutation as `nn.PixelShuffle` / `nn.PixelUnshuffle`.

Why: on CPU (torch 2.13, one thread) `F.pixel_shuffle` forward + backward of a training batch
(8 x 48 x 48 x 48 -> 8 x 3 x 192 x 192) takes about 10 ms, the same permutation written as view +
permute + reshape about 2.8 ms; the shuffles were a quarter of urpnet's training step
(`benchmarks/train_throughput.py`). In training mode these modules use the view form; in eval mode
(every deploy model: what is timed, counted and exported) they call the library op, so latency and
exports see the standard operator. The two are the same permutation, so outputs are bit-identical
(tested). Subclasses of the torch modules: isinstance checks, thop's zero-cost rule and printing
are unchanged, and so is the state dict (no parameters).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PixelShuffle", "PixelUnshuffle", "pixel_shuffle", "pixel_unshuffle"]


def pixel_shuffle(x: Tensor, r: int) -> Tensor:
    """(B, C r^2, H, W) -> (B, C, H r, W r), as `F.pixel_shuffle`."""
    b, c, h, w = x.shape
    return x.reshape(b, c // (r * r), r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (r * r), h * r, w * r)


def pixel_unshuffle(x: Tensor, r: int) -> Tensor:
    """(B, C, H r, W r) -> (B, C r^2, H, W), as `F.pixel_unshuffle`."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // r, r, w // r, r).permute(0, 1, 3, 5, 2, 4).reshape(b, c * r * r, h // r, w // r)


class PixelShuffle(nn.PixelShuffle):
    """`nn.PixelShuffle`; the view form in training mode (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.ndim == 4:
            return pixel_shuffle(x, self.upscale_factor)
        return super().forward(x)


class PixelUnshuffle(nn.PixelUnshuffle):
    """`nn.PixelUnshuffle`; the view form in training mode (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.ndim == 4:
            return pixel_unshuffle(x, self.downscale_factor)
        return super().forward(x)
