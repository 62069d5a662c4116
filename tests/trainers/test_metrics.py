"""trainers.metrics against hand-computed values, an independent loop SSIM, scikit-image, and the survey table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import trainers.lanczos
from search_space.errors import UserError
from trainers import metrics
from trainers.metrics import delta, gain, psnr, rgb_to_y, score, ssim, to_uint8

C1 = (0.01 * 255) ** 2  # 6.5025
C2 = (0.03 * 255) ** 2  # 58.5225


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- PSNR


def test_psnr_of_a_2x2_image_with_one_wrong_sample():
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 0, 2] = 10  # squared error 100 over 12 samples: MSE = 100 / 12
    assert psnr(a, b) == pytest.approx(10 * math.log10(65025 * 12 / 100), abs=1e-12)  # 38.9226 dB
    assert psnr(a, b) == pytest.approx(38.92262, abs=1e-5)


def test_psnr_extremes():
    black = np.zeros((3, 3, 3), dtype=np.uint8)
    assert psnr(black, np.full_like(black, 255)) == pytest.approx(0.0, abs=1e-12)  # MSE = 255^2
    assert psnr(black, np.ones_like(black)) == pytest.approx(20 * math.log10(255), abs=1e-12)  # MSE = 1: 48.13 dB
    assert psnr(black, black) == math.inf  # identical: documented as inf


def test_psnr_y_of_black_vs_pure_red():
    black = np.zeros((2, 2, 3), dtype=np.uint8)
    red = black.copy()
    red[..., 0] = 255
    # Y(black) = 16, Y(red) = 16 + 65.481 = 81.481: a constant Y error of 65.481.
    assert psnr(black, red, y=True) == pytest.approx(20 * math.log10(255 / 65.481), abs=1e-12)


def test_rgb_to_y_bt601_values():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(px)[0], [81.481, 144.553, 40.966, 235.0, 16.0], atol=1e-12)


def test_psnr_crop_ignores_the_border():
    a = _img(8, 8)
    b = a.copy()
    b[0, :] ^= 0xFF
    b[:, -1] ^= 0x0F
    assert math.isfinite(psnr(a, b))
    assert psnr(a, b, crop=1) == math.inf


def test_psnr_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        psnr(_img(4, 4), _img(4, 5))
    with pytest.raises(ValueError, match="uint8"):
        psnr(_img(4, 4).astype(np.float32), _img(4, 4).astype(np.float32))


# --- SSIM


def _ssim_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Direct, non-vectorised SSIM of two 2-D float arrays: 11x11 Gaussian (sigma 1.5) window, valid region."""
    g1 = [math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)]
    total = sum(g1) ** 2
    win = [[g1[i] * g1[j] / total for j in range(11)] for i in range(11)]
    vals = []
    for r in range(x.shape[0] - 10):
        for c in range(x.shape[1] - 10):
            mx = my = sxx = syy = sxy = 0.0
            for i in range(11):
                for j in range(11):
                    wv, a, b = win[i][j], float(x[r + i, c + j]), float(y[r + i, c + j])
                    mx += wv * a
                    my += wv * b
                    sxx += wv * a * a
                    syy += wv * b * b
                    sxy += wv * a * b
            vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
            vals.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return sum(vals) / len(vals)


def test_ssim_of_identical_images_is_one():
    a = _img(20, 24)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, y=True) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_by_hand():
    # Flat 100 vs flat 110: no variance, so SSIM = (2*100*110 + C1) / (100^2 + 110^2 + C1) everywhere.
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    b = np.full((16, 16, 3), 110, dtype=np.uint8)
    expected = (22000 + 6.5025) / (10000 + 12100 + 6.5025)  # 0.995476...
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.9954764, abs=1e-7)


def test_ssim_matches_direct_loop_implementation():
    a = _img(13, 15, seed=1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    per_channel = [_ssim_loops(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)]
    assert ssim(a, b) == pytest.approx(sum(per_channel) / 3, abs=1e-12)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    assert ssim(a, b, y=True) == pytest.approx(_ssim_loops(ya, yb), abs=1e-12)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a = _img(40, 37, seed=3)
    b = np.clip(a.astype(int) + np.random.default_rng(4).integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)
    ref_y = structural_similarity(rgb_to_y(a), rgb_to_y(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ssim(a, b, y=True) == pytest.approx(ref_y, abs=1e-10)


def test_ssim_needs_a_full_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_img(10, 30), _img(10, 30))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_img(14, 14), _img(14, 14), crop=2)


# --- to_uint8


def test_to_uint8_clamps_scales_and_rounds_half_to_even():
    t = torch.tensor([-1.0, 0.0, 0.2, 0.5, 1.0, 3.0]).reshape(1, 1, 6).expand(3, 1, 6)  # C x H x W
    out = to_uint8(t)
    assert out.dtype == np.uint8 and out.shape == (1, 6, 3)  # H x W x C like an image file
    # 0.2*255 = 51; 0.5*255 = 127.5 -> 128 (half to even); out-of-range values clamp.
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 51, 128, 255, 255])
    arr = to_uint8(np.array([[[0.25, 1.2, -3.0]]]))
    np.testing.assert_array_equal(arr, [[[64, 255, 0]]])  # 63.75 -> 64
    # float32(126.5 / 255) * 255 is exactly 126.5 in float32; half-to-even gives 126 (half-up would give 127).
    x = np.float32(126.5 / 255)
    assert x * np.float32(255) == np.float32(126.5)
    assert to_uint8(np.array([x], dtype=np.float32))[0] == 126
    assert to_uint8(torch.tensor([[[float(x)]]]))[0, 0, 0] == 126


def test_to_uint8_batch_layout():
    t = torch.zeros(2, 3, 4, 5)
    t[1, 0, 2, 3] = 1.0
    out = to_uint8(t)
    assert out.shape == (2, 4, 5, 3)
    assert out[1, 2, 3, 0] == 255 and out.sum() == 255


# --- gain, delta, score (survey Table 1)


def test_delta_reproduces_the_survey_table():
    # CASR row: PSNR-Y 33.11 / 29.17 at QP31 / QP63; Lanczos 32.75 / 29.12; Table 1 prints delta 0.205.
    g = gain({31: 33.11, 63: 29.17}, {31: 32.75, 63: 29.12})
    assert g[31] == pytest.approx(0.36, abs=1e-9) and g[63] == pytest.approx(0.05, abs=1e-9)
    assert delta(g) == pytest.approx(0.205, abs=1e-9)


def test_gain_and_delta_errors():
    with pytest.raises(ValueError, match="different QPs"):
        gain({31: 1.0}, {63: 1.0})
    with pytest.raises(UserError, match=r"QP \[63\] was not evaluated"):
        delta({31: 0.1, 39: 0.2})
    assert delta({39: 0.2, 47: 0.4}, qps=(39, 47)) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "table_score,delta_db,runtime_ms",
    [(33.70, 0.205, 0.468), (33.24, 0.070, 0.399), (12.00, 0.720, 7.542), (27.27, 0.350, 0.874), (22.77, 0.545, 1.642)],
    ids=["CASR", "Lanczos++", "RVSR", "BasicVision", "ANUNet"],
)
def test_score_reproduces_the_survey_table(table_score, delta_db, runtime_ms):
    assert score(delta_db, runtime_ms) == pytest.approx(table_score, abs=0.006)


def test_score_clamps_non_positive_delta_and_checks_runtime():
    assert score(0.0, 1.0) == 0.0
    assert score(-0.3, 1.0) == 0.0
    # The notebook's worked example: delta 0.302345 dB at 10 ms -> 7.80.
    assert score(32 - 31.697655, 10.0) == pytest.approx(7.80, abs=0.005)
    with pytest.raises(ValueError, match="runtime"):
        score(0.1, 0.0)


def test_lanczos_upscale_is_reexported():
    assert metrics.lanczos_upscale is trainers.lanczos.lanczos_upscale
