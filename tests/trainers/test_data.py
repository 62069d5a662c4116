"""trainers.data: QP sampling, split loading and the aligned, reproducible patch sampler.

Most tests use a stand-in LR cache whose "LR" is the exact 4x4 box mean of the HR, so patch alignment
can be checked pixel for pixel and no AVIF encoding is needed; one test runs the real `LRCache`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from search_space.errors import UserError
from trainers.data import (
    EVAL_HR_MULTIPLE,
    PairedSet,
    PatchSampler,
    QPSampling,
    crop_to_multiple,
    load_split,
    resolve_split_folder,
)
from trainers.splits import carve, check_disjoint, load_splits
from trainers.imageio import DataWarning

QPS = (31, 39, 47, 55, 63)


@dataclass(frozen=True)
class FakeSpec:
    hash: str = "fakespec0001"


def box4(hr: np.ndarray) -> np.ndarray:
    """Exact 4x downscale: the rounded mean of each 4x4 block (commutes with flips and rotations)."""
    h, w, c = hr.shape
    return np.rint(hr.reshape(h // 4, 4, w // 4, 4, c).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


class FakeCache:
    """Duck-typed `LRCache`: LR at QP q is box4(HR) + (q - 31) // 8, clipped (so QPs are distinguishable)."""

    def __init__(self, spec=FakeSpec(), root=None):
        self.spec = spec
        self.root = root  # where load_split keeps the builtin images (None: the default cache root)
        self.calls = 0

    def lr_images(self, hrs, qps, *, workers=None, progress=True):
        self.calls += 1
        return {q: [np.clip(box4(h).astype(int) + (q - 31) // 8, 0, 255).astype(np.uint8) for h in hrs] for q in qps}


def make_pairs(sizes=((64, 96), (80, 64), (48, 48)), qps=QPS, seed=0) -> PairedSet:
    rng = np.random.default_rng(seed)
    hrs = tuple(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes)
    lr = FakeCache().lr_images(hrs, qps)
    return PairedSet(
        names=tuple(f"img{i}" for i in range(len(hrs))),
        hr=hrs,
        lr={q: tuple(v) for q, v in lr.items()},
        spec=FakeSpec(),
        source="memory",
        split="train",
    )


def to_u8(t) -> np.ndarray:
    """Bx3xHxW float tensor in [0, 1] -> BxHxWx3 uint8 (exact for values that were k / 255)."""
    return np.rint(t.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


# --- QPSampling


@pytest.mark.parametrize(
    "text,kind,qps",
    [
        ("uniform", "uniform", ()),
        ("fixed:31", "fixed", (31,)),
        (" Fixed : 47 ", "fixed", (47,)),
        ("fixed:39,31", "fixed", (31, 39)),
        ("curriculum", "curriculum", ()),
    ],
)
def test_qp_sampling_parses_strings(text, kind, qps):
    s = QPSampling.parse(text)
    assert (s.kind, s.qps) == (kind, qps)
    assert QPSampling.parse(str(s)) == s
    assert QPSampling.from_dict(s.to_dict()) == s
    assert QPSampling.parse(s.to_dict()) == s and QPSampling.parse(s) is s


@pytest.mark.parametrize(
    "bad",
    ["fixed", "fixed:64", "fixed:-1", "fixed:31,31", "fixed:31,", "random", "", {"kind": "uniform", "qps": [31]}, {"kind": "fixed", "q": 3}, 31],
)
def test_qp_sampling_rejects_bad_values(bad):
    with pytest.raises(UserError):
        QPSampling.parse(bad)


def test_qp_sampling_hash_is_a_content_hash():
    assert QPSampling.parse("fixed:31").hash == QPSampling(kind="fixed", qps=(31,)).hash
    assert QPSampling.parse("fixed:39,31").hash == QPSampling.parse("fixed:31,39").hash
    assert str(QPSampling.parse("fixed:39,31")) == "fixed:31,39"  # the recipe's canonical spelling
    assert len({QPSampling.parse(t).hash for t in ("uniform", "curriculum", "fixed:31", "fixed:39", "fixed:31,39")}) == 5


def test_curriculum_schedule_by_hand():
    c = QPSampling.parse("curriculum")
    # n = 5 QPs over 10 steps: k = ceil((step + 1) * 5 / 10) -> 1,1,2,2,3,3,4,4,5,5.
    expected = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    got = [len(c.allowed([63, 31, 47, 39, 55], step=s, total_steps=10)) for s in range(10)]
    assert got == expected
    assert c.allowed([63, 31, 47, 39, 55], step=0, total_steps=10) == (31,)  # easiest = lowest QP
    assert c.allowed(QPS, step=2, total_steps=10) == (31, 39)
    # 3 steps, 5 QPs: ceil(5/3) = 2, ceil(10/3) = 4, 5.
    assert [len(c.allowed(QPS, step=s, total_steps=3)) for s in range(3)] == [2, 4, 5]
    assert c.allowed(QPS, step=50, total_steps=10) == QPS  # past the end: everything
    assert QPSampling.parse("fixed:47").allowed(QPS, step=0, total_steps=1) == (47,)
    assert QPSampling.parse("fixed:63,31").allowed(QPS, step=0, total_steps=1) == (31, 63)
    assert QPSampling.parse("uniform").allowed([55, 31], step=0, total_steps=1) == (31, 55)


# --- PatchSampler: alignment, augmentation, determinism, distributions


def test_crops_are_aligned_and_augmented_identically():
    pairs = make_pairs()
    sampler = PatchSampler(pairs, patch=8, batch=16, qp_sampling="uniform", seed=3)
    ops = set()
    for step in range(12):
        lr, hr, qps = sampler.batch(step, 12)
        assert lr.dtype == hr.dtype == torch.float32 and qps.dtype == torch.int64
        assert tuple(lr.shape) == (16, 3, 8, 8) and tuple(hr.shape) == (16, 3, 32, 32) and tuple(qps.shape) == (16,)
        assert 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0
        lr8, hr8 = to_u8(lr), to_u8(hr)
        ch = sampler.indices(step, 12)
        for i in range(16):
            q = int(qps[i])
            # The LR patch is exactly what the (fake) degradation makes of the HR patch.
            expected = np.clip(box4(hr8[i]).astype(int) + (q - 31) // 8, 0, 255)
            np.testing.assert_array_equal(lr8[i], expected)
            # And it is the crop at the recorded offset, transformed by the recorded op.
            k, y, x, op = (int(ch[key][i]) for key in ("image", "y", "x", "op"))
            src = pairs.lr[q][k][y : y + 8, x : x + 8]
            np.testing.assert_array_equal(lr8[i], PatchSampler.dihedral(src, op))
            ops.add(op)
    assert ops == set(range(8))


def test_dihedral_ops_are_the_eight_symmetries():
    a = np.arange(6).reshape(2, 3, 1)
    outs = {PatchSampler.dihedral(a, op).tobytes() + bytes(PatchSampler.dihedral(a, op).shape) for op in range(8)}
    assert len(outs) == 8
    np.testing.assert_array_equal(PatchSampler.dihedral(a, 0), a)
    np.testing.assert_array_equal(PatchSampler.dihedral(a, 4)[..., 0], [[2, 1, 0], [5, 4, 3]])  # mirror
    np.testing.assert_array_equal(PatchSampler.dihedral(a, 1)[..., 0], [[2, 5], [1, 4], [0, 3]])  # quarter turn ccw


def test_no_augmentation_gives_plain_crops_at_the_same_offsets():
    pairs = make_pairs()
    aug = PatchSampler(pairs, patch=6, batch=8, qp_sampling="uniform", seed=11)
    plain = PatchSampler(pairs, patch=6, batch=8, qp_sampling="uniform", seed=11, augment=False)
    a, p = aug.indices(4, 10), plain.indices(4, 10)
    for key in ("image", "qp", "y", "x"):
        np.testing.assert_array_equal(a[key], p[key])
    assert (p["op"] == 0).all()
    lr, hr, _ = plain.batch(4, 10)
    for i in range(8):
        k, y, x = int(p["image"][i]), int(p["y"][i]), int(p["x"][i])
        np.testing.assert_array_equal(to_u8(hr)[i], pairs.hr[k][4 * y : 4 * y + 24, 4 * x : 4 * x + 24])


def test_batches_depend_only_on_seed_and_step():
    pairs = make_pairs()
    s1 = PatchSampler(pairs, patch=8, batch=4, qp_sampling="uniform", seed=7)
    s2 = PatchSampler(pairs, patch=8, batch=4, qp_sampling="uniform", seed=7)
    for step in range(5):  # s1 walks through earlier steps, s2 jumps straight to step 5 (a resume)
        s1.batch(step, 100)
    a, b = s1.batch(5, 100), s2.batch(5, 100)
    for x, y in zip(a, b):
        assert (x == y).all()
    other_seed = PatchSampler(pairs, patch=8, batch=4, qp_sampling="uniform", seed=8).batch(5, 100)
    assert not (other_seed[0] == a[0]).all()
    assert not (s1.batch(6, 100)[0] == a[0]).all()


def test_qp_distributions():
    pairs = make_pairs(sizes=((32, 32),))
    uniform = PatchSampler(pairs, patch=4, batch=50, qp_sampling="uniform", seed=1)
    counts = Counter(int(q) for s in range(100) for q in uniform.indices(s, 100)["qp"])
    assert set(counts) == set(QPS)
    assert all(abs(c - 1000) < 150 for c in counts.values())  # 5000 draws, sd ~ 28 per QP

    fixed = PatchSampler(pairs, patch=4, batch=50, qp_sampling="fixed:55", seed=1)
    assert {int(q) for s in range(10) for q in fixed.batch(s, 10)[2]} == {55}
    two = PatchSampler(pairs, patch=4, batch=50, qp_sampling="fixed:31,63", seed=1)
    counts2 = Counter(int(q) for s in range(20) for q in two.indices(s, 20)["qp"])
    assert set(counts2) == {31, 63} and abs(counts2[31] - 500) < 80

    cur = PatchSampler(pairs, patch=4, batch=50, qp_sampling=QPSampling.parse("curriculum"), seed=1)
    total = 100
    first = Counter(int(q) for s in range(20) for q in cur.indices(s, total)["qp"])
    assert set(first) == {31}  # first fifth: easiest QP only
    second = Counter(int(q) for s in range(20, 40) for q in cur.indices(s, total)["qp"])
    assert set(second) == {31, 39} and abs(second[31] - second[39]) < 150
    last = Counter(int(q) for s in range(80, 100) for q in cur.indices(s, total)["qp"])
    assert set(last) == set(QPS) and all(abs(c - 200) < 70 for c in last.values())


def test_images_are_picked_uniformly():
    pairs = make_pairs(sizes=((32, 32), (256, 256), (64, 32)))
    s = PatchSampler(pairs, patch=4, batch=60, qp_sampling="uniform", seed=5)
    counts = Counter(int(k) for step in range(50) for k in s.indices(step, 50)["image"])
    assert all(abs(c - 1000) < 150 for c in counts.values())


def test_sampler_errors():
    pairs = make_pairs()  # smallest image img2: HR 48x48, LR 12x12
    with pytest.warns(DataWarning, match=r"LR patch size 13 \(HR 52\) does not fit 1 of 3.*img2 \(LR 12x12\)"):
        skipping = PatchSampler(pairs, patch=13, batch=50, qp_sampling="uniform", seed=0)
    assert set(skipping.indices(0, 1)["image"].tolist()) == {0, 1}  # img2 is never drawn
    with pytest.raises(UserError, match=r"LR patch size 17 \(HR 68\) fits none of the 3.*at most 16"):
        PatchSampler(pairs, patch=17, batch=2, qp_sampling="uniform", seed=0)
    PatchSampler(pairs, patch=12, batch=2, qp_sampling="uniform", seed=0).batch(0, 1)  # exactly fits
    with pytest.raises(UserError, match=r"fixed:30.*QPs \[31, 39"):
        PatchSampler(pairs, patch=4, batch=2, qp_sampling="fixed:30", seed=0)
    for kwargs in ({"patch": 0}, {"batch": 0}, {"seed": -1}):
        args = {"patch": 4, "batch": 2, "qp_sampling": "uniform", "seed": 0} | kwargs
        with pytest.raises(UserError):
            PatchSampler(pairs, **args)


# --- load_split


def _save(folder, name, h, w, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(folder / name)
    return img


def test_load_split_from_a_folder_crops_and_skips(tmp_path):
    a = _save(tmp_path, "a.png", 70, 90, seed=1)
    b = _save(tmp_path, "b.png", 64, 64, seed=2)
    _save(tmp_path, "small.png", 60, 200, seed=3)  # crops to 56 rows: below min_hr_size=64
    (tmp_path / "broken.png").write_bytes(b"garbage")
    cache = FakeCache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_split(tmp_path, split="train", qps=[63, 31], cache=cache, progress=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("small.png" in m and "200x60" in m for m in msgs)
    assert any("broken.png" in m for m in msgs)
    assert pairs.names == ("a.png", "b.png")
    assert pairs.qps == (31, 63)
    assert pairs.hr[0].shape == (64, 88, 3)  # 70x90 cropped top-left to multiples of 8
    np.testing.assert_array_equal(pairs.hr[0], a[:64, :88])
    np.testing.assert_array_equal(pairs.hr[1], b)
    np.testing.assert_array_equal(pairs.lr[31][0], box4(a[:64, :88]))
    assert pairs.lr[63][1].shape == (16, 16, 3)
    assert set(pairs.skipped) == {"broken.png", "small.png"}
    assert pairs.spec is cache.spec and pairs.source == str(tmp_path) and pairs.split == "train"
    assert "2 HR images" in pairs.summary() and "skipped 2" in pairs.summary()
    assert not pairs.hr[0].flags.writeable and not pairs.lr[31][0].flags.writeable


def test_eval_splits_crop_to_multiples_of_48(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "train").mkdir()
    img = _save(tmp_path / "val", "v.png", 100, 150)
    pairs = load_split(tmp_path, split="val", qps=[31], cache=FakeCache(), progress=False)
    assert EVAL_HR_MULTIPLE == 48
    assert pairs.hr[0].shape == (96, 144, 3)
    np.testing.assert_array_equal(pairs.hr[0], img[:96, :144])
    assert pairs.lr[31][0].shape == (24, 36, 3)  # LR sides divide by 1, 2, 3 and 4
    assert load_split(tmp_path, split="val", qps=[31], cache=FakeCache(), hr_multiple=8, progress=False).hr[0].shape == (96, 144, 3)


def test_split_folders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    assert resolve_split_folder(flat, "train") == flat
    assert resolve_split_folder(flat, "val") == flat  # a separately passed validation folder
    both = tmp_path / "both"
    (both / "train").mkdir(parents=True)
    (both / "val").mkdir()
    assert resolve_split_folder(both, "val") == both / "val"
    only_train = tmp_path / "only_train"
    (only_train / "train").mkdir(parents=True)
    with pytest.raises(UserError, match=r"has train/ but no val/ subfolder.*--val-data"):
        resolve_split_folder(only_train, "val")
    with pytest.raises(UserError, match=r"has train/ but no test/ subfolder.*--test-data"):
        resolve_split_folder(only_train, "test")
    with pytest.raises(UserError, match=r"does not exist.*builtin"):
        resolve_split_folder(tmp_path / "missing", "train")


def test_load_split_errors(tmp_path):
    _save(tmp_path, "tiny.png", 40, 40)
    with pytest.warns(DataWarning), pytest.raises(UserError, match=r"all 1 images are smaller than 64"):
        load_split(tmp_path, split="train", qps=[31], cache=FakeCache(), progress=False)
    for qps in ([], [31, 31], [70], "31", [True]):
        with pytest.raises(UserError):
            load_split(tmp_path, split="train", qps=qps, cache=FakeCache(), progress=False)
    with pytest.raises(UserError, match="min_hr_size"):
        load_split(tmp_path, split="train", qps=[31], cache=FakeCache(), min_hr_size=4, progress=False)
    with pytest.raises(UserError, match="hr_multiple"):
        load_split(tmp_path, split="train", qps=[31], cache=FakeCache(), hr_multiple=12, progress=False)
    with pytest.raises(UserError, match="degradation"):
        load_split(tmp_path, split="train", qps=[31], cache=FakeCache(), spec=FakeSpec("other"), progress=False)


def test_load_split_builtin(tmp_path):
    pairs = load_split("builtin", split="val", qps=[31, 47], cache=FakeCache(root=tmp_path), progress=False)
    assert (tmp_path / "builtin").is_dir()  # kept under the cache's root
    assert len(pairs) == 11 and pairs.source == "builtin"
    assert all(h.shape == (288, 528, 3) for h in pairs.hr)  # already multiples of 48: nothing cropped
    assert all(lr.shape == (72, 132, 3) for lr in pairs.lr[47])
    assert "text_00" in pairs.names and "photo_coffee" in pairs.names


def test_crop_to_multiple():
    a = np.zeros((17, 23, 3), dtype=np.uint8)
    assert crop_to_multiple(a).shape == (16, 16, 3)
    assert crop_to_multiple(a, 12).shape == (12, 12, 3)


def test_load_split_with_the_real_lr_cache(tmp_path, rng_image):
    from trainers.cache import LRCache
    from trainers.lanczos import lanczos_downscale
    from trainers.metrics import psnr

    folder = tmp_path / "hr"
    folder.mkdir()
    hrs = [rng_image(96, 128, seed=s) for s in (3, 4)]
    for i, img in enumerate(hrs):
        Image.fromarray(img).save(folder / f"{i}.png")
    cache = LRCache(root=tmp_path / "cache")
    pairs = load_split(folder, split="train", qps=[31, 63], cache=cache, workers=1, progress=False)
    assert cache.stats.encoded == 4 and pairs.spec == cache.spec
    for qp in (31, 63):
        assert all(lr.dtype == np.uint8 and lr.shape == (24, 32, 3) for lr in pairs.lr[qp])
    # Stronger compression moves the LR further from the clean Lanczos-5 downscale.
    clean = [lanczos_downscale(h) for h in hrs]
    assert all(psnr(pairs.lr[31][i], clean[i]) > psnr(pairs.lr[63][i], clean[i]) + 1.0 for i in range(2))
    again = load_split(folder, split="train", qps=[31, 63], cache=cache, workers=1, progress=False)
    assert cache.stats.encoded == 4 and cache.stats.hits == 4  # the second load decodes cached files only
    for qp in (31, 63):
        for a, b in zip(pairs.lr[qp], again.lr[qp]):
            np.testing.assert_array_equal(a, b)
    lr, hr, qps = PatchSampler(again, patch=16, batch=3, qp_sampling="curriculum", seed=0).batch(0, 10)
    assert tuple(lr.shape) == (3, 3, 16, 16) and tuple(hr.shape) == (3, 3, 64, 64) and set(qps.tolist()) == {31}


# --- several splits: carving, subfolders, disjointness


def _folder(path, names, size=(96, 96)):
    """``names`` as distinct random PNGs of ``size`` (h, w) in ``path`` (created), in the given order."""
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        _save(path, name, *size, seed=int.from_bytes(name.encode(), "little") % 2**32)
    return path


def _pixels(pairs):
    return {h.tobytes() for h in pairs.hr}


def test_flat_folder_carves_disjoint_val_and_test(tmp_path):
    names = [f"{i:03d}.png" for i in range(25)]
    flat = _folder(tmp_path / "flat", names)
    splits = load_splits(flat, qps=[31], cache=FakeCache(), progress=False)
    assert splits.carved == ("val", "test")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (19, 3, 3)  # 10 % of 25 rounds to 3
    parts = [set(p.names) for p in (splits.train, splits.val, splits.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert set().union(*parts) == set(names)
    assert not _pixels(splits.train) & _pixels(splits.val) and not _pixels(splits.train) & _pixels(splits.test)
    assert all(h.shape[0] % EVAL_HR_MULTIPLE == 0 for h in splits.val.hr + splits.test.hr)  # evaluation crops
    # Deterministic, and independent of the order the files were made in (a copy made in reverse).
    again = load_splits(flat, qps=[31], cache=FakeCache(), progress=False)
    reverse = load_splits(_folder(tmp_path / "reverse", names[::-1]), qps=[31], cache=FakeCache(), progress=False)
    for split in ("train", "val", "test"):
        assert getattr(again, split).names == getattr(splits, split).names == getattr(reverse, split).names
    shuffled = list(np.random.default_rng(0).permutation(names))
    by_hash = carve(shuffled, ("val", "test"))
    assert set(by_hash["val"]) == set(splits.val.names) and set(by_hash["test"]) == set(splits.test.names)
    # Test is the same whether val is carved too or given: comparisons of final numbers stay valid.
    given_val = load_splits(flat, _folder(tmp_path / "val", ["v.png"]), qps=[31], cache=FakeCache(), progress=False)
    assert given_val.carved == ("test",) and given_val.test.names == splits.test.names
    assert len(given_val.train) == 22 and given_val.val.names == ("v.png",)


def test_carving_takes_at_least_one_image_and_skips_images_too_small_to_evaluate(tmp_path):
    flat = _folder(tmp_path / "flat", ["a.png", "b.png", "c.png"])
    _save(flat, "wide.png", 64, 400)  # trainable (64x400), but too small to evaluate (48 rows after the crop)
    splits = load_splits(flat, qps=[31], cache=FakeCache(), progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2, 1, 1)
    assert "wide.png" in splits.train.names


def test_too_few_images_to_carve_is_a_clear_error(tmp_path):
    two = _folder(tmp_path / "two", ["a.png", "b.png"])
    with pytest.raises(UserError, match=r"2 usable image\(s\) are too few to carve val and test.*at least 3.*--val-data"):
        load_splits(two, qps=[31], cache=FakeCache(), progress=False)
    one = _folder(tmp_path / "one", ["a.png"])
    val = _folder(tmp_path / "val", ["v.png"])
    with pytest.raises(UserError, match=r"too few to carve test.*at least 2.*--test-data"):
        load_splits(one, val, qps=[31], cache=FakeCache(), progress=False)
    small = _folder(tmp_path / "small", ["a.png", "b.png", "c.png"], size=(64, 200))
    with pytest.raises(UserError, match=r"only 0 of 3 images are large enough to evaluate"):
        load_splits(small, qps=[31], cache=FakeCache(), progress=False)


def test_subfolder_layouts(tmp_path):
    root = tmp_path / "data"
    _folder(root / "train", [f"t{i}.png" for i in range(12)])
    _folder(root / "val", ["v0.png", "v1.png"])
    splits = load_splits(root, qps=[31], cache=FakeCache(), progress=False)  # no test/: carved from train/
    assert splits.carved == ("test",) and splits.val.source == str(root / "val")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (11, 2, 1)
    assert set(splits.test.names) <= {f"t{i}.png" for i in range(12)}
    _folder(root / "test", ["x0.png", "x1.png", "x2.png"])
    splits = load_splits(root, qps=[31], cache=FakeCache(), progress=False)
    assert splits.carved == () and (len(splits.train), len(splits.val), len(splits.test)) == (12, 2, 3)
    assert splits.test.source == str(root / "test")
    other = _folder(tmp_path / "other_test", ["o.png"])
    splits = load_splits(root, test=other, qps=[31], cache=FakeCache(), progress=False)  # a flag beats the subfolder
    assert splits.test.names == ("o.png",)
    assert load_splits(root, qps=[31], cache=FakeCache(), load_test=False, progress=False).test is None


def test_the_same_image_in_two_splits_is_refused(tmp_path):
    flat = _folder(tmp_path / "flat", [f"{i}.png" for i in range(5)])
    with pytest.raises(UserError, match=r"in two splits.*--val-data"):
        load_splits(flat, flat, qps=[31], cache=FakeCache(), progress=False)  # the training folder as --val-data
    val = _folder(tmp_path / "val", ["val.png"])
    test = _folder(tmp_path / "test", ["other.png"])
    (test / "renamed.png").write_bytes((flat / "3.png").read_bytes())  # same pixels, another name
    with pytest.raises(UserError, match=r"3.png \(train\) = renamed.png \(test\)"):
        load_splits(flat, val, test, qps=[31], cache=FakeCache(), progress=False)


def test_check_disjoint_compares_pixels_across_crops():
    pairs = make_pairs(sizes=((104, 152),))  # a training crop (multiple of 8) ...
    hr = pairs.hr[0]
    evaluation = PairedSet(names=("e",), hr=(crop_to_multiple(hr, 48),), lr={31: (box4(crop_to_multiple(hr, 48)),)},
                           spec=FakeSpec(), source="memory", split="val")  # ... and its evaluation crop
    with pytest.raises(UserError, match=r"img0 \(train\) = e \(val\)"):
        check_disjoint({"train": pairs, "val": evaluation})
    check_disjoint({"train": pairs, "val": make_pairs(sizes=((96, 96),), seed=5)})


def test_builtin_has_disjoint_train_val_and_test(builtin_root):
    splits = load_splits("builtin", qps=[31], cache=FakeCache(root=builtin_root), progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (32, 11, 11) and splits.carved == ()
    assert splits.test.source == "builtin" and splits.test.split == "test"
    train, val, test = _pixels(splits.train), _pixels(splits.val), _pixels(splits.test)
    assert len(test) == 11 and not test & val and not test & train and not train & val
