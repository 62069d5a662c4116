"""Image-quality metrics computed the way the challenge computed them, and the challenge's Score.

Protocol (github.com/eduardzamfir/NTIRE23-RTSR ``demo/calc_metrics.py`` and ``demo/utils/util_metrics.py``,
reused by AIS 2024):

* the SR output is made 8-bit first: ``clamp(0, 1) * 255``, rounded, uint8 (`to_uint8`); metrics are
  computed on those uint8 images, in float64, with no border crop by default (``crop=0``);
* PSNR = ``10 log10(255^2 / MSE)`` with the MSE over all pixels and channels. Identical images have
  MSE 0 and PSNR ``inf`` (returned as ``math.inf``; average such values with care);
* Y channel (``y=True``): ITU-R BT.601 luma in the 16-235 range as BasicSR's ``test_y_channel``,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in 0..255, kept as unrounded float.
  (The NTIRE23 demo's ``to_y_channel`` swaps the R and B weights; we use the standard form.);
* SSIM: Gaussian window 11x11 with sigma 1.5, ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, the
  'valid' region only (no padding: an HxW image gives an (H-10)x(W-10) SSIM map), averaged; for RGB
  the per-channel SSIMs are averaged.

Challenge summary numbers (survey Table 1):

* `gain` per QP = model PSNR-Y minus Lanczos PSNR-Y (the baseline is `lanczos_upscale` of the same LR);
* `delta` = the mean of the gains at QP 31 and QP 63 (the table's "Δ [dB]");
* `score` = ``2 * 2**Δ / (0.1 * sqrt(runtime_ms))``, in the form of the NTIRE23 scoring notebook,
  which also clamps: Δ <= 0 gives score 0 (a model no better than Lanczos earns nothing). The survey
  prints the same formula without the clamp; for Δ > 0 the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from search_space.errors import UserError
from trainers.lanczos import lanczos_upscale

__all__ = [
    "to_uint8",
    "rgb_to_y",
    "psnr",
    "ssim",
    "gain",
    "delta",
    "score",
    "lanczos_upscale",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "DELTA_QPS",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
DELTA_QPS: tuple[int, int] = (31, 63)
"""The QPs whose PSNR-Y gains the survey averages into Δ."""


def to_uint8(x) -> np.ndarray:
    """Float image(s) in [0, 1] -> uint8, as the challenge's ``tensor2uint``: clamp, x255, round.

    Accepts a torch tensor laid out CxHxW or BxCxHxW (returned as HxWxC / BxHxWxC, the layout of an
    image file) or a NumPy array (layout kept). Arithmetic is float32 like the reference; rounding is
    NumPy's round-half-to-even.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().to(device="cpu", dtype=torch.float32)
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        elif t.ndim == 4:
            t = t.permute(0, 2, 3, 1)
        else:
            raise ValueError(f"to_uint8 expects a CxHxW or BxCxHxW tensor, got shape {tuple(t.shape)}")
        arr = t.numpy()
    else:
        arr = np.asarray(x, dtype=np.float32)
    arr = np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0) * np.float32(255.0)
    return np.round(arr).astype(np.uint8)


def _check_pair(a: np.ndarray, b: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"metrics take uint8 images (round with to_uint8 first), got {a.dtype} and {b.dtype}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {a.shape}")
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    if crop:
        if 2 * crop >= min(a.shape[0], a.shape[1]):
            raise ValueError(f"crop={crop} removes the whole {a.shape[0]}x{a.shape[1]} image")
        a = a[crop:-crop, crop:-crop]
        b = b[crop:-crop, crop:-crop]
    return a.astype(np.float64), b.astype(np.float64)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma (16-235, float64, unrounded) of an HxWx3 RGB image with values in 0..255."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB image, got shape {img.shape}")
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def psnr(a: np.ndarray, b: np.ndarray, *, y: bool = False, crop: int = 0) -> float:
    """PSNR in dB of two uint8 images (RGB, or BT.601 Y with ``y=True``); ``inf`` when identical."""
    fa, fb = _check_pair(a, b, crop)
    if y:
        fa, fb = rgb_to_y(fa), rgb_to_y(fb)
    mse = float(np.mean((fa - fb) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with the 1-D kernel ``g`` along both axes, 'valid' output only."""
    k = len(g)
    h, w = img.shape
    rows = sum(g[i] * img[i : h - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    g = _gaussian_1d()
    mu_x = _filter_valid(x, g)
    mu_y = _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, *, y: bool = False, crop: int = 0) -> float:
    """SSIM of two uint8 images (mean over RGB channels, or on BT.601 Y with ``y=True``)."""
    fa, fb = _check_pair(a, b, crop)
    if min(fa.shape[0], fa.shape[1]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after cropping, got {fa.shape[:2]}")
    if y:
        return _ssim_plane(rgb_to_y(fa), rgb_to_y(fb))
    if fa.ndim == 2:
        return _ssim_plane(fa, fb)
    return float(np.mean([_ssim_plane(fa[..., c], fb[..., c]) for c in range(fa.shape[2])]))


def gain(model_psnr_y: Mapping[int, float], lanczos_psnr_y: Mapping[int, float]) -> dict[int, float]:
    """Per-QP PSNR-Y gain over the Lanczos baseline, ``{qp: model[qp] - lanczos[qp]}``, in dB."""
    if set(model_psnr_y) != set(lanczos_psnr_y):
        raise ValueError(f"model and Lanczos PSNRs cover different QPs: {sorted(model_psnr_y)} vs {sorted(lanczos_psnr_y)}")
    return {int(qp): float(model_psnr_y[qp]) - float(lanczos_psnr_y[qp]) for qp in sorted(model_psnr_y)}


def delta(gains_by_qp: Mapping[int, float], *, qps: tuple[int, int] = DELTA_QPS) -> float:
    """The survey's Δ: the mean PSNR-Y gain at QP 31 and QP 63 (``qps`` picks other end points)."""
    missing = [qp for qp in qps if qp not in gains_by_qp]
    if missing:
        raise UserError(
            f"Δ averages the gains at QP {' and '.join(map(str, qps))}, but QP {missing} was not evaluated "
            f"(have {sorted(gains_by_qp)}); evaluate those QPs or pass other end points"
        )
    return float(np.mean([float(gains_by_qp[qp]) for qp in qps]))


def score(delta_db: float, runtime_ms: float) -> float:
    """The challenge Score ``2 * 2**Δ / (0.1 * sqrt(runtime_ms))``, 0 when Δ <= 0 (NTIRE23 notebook form)."""
    if not runtime_ms > 0 or not math.isfinite(runtime_ms):
        raise ValueError(f"runtime must be a positive number of milliseconds, got {runtime_ms}")
    diff = max(float(delta_db), 0.0)
    if diff == 0.0:
        return 0.0
    return 2.0 * 2.0**diff / (0.1 * math.sqrt(runtime_ms))
