"""Evaluate a (deploy) model on a validation `PairedSet` at every QP, against two baselines.

This is the challenge's measurement in miniature: each decoded AVIF LR image goes through the model,
the output is made 8-bit (`to_uint8`: clamp, x255, round), and PSNR/SSIM are computed against the HR
image with no border crop; the challenge's baseline is the Lanczos x4 upscale of the same decoded LR.
Per-image values are averaged arithmetically per QP, as the benchmark averages per-image PSNRs.

The second baseline is the least-squares linear filter fitted on the training split
(`trainers.linear_baseline`), one for all QPs as a network is: ``gain_linear_y`` says whether a
design learned more than one convolution could. ``gain_linear_oracle_y`` is the gain over the
filters fitted per QP, which know the quantizer (an oracle no QP-blind network can use). Their
per-image PSNR-Y rides on the split (`PairedSet.linear_baseline`, set when the data is loaded); a
split without it reports None for the linear numbers.

The Lanczos baseline depends only on the data, so it is computed once per `PairedSet` and reused by
every trial and every periodic validation that evaluates on the same set.
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from search_space.errors import UserError
from trainers.data import PairedSet
from trainers.metrics import delta, lanczos_upscale, psnr, ssim, to_uint8

__all__ = ["QPMetrics", "EvalReport", "evaluate", "lanczos_baseline"]


@dataclass(frozen=True)
class QPMetrics:
    """Mean metrics over the validation images at one QP (dB for PSNR)."""

    qp: int
    psnr_y: float
    psnr_rgb: float
    ssim_y: float
    lanczos_psnr_y: float
    lanczos_psnr_rgb: float
    lanczos_ssim_y: float
    linear_psnr_y: float | None = None
    linear_oracle_psnr_y: float | None = None

    @property
    def gain_y(self) -> float:
        """PSNR-Y gain over Lanczos in dB: the objective the search maximizes."""
        return self.psnr_y - self.lanczos_psnr_y

    @property
    def gain_linear_y(self) -> float | None:
        """PSNR-Y gain over the QP-blind least-squares linear filter in dB (None when the split has no fit)."""
        return None if self.linear_psnr_y is None else self.psnr_y - self.linear_psnr_y

    @property
    def gain_linear_oracle_y(self) -> float | None:
        """PSNR-Y gain over the filter fitted at this QP alone (an oracle: it knows the QP), in dB."""
        return None if self.linear_oracle_psnr_y is None else self.psnr_y - self.linear_oracle_psnr_y

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain_y": self.gain_y, "gain_linear_y": self.gain_linear_y,
                "gain_linear_oracle_y": self.gain_linear_oracle_y}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QPMetrics:
        return cls(**{k: v for k, v in data.items() if k not in ("gain_y", "gain_linear_y", "gain_linear_oracle_y")})


@dataclass(frozen=True)
class EvalReport:
    """Per-QP metrics plus the two summaries a trial reports: mean gain over QPs and the survey's Delta."""

    per_qp: tuple[QPMetrics, ...]
    images: int
    dtype: str

    @property
    def gain_y(self) -> float:
        """Mean PSNR-Y gain over the evaluated QPs (dB)."""
        return float(np.mean([m.gain_y for m in self.per_qp]))

    @property
    def delta_y(self) -> float | None:
        """The survey's Delta (mean gain at QP31 and QP63), or None if either QP was not evaluated."""
        gains = {m.qp: m.gain_y for m in self.per_qp}
        return delta(gains) if 31 in gains and 63 in gains else None

    @property
    def gain_linear_y(self) -> float | None:
        """Mean PSNR-Y gain over the linear baseline (dB), or None if any QP lacks it."""
        gains = [m.gain_linear_y for m in self.per_qp]
        return None if any(g is None for g in gains) else float(np.mean(gains))

    @property
    def gain_linear_oracle_y(self) -> float | None:
        """Mean PSNR-Y gain over the per-QP oracle filters (dB), or None if any QP lacks it."""
        gains = [m.gain_linear_oracle_y for m in self.per_qp]
        return None if any(g is None for g in gains) else float(np.mean(gains))

    @property
    def delta_linear_y(self) -> float | None:
        """Delta's form (mean gain at QP31 and QP63) over the linear baseline, or None."""
        gains = {m.qp: m.gain_linear_y for m in self.per_qp if m.gain_linear_y is not None}
        return delta(gains) if 31 in gains and 63 in gains else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_qp": {str(m.qp): m.to_dict() for m in self.per_qp},
            "gain_y": self.gain_y,
            "delta_y": self.delta_y,
            "gain_linear_y": self.gain_linear_y,
            "delta_linear_y": self.delta_linear_y,
            "gain_linear_oracle_y": self.gain_linear_oracle_y,
            "images": self.images,
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        per_qp = tuple(QPMetrics.from_dict(v) for _, v in sorted(data["per_qp"].items(), key=lambda kv: int(kv[0])))
        return cls(per_qp=per_qp, images=int(data["images"]), dtype=str(data["dtype"]))

    def table(self) -> str:
        """A small fixed-width table for logs."""
        rows = [f"{'QP':>3} {'PSNR-Y':>8} {'Lanczos':>8} {'gain':>7} {'linear':>8} {'gain':>7} {'oracle':>8} {'gain':>7} {'SSIM-Y':>7}"]
        for m in self.per_qp:
            lin = f"{'-':>8} {'-':>7}" if m.gain_linear_y is None else f"{m.linear_psnr_y:>8.3f} {m.gain_linear_y:>+7.3f}"
            ora = (f"{'-':>8} {'-':>7}" if m.gain_linear_oracle_y is None
                   else f"{m.linear_oracle_psnr_y:>8.3f} {m.gain_linear_oracle_y:>+7.3f}")
            rows.append(f"{m.qp:>3} {m.psnr_y:>8.3f} {m.lanczos_psnr_y:>8.3f} {m.gain_y:>+7.3f} {lin} {ora} {m.ssim_y:>7.4f}")
        summary = f"mean gain {self.gain_y:+.3f} dB"
        if self.delta_y is not None:
            summary += f", Delta(QP31,QP63) {self.delta_y:+.3f} dB"
        if self.gain_linear_y is not None:
            summary += f"; over the QP-blind linear baseline {self.gain_linear_y:+.3f} dB"
            if self.delta_linear_y is not None:
                summary += f", Delta {self.delta_linear_y:+.3f} dB"
        if self.gain_linear_oracle_y is not None:
            summary += f"; over the per-QP linear oracle {self.gain_linear_oracle_y:+.3f} dB"
        return "\n".join(rows + [summary + f" over {self.images} images ({self.dtype})"])


_BASELINES: "weakref.WeakKeyDictionary[PairedSet, dict[int, tuple[float, float, float]]]" = weakref.WeakKeyDictionary()


def _finite_mean(values: list[float]) -> float:
    # An image reproduced exactly has PSNR inf; cap it at 100 dB so one perfect flat image cannot make
    # the mean infinite (the benchmark never meets this case on natural images).
    return float(np.mean([min(v, 100.0) for v in values]))


def lanczos_baseline(pairs: PairedSet) -> dict[int, tuple[float, float, float]]:
    """``{qp: (psnr_y, psnr_rgb, ssim_y)}`` of the Lanczos x4 upscale of each LR, computed once per set."""
    cached = _BASELINES.get(pairs)
    if cached is not None:
        return cached
    result: dict[int, tuple[float, float, float]] = {}
    for qp in pairs.qps:
        ups = [lanczos_upscale(lr) for lr in pairs.lr[qp]]
        result[qp] = (
        _finite_mean([psnr(u, hr, y=True) for u, hr in zip(ups, pairs.hr)]),
        _finite_mean([psnr(u, hr) for u, hr in zip(ups, pairs.hr)]),
        float(np.mean([ssim(u, hr, y=True) for u, hr in zip(ups, pairs.hr)])),
        )
    _BASELINES[pairs] = result
    return result


def _check_divisible(model: nn.Module, pairs: PairedSet) -> None:
    arch = getattr(model, "arch", None)
    u = getattr(arch, "down_factor", 1)
    bad = [n for n, lr in zip(pairs.names, pairs.lr[pairs.qps[0]]) if lr.shape[0] % u or lr.shape[1] % u]
    if bad:
        raise UserError(
        f"validation LR sizes must be divisible by the network's down_factor {u}; not so for {', '.join(bad[:5])}. "
        "Validation images are cropped to a multiple of 48 HR pixels by load_split(split='val')"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    pairs: PairedSet,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> EvalReport:
    """Metrics of `model` on every image and QP of `pairs` (the model is not modified).

    `dtype=torch.float16` reproduces the challenge's pure-fp16 runtime path (weights and input in
    fp16) for the FP16-vs-FP32 ablation; it needs a device that runs fp16 convolutions.
    """
    _check_divisible(model, pairs)
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    baseline = lanczos_baseline(pairs)
    per_qp = []
    for qp in pairs.qps:
        psnr_y, psnr_rgb, ssim_y = [], [], []
        for lr, hr in zip(pairs.lr[qp], pairs.hr):
            x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).unsqueeze(0)
            x = x.to(device=device, dtype=dtype) / 255.0
            sr = to_uint8(net(x)[0].float().cpu())
            psnr_y.append(psnr(sr, hr, y=True))
            psnr_rgb.append(psnr(sr, hr))
            ssim_y.append(ssim(sr, hr, y=True))
        ly, lrgb, lssim = baseline[qp]
        scores = pairs.linear_baseline
        linear = None if scores is None else scores.mean_psnr_y(qp)
        oracle = None if scores is None else scores.mean_oracle_psnr_y(qp)
        per_qp.append(
            QPMetrics(
                qp=qp,
                psnr_y=_finite_mean(psnr_y),
                psnr_rgb=_finite_mean(psnr_rgb),
                ssim_y=float(np.mean(ssim_y)),
                lanczos_psnr_y=ly,
                lanczos_psnr_rgb=lrgb,
                lanczos_ssim_y=lssim,
                linear_psnr_y=linear,
                linear_oracle_psnr_y=oracle,
            )
        )
    report = EvalReport(per_qp=tuple(per_qp), images=len(pairs), dtype=str(dtype).removeprefix("torch."))
    if not all(math.isfinite(m.psnr_y) for m in report.per_qp):
        raise FloatingPointError("evaluation produced a non-finite PSNR")
    return report
