"""The linear x4 filter as data: its weights, its scores on a split, and applying it.

Why a module of its own: `trainers.data.PairedSet` carries these (a split's baseline scores, a
training split's fitted-anchor filters) and `trainers.splits` records the baseline's format, while
the fitting (`trainers.linear_baseline`) needs both of those modules; keeping the records here,
with no import of either, leaves no import circle. `trainers.linear_baseline` re-exports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from search_space.arch import SCALE

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DEFAULT_KERNEL", "FORMAT_VERSION", "OUT_CHANNELS", "LinearBaselineScores", "LinearFilter", "apply", "feature_count"]

FORMAT_VERSION = 2
"""Bump when the fit (features, ordering, solver) changes: it names the cache folder and enters the key."""
DEFAULT_KERNEL = 7
"""Kernel side K: 7 is Lanczos-3's support, so the fitted filter can at least reproduce Lanczos."""
OUT_CHANNELS = 3 * SCALE * SCALE  # 48 output channels before pixel-shuffle(4)


def feature_count(kernel: int) -> int:
    """Rows of a filter's weights: the 3 x K x K neighbourhood values plus the bias."""
    return 3 * kernel * kernel + 1


@dataclass(frozen=True, eq=False)
class LinearFilter:
    """One fitted filter: ``weights`` is (3K^2+1) x 48 float64, rows (c, dy, dx) then the bias.

    Column ``o = c*16 + 4p + q`` is HR pixel (4y+p, 4x+q) of colour c, the channel order of
    ``PixelShuffle(4)``; ``key`` is the cache key (it names the training set it was fitted on);
    ``qps`` the QPs whose pairs it was fitted on (one for a per-QP oracle filter, all of the run's
    for the QP-blind one).
    """

    qps: tuple[int, ...]
    kernel: int
    weights: np.ndarray
    key: str

    def __post_init__(self) -> None:
        if self.weights.shape != (feature_count(self.kernel), OUT_CHANNELS):
            raise ValueError(f"LinearFilter: weights {self.weights.shape} != {(feature_count(self.kernel), OUT_CHANNELS)} for K={self.kernel}")

    def conv_parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weight 48x3xKxK, bias 48)`` of the equivalent ``nn.Conv2d``."""
        k = self.kernel
        weight = self.weights[:-1].T.reshape(OUT_CHANNELS, 3, k, k)
        return np.array(weight, copy=True), np.array(self.weights[-1], copy=True)  # writable: torch.from_numpy

    def module(self, *, dtype: torch.dtype | None = None) -> nn.Module:
        """The filter as a network (conv KxK replicate-padded -> PixelShuffle(4)), eval mode, on CPU."""
        import torch
        from torch import nn

        dtype = torch.float32 if dtype is None else dtype
        weight, bias = self.conv_parameters()
        conv = nn.Conv2d(3, OUT_CHANNELS, self.kernel, padding=self.kernel // 2, padding_mode="replicate", dtype=dtype)
        with torch.no_grad():  # copied straight from float64: a float64 module keeps every bit
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            conv.bias.copy_(torch.from_numpy(bias.copy()))
        return nn.Sequential(conv, nn.PixelShuffle(SCALE)).eval()


@dataclass(frozen=True)
class LinearBaselineScores:
    """The linear baseline's PSNR-Y (dB) on each image of one evaluation split, per QP.

    ``psnr_y``: the QP-blind filter (one for all QPs, what a network is compared with);
    ``oracle_psnr_y``: the filter fitted at each QP alone (it knows the quantizer; reported, labelled
    as an oracle). Computed once when the data is loaded and carried by the split
    (`PairedSet.linear_baseline`), so it travels with the data to every worker and no trial
    recomputes it. ``filter_key`` / ``oracle_keys`` name the fitted filters (and so the training set).
    """

    psnr_y: Mapping[int, tuple[float, ...]]
    filter_key: str
    oracle_psnr_y: Mapping[int, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    oracle_keys: Mapping[int, str] = dataclasses.field(default_factory=dict)
    kernel: int = DEFAULT_KERNEL

    def mean_psnr_y(self, qp: int) -> float:
        """Mean over images of the QP-blind filter, each capped at 100 dB (as `trainers.evaluate`
        averages a model's PSNRs)."""
        return _capped_mean(self.psnr_y[qp])

    def mean_oracle_psnr_y(self, qp: int) -> float | None:
        """The same for the per-QP oracle filter; None when it was not scored."""
        return _capped_mean(self.oracle_psnr_y[qp]) if qp in self.oracle_psnr_y else None


def _capped_mean(values: Sequence[float]) -> float:
    return float(np.mean([min(v, 100.0) for v in values]))


def apply(filt: LinearFilter, lr: np.ndarray | torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The filter's HR prediction as a float tensor in [0, 1] scale (not clamped), like a model's output.

    ``lr`` is a uint8 HxWx3 image (divided by 255 as `trainers.evaluate` does) or a float tensor
    3xHxW / Bx3xHxW in [0, 1]; the result is 3x4Hx4W / Bx3x4Hx4W. ``dtype`` defaults to float32, the
    precision models are evaluated in; make it 8-bit with `trainers.metrics.to_uint8`.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if isinstance(lr, np.ndarray):
        if lr.dtype != np.uint8 or lr.ndim != 3 or lr.shape[2] != 3:
            raise ValueError(f"apply: a NumPy LR must be uint8 HxWx3, got {lr.dtype} {lr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).unsqueeze(0).to(dtype=dtype) / 255.0
        batched = False
    else:
        batched = lr.ndim == 4
        x = (lr if batched else lr.unsqueeze(0)).to(dtype=dtype)
    with torch.inference_mode():
        y = filt.module(dtype=dtype)(x)
    return y if batched else y[0]
