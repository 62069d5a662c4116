"""trainers.linear_baseline: the closed-form fit, its cache, and the second baseline in every evaluation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from search_space.errors import UserError
from trainers import linear_baseline as lb
from trainers.cache import CacheWarning
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.evaluate import EvalReport, evaluate, lanczos_baseline
from trainers.metrics import lanczos_upscale, psnr, to_uint8
from trainers.proxy import ProxyData

K = lb.DEFAULT_KERNEL


def _known_filter(rng: np.random.Generator) -> np.ndarray:
    """A random full 7x7 cross-channel filter 3 -> 48 with a bias, in the (3K^2+1) x 48 layout."""
    return rng.normal(0.0, 0.05, (3 * K * K + 1, 48))


def test_least_squares_recovers_a_known_linear_degradation_exactly():
    rng = np.random.default_rng(0)
    truth = lb.LinearFilter(qps=(31,), kernel=K, weights=_known_filter(rng), key="truth")
    lrs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 24), (17, 31), (32, 16))]
    # HR = the known filter applied to the LR (replicate padding, pixel-shuffle), unrounded, 0..255 scale.
    hrs = [255.0 * lb.apply(truth, lr, dtype=torch.float64).permute(1, 2, 0).numpy() for lr in lrs]
    for image_weights in (None, [1.0, 5.0, 0.2]):  # per-image weighting cannot move an exact solution
        fitted = lb.fit_filter(lrs, hrs, image_weights=image_weights)
        np.testing.assert_allclose(fitted, truth.weights, atol=1e-6)
        recovered = lb.LinearFilter(qps=(31,), kernel=K, weights=fitted, key="fit")
        for lr, hr in zip(lrs, hrs):  # outputs in the model's [0, 1] scale
            out = lb.apply(recovered, lr, dtype=torch.float64).permute(1, 2, 0).numpy()
            np.testing.assert_allclose(out, hr / 255.0, atol=1e-6)
    # The conv form really is a 7x7 cross-channel conv + pixel-shuffle: check one HR pixel by hand.
    lr, hr = lrs[0], hrs[0]
    y, x, p, q, c = 5, 7, 2, 1, 1  # LR pixel (5, 7), HR offset (2, 1), green
    window = lr[y - 3 : y + 4, x - 3 : x + 4].astype(np.float64).transpose(2, 0, 1).reshape(-1) / 255.0
    column = truth.weights[:, c * 16 + 4 * p + q]
    assert 255.0 * (window @ column[:-1] + column[-1]) == pytest.approx(hr[4 * y + p, 4 * x + q, c], abs=1e-9)


def test_normal_equations_validate_their_input():
    lr = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="not 4x"):
        lb.normal_equations([lr], [np.zeros((16, 16, 3))])
    with pytest.raises(UserError, match="odd"):
        lb.normal_equations([lr], [np.zeros((32, 32, 3))], kernel=6)
    # A flat image is degenerate (every feature alike); the ridge still gives a finite filter.
    assert np.isfinite(lb.fit_filter([lr + 128], [np.full((32, 32, 3), 100.0)])).all()


def _pairs(rng: np.random.Generator, n: int, split: str, qps=(31, 63), size=(48, 96)) -> PairedSet:
    """Synthetic pairs whose LR is a noisy 4x box mean of the HR (no codec needed)."""
    hrs, lrs = [], {qp: [] for qp in qps}
    for _ in range(n):
        base = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.float64)
        hr = np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 8, (*size, 3)), 0, 255).astype(np.uint8)
        hrs.append(hr)
        box = hr.reshape(size[0] // 4, 4, size[1] // 4, 4, 3).mean(axis=(1, 3))
        for qp in qps:
            lrs[qp].append(np.clip(box + rng.normal(0, (qp - 30) / 10, box.shape), 0, 255).round().astype(np.uint8))
    return PairedSet(names=tuple(f"{split}{i}" for i in range(n)), hr=tuple(hrs), lr={q: tuple(v) for q, v in lrs.items()},
                     spec=DegradeSpec(), source="synthetic", split=split)


@pytest.fixture(scope="module")
def synthetic() -> tuple[PairedSet, PairedSet]:
    rng = np.random.default_rng(3)
    return _pairs(rng, 4, "train"), _pairs(rng, 2, "val")


def test_the_cache_is_used_on_the_second_call_and_a_damaged_entry_is_refitted(synthetic, tmp_path, monkeypatch):
    train, _ = synthetic
    baseline = lb.fit_linear_baseline(train, cache_dir=tmp_path)
    first = baseline.per_qp
    files = sorted((tmp_path / "linear-baseline" / f"v{lb.FORMAT_VERSION}").glob("*.npz"))
    assert [f.stem for f in files] == sorted([first[31].key, first[63].key, baseline.blind.key])
    assert first[31].key != first[63].key and first[31].key == lb.filter_key(train, (31,))
    assert baseline.blind.key == lb.filter_key(train, (63, 31)) and baseline.blind.qps == (31, 63)

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again although the cache holds the filter")

    real_fit = lb.fit_filter
    monkeypatch.setattr(lb, "fit_filter", no_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean hit warns about nothing
        second = lb.fit_linear_baseline(train, cache_dir=tmp_path).per_qp
    for qp in (31, 63):
        np.testing.assert_array_equal(second[qp].weights, first[qp].weights)

    fits = []
    monkeypatch.setattr(lb, "fit_filter", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    path = tmp_path / "linear-baseline" / f"v{lb.FORMAT_VERSION}" / f"{first[31].key}.npz"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.warns(CacheWarning, match="damaged"):
        third = lb.fit_linear_baseline(train, cache_dir=tmp_path).per_qp
    assert len(fits) == 1
    np.testing.assert_array_equal(third[31].weights, first[31].weights)
    # A readable file with other numbers in it (bit rot, a hand edit) fails its checksum.
    with np.load(path) as npz:
        stored = {k: npz[k] for k in npz.files}
    stored["weights"] = stored["weights"] + 1e-3
    with path.open("wb") as handle:
        np.savez(handle, **stored)
    with pytest.warns(CacheWarning, match="checksum"):
        fourth = lb.fit_linear_baseline(train, cache_dir=tmp_path).per_qp
    assert len(fits) == 2
    np.testing.assert_array_equal(fourth[31].weights, first[31].weights)


def test_the_key_follows_the_training_images_and_the_degradation(synthetic):
    train, val = synthetic
    other = PairedSet(names=train.names, hr=train.hr, lr=train.lr, spec=DegradeSpec(speed=9), source="x", split="train")
    assert lb.filter_key(train, (31,)) != lb.filter_key(val, (31,))
    assert lb.filter_key(train, (31,)) != lb.filter_key(other, (31,))
    assert lb.filter_key(train, (31,)) != lb.filter_key(train, (31,), kernel=5)
    assert lb.filter_key(train, (31,)) != lb.filter_key(train, (31, 63))


def test_every_evaluation_reports_the_gain_over_the_linear_baseline(synthetic, tmp_path):
    train, val = synthetic
    baseline = lb.fit_linear_baseline(train, cache_dir=tmp_path)
    scored = lb.attach_linear_baseline(val, baseline)
    assert val.linear_baseline is None and scored.linear_baseline is not None
    # The QP-blind filter's own network scores exactly its stored PSNR at every QP: it is measured
    # like a model; and the per-QP oracle's network scores exactly the oracle column at its QP.
    report = evaluate(baseline.blind.module(), scored)
    for m in report.per_qp:
        assert m.linear_psnr_y == pytest.approx(scored.linear_baseline.mean_psnr_y(m.qp)) and m.gain_linear_y == 0.0
    m31 = report.per_qp[0]
    by_hand = np.mean([psnr(to_uint8(lb.apply(baseline.blind, lr)), hr, y=True) for lr, hr in zip(val.lr[31], val.hr)])
    assert m31.linear_psnr_y == pytest.approx(by_hand, abs=1e-12)
    oracle = evaluate(baseline.per_qp[31].module(), scored).per_qp[0]
    assert oracle.gain_linear_oracle_y == 0.0 and oracle.linear_oracle_psnr_y == scored.linear_baseline.mean_oracle_psnr_y(31)

    class Lanczos(torch.nn.Module):
        def forward(self, x):
            lr = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            return torch.from_numpy(lanczos_upscale(lr).astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)

    report = evaluate(Lanczos(), scored)
    d = report.to_dict()
    for qp, m in d["per_qp"].items():
        assert {"psnr_y", "lanczos_psnr_y", "gain_y", "linear_psnr_y", "gain_linear_y", "linear_oracle_psnr_y",
                "gain_linear_oracle_y"} <= set(m)
        assert m["gain_linear_y"] == m["psnr_y"] - m["linear_psnr_y"]
        assert m["gain_linear_oracle_y"] == m["psnr_y"] - m["linear_oracle_psnr_y"]
        assert m["gain_y"] == 0.0  # Lanczos over Lanczos: the existing numbers are unchanged
    gains = [d["per_qp"][q]["gain_linear_y"] for q in ("31", "63")]
    assert d["gain_linear_y"] == pytest.approx(np.mean(gains)) and d["delta_linear_y"] == pytest.approx(np.mean(gains))
    assert {"gain_y", "delta_y", "images", "dtype"} <= set(d)
    assert EvalReport.from_dict(d).to_dict() == d
    assert "oracle" in report.table() and "over the QP-blind linear baseline" in report.table()
    # A split without a fit reports None, and old records (no linear keys) still load.
    plain = evaluate(Lanczos(), val).to_dict()
    assert plain["gain_linear_y"] is None and plain["delta_linear_y"] is None and plain["per_qp"]["31"]["gain_linear_y"] is None
    assert plain["gain_linear_oracle_y"] is None
    old = {k: v for k, v in plain.items() if "linear" not in k}
    old["per_qp"] = {q: {k: v for k, v in m.items() if "linear" not in k} for q, m in plain["per_qp"].items()}
    assert EvalReport.from_dict(old).per_qp[0].linear_psnr_y is None


@pytest.fixture(scope="module")
def builtin_qp31(builtin_root) -> ProxyData:
    return ProxyData.load("builtin", qps=(31,), cache_dir=builtin_root, load_test=False, progress=False)


@pytest.mark.slow  # the builtin train and val splits made, encoded and fitted in a fresh cache (about 3.5 s)
def test_on_builtin_qp31_the_linear_baseline_beats_lanczos(builtin_qp31):
    val = builtin_qp31.val
    lanczos = lanczos_baseline(val)[31][0]
    linear = val.linear_baseline.mean_psnr_y(31)
    assert linear > lanczos + 0.05, (linear, lanczos)
    assert len(val.linear_baseline.psnr_y[31]) == len(val) == 11
    # With one QP the QP-blind filter is the per-QP one.
    assert val.linear_baseline.mean_oracle_psnr_y(31) == linear


def test_proxy_data_load_carves_fits_on_train_and_says_so(tmp_path, rng_image):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(rng_image(96, 96, seed=40 + i)).save(folder / f"{i}.png")
    data = ProxyData.load(folder, qps=(31,), cache_dir=tmp_path / "cache", progress=False)
    assert data.carved == ("val", "test") and (len(data.train), len(data.val), len(data.test)) == (3, 1, 1)
    summary = data.summary()
    assert "3 train (" in summary and "1 val (carved from train)" in summary and "1 test (carved from train)" in summary
    assert data.train.linear_baseline is None  # fitted on train, scored on val and test only
    for split in (data.val, data.test):
        assert split.linear_baseline.filter_key == lb.filter_key(data.train, (31,))
        assert split.linear_baseline.oracle_keys[31] == lb.filter_key(data.train, (31,))
    assert sorted(data.train.anchors) == [3, 5, 7] and data.train.anchors[7].key == lb.filter_key(data.train, (31,))
    # run.json's data record names the baseline, so a run resumed with another one is noticed.
    from trainers.splits import data_identity

    ident = data_identity({"train": data.train, "val": data.val})
    assert ident["val"]["linear_baseline"] == {"format": lb.FORMAT_VERSION, "qp_blind_filter": lb.filter_key(data.train, (31,))}
    assert "linear_baseline" not in ident["train"]
    assert ProxyData.load(folder, qps=(31,), cache_dir=tmp_path / "cache", load_test=False, progress=False).test is None
