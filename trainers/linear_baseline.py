"""The linear baseline: the best x4 linear filter for a dataset, fitted in closed form.

Why a second baseline: Lanczos ignores the compression, so a network can "beat" it by learning
nothing a single convolution could not (this filter is Delta +0.16 dB over Lanczos on `builtin` val,
+0.11 on test: above Lanczos++'s published 0.07). Every evaluation therefore also reports the gain
over this filter; a design that does not beat it has learned nothing a 7x7 convolution could not.

The filter is a full KxK convolution 3 -> 48 with a bias on the LR (replicate padding), then
pixel-shuffle(4): the deploy form of a one-layer network, so it is evaluated exactly like a model
(`apply` -> `to_uint8` -> PSNR-Y, no border crop). It is fitted on the *training* split's (LR, HR)
pairs by accumulating the normal equations over every LR pixel, ``X^T X`` (3K^2+1 square) and
``X^T Y`` (3K^2+1 x 48), in float64, and solving with a tiny ridge (relative to the mean diagonal)
so that a degenerate set (flat images) still has a unique solution.

QP-blind, with a per-QP oracle beside it. A network is one network for every QP, so the baseline it
is compared with (``gain_linear_y``) is one filter too: `fit_pooled_filter` pools the equations of
every QP of the run. The filter fitted separately per QP knows the quantizer a network never sees;
it stays as an oracle column (``gain_linear_oracle_y``), +0.107 dB over Lanczos on `builtin` test where
the pooled one is +0.105 (`benchmarks/results/transfer_cpu.md`). The pooled fits at kernel 3, 5 and 7 are
also the frozen `fitted` anchors of `search_space.network.FittedAnchor` (`anchor_filters`).

Each (image, QP) pair's equations are weighted by 1 / (its Lanczos MSE-Y). Why: the metric is the *mean of
per-image PSNRs*, and d PSNR_i = -10/ln10 * d MSE_i / MSE_i, so this weighting makes least squares
the first-order fit of that metric. Unweighted least squares minimises pooled MSE, which the
textured images dominate: on `builtin` it lowered pooled MSE but gave Delta +0.07 dB on val and
-0.07 dB on test (-1.5 dB at QP31 on a smooth gradient); weighted, +0.16 and +0.11 dB.

Fitted weights are cached as ``<cache root>/linear-baseline/v<FORMAT_VERSION>/<key>.npz``, keyed by
the training images' content hashes, the QPs, K, the ridge, the weighting and the degradation hash; written
atomically, and a file that does not load, does not match its key or fails its checksum is
recomputed with a `CacheWarning`, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search_space.configio import atomic_write, content_hash
from search_space.errors import UserError
from trainers.data import SCALE
from trainers.linear_filter import (
    DEFAULT_KERNEL,
    FORMAT_VERSION,
    OUT_CHANNELS,
    LinearBaselineScores,
    LinearFilter,
    apply,
    feature_count,
)
from trainers.splits import image_keys

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainers.data import PairedSet

__all__ = [
    "ANCHOR_KERNELS",
    "DEFAULT_KERNEL",
    "FORMAT_VERSION",
    "RIDGE",
    "WEIGHTING",
    "LinearBaseline",
    "LinearFilter",
    "LinearBaselineScores",
    "anchor_filters",
    "apply",
    "attach_linear_baseline",
    "filter_key",
    "fit_filter",
    "fit_linear_baseline",
    "fit_per_qp_filters",
    "fit_pooled_filter",
    "lanczos_weights",
    "load_fitted_anchors",
    "normal_equations",
    "score_linear_baseline",
    "solve_normal_equations",
]

ANCHOR_KERNELS: tuple[int, ...] = (3, 5, 7)
"""Kernel sides of the `fitted` anchors (`search_space.arch.FITTED_ANCHORS`): 0.67, 1.87 and 3.66
GMACs at 540x960 as a dense conv 3 -> 48, so the search can trade the anchor's gain for its cost."""
RIDGE = 1e-9
"""Ridge added to the diagonal of ``X^T X``, relative to its mean diagonal: only for degenerate sets."""
WEIGHTING = "inverse-lanczos-mse-y"
"""How training images are weighted (see the module docstring); part of the cache key."""
_MIN_MSE = 255.0**2 * 1e-10  # an image Lanczos reproduces exactly weighs as one at 100 dB PSNR
_CHUNK_PIXELS = 16384  # LR pixels per accumulation block: 16k x 148 float64 = 19 MB of features


# -- the least-squares fit --------------------------------------------------------------------------


def _check_pair(lr: np.ndarray, hr: np.ndarray) -> None:
    if lr.ndim != 3 or lr.shape[2] != 3 or hr.shape != (SCALE * lr.shape[0], SCALE * lr.shape[1], 3):
        raise ValueError(f"linear baseline: HR {hr.shape} is not 4x LR {lr.shape} (both HxWx3)")


def _lr_features(lr: np.ndarray, kernel: int) -> np.ndarray:
    """H x W x 3 x K x K view of every LR pixel's replicate-padded KxK neighbourhood, in [0, 1]."""
    r = kernel // 2
    x = np.asarray(lr, dtype=np.float64) / 255.0
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(0, 1))


def _hr_targets(hr: np.ndarray) -> np.ndarray:
    """(H*W) x 48 targets: row (y, x), column c*16 + 4p + q = HR pixel (4y+p, 4x+q, c), in [0, 1]."""
    h, w = hr.shape[0] // SCALE, hr.shape[1] // SCALE
    blocks = np.asarray(hr, dtype=np.float64).reshape(h, SCALE, w, SCALE, 3).transpose(0, 2, 4, 1, 3)
    return blocks.reshape(h * w, OUT_CHANNELS) / 255.0


def _syrk_add(xtx: np.ndarray, x: np.ndarray) -> None:
    """``xtx += x^T x`` (upper triangle via BLAS syrk when scipy is there: half the flops)."""
    try:
        from scipy.linalg.blas import dsyrk
    except ImportError:  # pragma: no cover - scipy is a dependency, this is only a fallback
        xtx += x.T @ x
        return
    xtx[:] = dsyrk(1.0, x.T, beta=1.0, c=xtx, trans=0, lower=0)  # x.T is Fortran-ordered: no copy


def lanczos_weights(lrs: Sequence[np.ndarray], hrs: Sequence[np.ndarray]) -> np.ndarray:
    """Per-image weights 1 / MSE-Y of the Lanczos x4 upscale (uint8, as evaluated), normalised to mean 1."""
    from trainers.metrics import lanczos_upscale, rgb_to_y

    mse = np.array(
        [max(float(np.mean((rgb_to_y(lanczos_upscale(lr)) - rgb_to_y(hr)) ** 2)), _MIN_MSE) for lr, hr in zip(lrs, hrs)]
    )
    weights = 1.0 / mse
    return weights / weights.mean()


def normal_equations(
    lrs: Sequence[np.ndarray],
    hrs: Sequence[np.ndarray],
    *,
    kernel: int = DEFAULT_KERNEL,
    image_weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X^T X, X^T Y)`` over every LR pixel of the pairs, float64, features (c, dy, dx, bias).

    ``image_weights`` scales each image's equations (default 1). Accumulated in blocks of LR rows, so memory
    stays ~20 MB whatever the image size.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise UserError(f"the linear baseline's kernel must be an odd positive size (e.g. 7), got {kernel}")
    if len(lrs) != len(hrs) or not lrs:
        raise ValueError("normal_equations needs as many LR as HR images, at least one")
    if image_weights is None:
        image_weights = np.ones(len(lrs))
    if len(image_weights) != len(lrs) or not all(np.isfinite(w) and w > 0 for w in image_weights):
        raise ValueError("normal_equations: one positive, finite weight per image")
    n = feature_count(kernel)
    xtx = np.zeros((n, n), dtype=np.float64)
    xty = np.zeros((n, OUT_CHANNELS), dtype=np.float64)
    for lr, hr, weight in zip(lrs, hrs, image_weights):
        _check_pair(lr, hr)
        root = float(np.sqrt(weight))
        windows = _lr_features(lr, kernel)
        targets = _hr_targets(hr)
        h, w = lr.shape[:2]
        rows = max(1, _CHUNK_PIXELS // w)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            x = np.empty(((y1 - y0) * w, n), dtype=np.float64)
            x[:, :-1] = windows[y0:y1].reshape(-1, n - 1)
            x[:, -1] = 1.0
            x *= root  # sqrt(w) on both sides: w x^T x and w x^T y
            _syrk_add(xtx, x)
            xty += x.T @ (targets[y0 * w : y1 * w] * root)
    upper = np.triu(xtx)
    return upper + np.triu(xtx, 1).T, xty


def solve_normal_equations(xtx: np.ndarray, xty: np.ndarray, *, ridge: float = RIDGE) -> np.ndarray:
    """``(X^T X + ridge * mean(diag) * I)^-1 X^T Y`` in float64."""
    scale = float(np.mean(np.diag(xtx)))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("linear baseline: the training images give no information (empty or non-finite normal equations)")
    a = xtx + (ridge * scale) * np.eye(xtx.shape[0])
    return np.linalg.solve(a, xty)


def fit_filter(
    lrs: Sequence[np.ndarray],
    hrs: Sequence[np.ndarray],
    *,
    kernel: int = DEFAULT_KERNEL,
    ridge: float = RIDGE,
    image_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Least-squares weights ((3K^2+1) x 48, float64) mapping LR neighbourhoods to HR 4x4 blocks.

    ``image_weights``: one per image (default: equal); `fit_linear_baseline` passes `lanczos_weights`.
    """
    xtx, xty = normal_equations(lrs, hrs, kernel=kernel, image_weights=image_weights)
    return solve_normal_equations(xtx, xty, ridge=ridge)


# -- cached fit per training split ------------------------------------------------------------------


def filter_key(train: PairedSet, qps: Sequence[int], *, kernel: int = DEFAULT_KERNEL) -> str:
    """Content hash of everything that decides the weights fitted on ``train``'s pairs at ``qps``."""
    return content_hash(
        {
            "what": "linear-baseline",
            "format": FORMAT_VERSION,
            "kernel": int(kernel),
            "ridge": RIDGE,
            "weighting": WEIGHTING,
            "qps": sorted({int(q) for q in qps}),
            "degradation": train.spec.hash,
            "train": list(image_keys(train)),
        }
    )


def _cache_folder(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        from trainers.cache import default_cache_root

        cache_dir = default_cache_root()
    return Path(cache_dir).expanduser() / "linear-baseline" / f"v{FORMAT_VERSION}"


def _checksum(weights: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f8").tobytes()).hexdigest()


def _read_cached(path: Path, key: str, kernel: int) -> np.ndarray | None:
    """The cached weights, or None when absent; a damaged entry warns and reads as absent."""
    from trainers.cache import CacheWarning

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        warnings.warn(f"linear-baseline cache entry {path} cannot be read ({exc}); fitting again", CacheWarning, stacklevel=3)
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            weights = np.array(npz["weights"], dtype=np.float64)
            stored_key = str(npz["key"])
            checksum = str(npz["sha256"])
        if stored_key != key:
            raise ValueError(f"it holds key {stored_key}")
        if weights.shape != (feature_count(kernel), OUT_CHANNELS):
            raise ValueError(f"weights of shape {weights.shape}")
        if checksum != _checksum(weights) or not np.isfinite(weights).all():
            raise ValueError("checksum mismatch")
    except Exception as exc:  # noqa: BLE001 - any damage means "not cached"; the fit is redone
        warnings.warn(f"linear-baseline cache entry {path} is damaged ({exc}); fitting again", CacheWarning, stacklevel=3)
        return None
    return weights


def _write_cached(path: Path, key: str, weights: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, weights=weights, key=np.array(key), sha256=np.array(_checksum(weights)))
    atomic_write(path, buffer.getvalue())


def _check_qps(train: PairedSet, qps: Sequence[int]) -> tuple[int, ...]:
    wanted = tuple(sorted({int(q) for q in qps}))
    missing = [q for q in wanted if q not in train.lr]
    if not wanted or missing:
        raise UserError(f"the linear baseline needs the training split at QP {missing or '(none given)'}, which has QPs "
                        f"{list(train.qps)}; load both splits with the same qps")
    return wanted


def _cached_fit(train: PairedSet, qps: tuple[int, ...], kernel: int, folder: Path) -> LinearFilter:
    """The filter of ``train``'s pairs at ``qps`` (pooled when several), from the cache or fitted now.

    Each (image, QP) pair weighs 1 / its Lanczos MSE-Y, normalised over all pairs together: the
    first-order fit of the mean over QPs of the mean per-image PSNR-Y (see the module docstring).
    """
    key = filter_key(train, qps, kernel=kernel)
    path = folder / f"{key}.npz"
    weights = _read_cached(path, key, kernel)
    if weights is None:
        lrs = [lr for qp in qps for lr in train.lr[qp]]
        hrs = list(train.hr) * len(qps)
        weights = fit_filter(lrs, hrs, kernel=kernel, image_weights=lanczos_weights(lrs, hrs))
        if not np.isfinite(weights).all():
            raise FloatingPointError(f"the linear filter fit (K={kernel}, QPs {list(qps)}) produced non-finite weights")
        _write_cached(path, key, weights)
    return _frozen_filter(qps, kernel, weights, key)


def _fit_many(train: PairedSet, jobs: Sequence[tuple[tuple[int, ...], int]], cache_dir: str | Path | None,
              progress: bool, what: str) -> list[LinearFilter]:
    from tqdm.auto import tqdm

    folder = _cache_folder(cache_dir)
    return [_cached_fit(train, qps, kernel, folder)
            for qps, kernel in tqdm(jobs, desc=f"fitting {what} on {len(train)} {train.split} images", unit="filter",
                                    disable=not progress, file=sys.stderr)]


def fit_pooled_filter(
    train: PairedSet, *, qps: Sequence[int] | None = None, kernel: int = DEFAULT_KERNEL,
    cache_dir: str | Path | None = None, progress: bool = False,
) -> LinearFilter:
    """The QP-blind filter: one least-squares fit over the pairs of every QP in ``qps`` (default: all of
    ``train``'s), read from the cache if there. ``cache_dir`` is the cache root (default
    `trainers.cache.default_cache_root`)."""
    wanted = _check_qps(train, train.qps if qps is None else qps)
    return _fit_many(train, [(wanted, kernel)], cache_dir, progress, "the QP-blind linear filter")[0]


def fit_per_qp_filters(
    train: PairedSet, *, qps: Sequence[int] | None = None, kernel: int = DEFAULT_KERNEL,
    cache_dir: str | Path | None = None, progress: bool = False,
) -> dict[int, LinearFilter]:
    """``{qp: LinearFilter}``: one filter per QP (the oracle that knows the quantizer), cached."""
    wanted = _check_qps(train, train.qps if qps is None else qps)
    filters = _fit_many(train, [((qp,), kernel) for qp in wanted], cache_dir, progress, "the per-QP linear filters")
    return dict(zip(wanted, filters))


@dataclass(frozen=True)
class LinearBaseline:
    """What the linear baseline of one training split is: the QP-blind filter a network is compared
    with, and the per-QP oracle filters reported beside it."""

    blind: LinearFilter
    per_qp: Mapping[int, LinearFilter]


def fit_linear_baseline(
    train: PairedSet,
    *,
    qps: Sequence[int] | None = None,
    kernel: int = DEFAULT_KERNEL,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> LinearBaseline:
    """The QP-blind filter and the per-QP oracles of ``train`` (every QP of it by default), cached."""
    wanted = _check_qps(train, train.qps if qps is None else qps)
    jobs = [(wanted, kernel)] + [((qp,), kernel) for qp in wanted]
    blind, *per_qp = _fit_many(train, jobs, cache_dir, progress, "the linear baseline")
    return LinearBaseline(blind=blind, per_qp=dict(zip(wanted, per_qp)))


def anchor_filters(
    train: PairedSet, *, kernels: Sequence[int] = ANCHOR_KERNELS, cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[int, LinearFilter]:
    """``{kernel: QP-blind filter}`` for the `fitted` anchors (pooled over every QP of ``train``)."""
    jobs = [(train.qps, int(k)) for k in kernels]
    return dict(zip((int(k) for k in kernels), _fit_many(train, jobs, cache_dir, progress, "the fitted anchors")))


def _frozen_filter(qps: tuple[int, ...], kernel: int, weights: np.ndarray, key: str) -> LinearFilter:
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    weights.setflags(write=False)
    return LinearFilter(qps=tuple(qps), kernel=kernel, weights=weights, key=key)


def load_fitted_anchors(model: nn.Module, train: PairedSet, *, cache_dir: str | Path | None = None) -> list[str]:
    """Give every `FittedAnchor` of ``model`` the QP-blind filter of ``train`` at its kernel side.

    The filters come from ``train.anchors`` (fitted once by `ProxyData.load`) or, when the split
    carries none, from `anchor_filters` (the on-disk cache, else a fit now). Returns the filter keys
    installed (empty for a network without a fitted anchor).
    """
    import torch

    from search_space.network import fitted_anchors

    anchors = fitted_anchors(model)
    if not anchors:
        return []
    filters = dict(train.anchors or {})
    missing = sorted({a.kernel for a in anchors} - set(filters))
    if missing:
        filters.update(anchor_filters(train, kernels=missing, cache_dir=cache_dir))
    keys = []
    for anchor in anchors:
        weight, bias = filters[anchor.kernel].conv_parameters()
        anchor.load_filter(torch.from_numpy(weight), torch.from_numpy(bias), key=filters[anchor.kernel].key)
        keys.append(filters[anchor.kernel].key)
    return keys


# -- applying and scoring ---------------------------------------------------------------------------


def _psnr_y_per_image(filt: LinearFilter, pairs: PairedSet, qp: int) -> tuple[float, ...]:
    from trainers.metrics import psnr, to_uint8

    return tuple(psnr(to_uint8(apply(filt, lr)), hr, y=True) for lr, hr in zip(pairs.lr[qp], pairs.hr))


def score_linear_baseline(baseline: LinearBaseline, pairs: PairedSet) -> LinearBaselineScores:
    """PSNR-Y of the QP-blind filter and of the per-QP oracles on every image and QP of ``pairs``,
    measured as a model's output is."""
    missing = [q for q in pairs.qps if q not in baseline.blind.qps or q not in baseline.per_qp]
    if missing:
        raise UserError(f"no linear-baseline filter for QP {missing} of {pairs.source} [{pairs.split}]; fit it on a training split with those QPs")
    return LinearBaselineScores(
        psnr_y={qp: _psnr_y_per_image(baseline.blind, pairs, qp) for qp in pairs.qps},
        filter_key=baseline.blind.key,
        oracle_psnr_y={qp: _psnr_y_per_image(baseline.per_qp[qp], pairs, qp) for qp in pairs.qps},
        oracle_keys={qp: baseline.per_qp[qp].key for qp in pairs.qps},
        kernel=baseline.blind.kernel,
    )


def attach_linear_baseline(pairs: PairedSet, baseline: LinearBaseline) -> PairedSet:
    """A copy of the evaluation split ``pairs`` that carries the baseline's scores (see `LinearBaselineScores`)."""
    return dataclasses.replace(pairs, linear_baseline=score_linear_baseline(baseline, pairs))
