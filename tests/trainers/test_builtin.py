"""trainers.builtin: deterministic, cached, and every content kind really present."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search_space.errors import UserError
from trainers.cache import pixel_hash
from trainers import builtin
from trainers.builtin import KINDS, builtin_dir, builtin_images, builtin_manifest, builtin_records

REPO = Path(__file__).resolve().parents[2]
# sha256 over the per-image pixel hashes of the generated (not text, not photo: those depend on the
# FreeType and libjpeg builds) train and val images, as made before the test split was added.
TRAIN_V1_DIGEST = "4f08c454571810be"
VAL_V1_DIGEST = "63e0f1c28114fc3f"


@pytest.fixture(scope="module")
def val_dir(builtin_root) -> Path:
    """The session's builtin cache root (val generated in this process); read only: copy it to change it."""
    return builtin_root


@pytest.fixture(scope="module")
def train_records(builtin_root):
    return builtin_records("train", cache_dir=builtin_root, progress=False)


def _neighbour_diff(img: np.ndarray) -> float:
    """Mean absolute difference between horizontally and vertically adjacent pixels (a sharpness measure)."""
    f = img.astype(np.float64)
    return float((np.abs(np.diff(f, axis=0)).mean() + np.abs(np.diff(f, axis=1)).mean()) / 2)


def _colours(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct RGB colours of an image and their pixel counts (packed to one integer per pixel: fast)."""
    packed = (img[..., 0].astype(np.uint32) << 16) | (img[..., 1].astype(np.uint32) << 8) | img[..., 2]
    return np.unique(packed, return_counts=True)


def test_generation_is_deterministic_across_processes(val_dir, tmp_path):
    other = tmp_path / "builtin_b"
    code = "import sys; from trainers.builtin import builtin_images; builtin_images('val', cache_dir=sys.argv[1], progress=False)"
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, cwd=REPO, timeout=120)
    a, b = builtin_dir("val", cache_dir=val_dir), builtin_dir("val", cache_dir=other)
    files = sorted(p.name for p in a.glob("*.png"))
    assert files == sorted(p.name for p in b.glob("*.png")) and len(files) == 11
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = json.loads((a / "manifest.json").read_text()), json.loads((b / "manifest.json").read_text())
    assert ma == mb


def test_second_call_reads_the_cache(val_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the cache was complete")

    monkeypatch.setattr(builtin, "_generate", boom)
    first = builtin_images("val", cache_dir=val_dir, progress=False)
    assert len(first) == 11


def test_damaged_cache_is_regenerated(val_dir, tmp_path):
    shutil.copytree(val_dir, tmp_path, dirs_exist_ok=True)
    images = builtin_images("val", cache_dir=tmp_path, progress=False)
    folder = builtin_dir("val", cache_dir=tmp_path)
    (folder / f"{images[0][0]}.png").unlink()
    with pytest.warns(UserWarning, match="incomplete or damaged"):
        again = builtin_images("val", cache_dir=tmp_path, progress=False)
    for (n1, a), (n2, b) in zip(images, again):
        assert n1 == n2
        np.testing.assert_array_equal(a, b)


def test_val_split_shapes_kinds_and_licenses(val_dir):
    records = builtin_records("val", cache_dir=val_dir, progress=False)
    assert len(records) == 11
    assert {r.kind for r in records} == set(KINDS)  # at least one image of every kind
    for r in records:
        assert r.image.dtype == np.uint8 and r.image.shape == (288, 528, 3), r.name
    manifest = builtin_manifest("val", cache_dir=val_dir, progress=False)
    assert manifest["generator_version"] == builtin.GENERATOR_VERSION
    for e in manifest["images"]:
        assert e["license"] in ("public domain", "CC0-1.0") or e["license"].startswith("CC0-1.0 (procedurally"), e
        assert e["height"] % 48 == 0 and e["width"] % 48 == 0  # whole-image evaluation needs LR % 12 == 0


def test_train_split(train_records):
    assert len(train_records) == 32
    assert {r.kind for r in train_records} == set(KINDS)
    hashes = set()
    for r in train_records:
        assert r.image.shape[0] % 8 == 0 and r.image.shape[1] % 8 == 0 and r.image.shape[2] == 3, r.name
        assert min(r.image.shape[:2]) >= 288
        hashes.add(r.image.tobytes())
    assert len(hashes) == 32  # no two images alike


def test_no_two_splits_share_a_photo(train_records):
    photos = {split: {photo for _, photo, _ in builtin._PHOTO_CROPS[split]} for split in builtin.SPLITS}
    assert not photos["train"] & photos["val"] and not photos["train"] & photos["test"] and not photos["val"] & photos["test"]
    # A photo used twice (the Hubble field) would have to be cut into disjoint regions.
    used = {}
    for split in builtin.SPLITS:
        for _, photo, (top, left, h, w) in builtin._PHOTO_CROPS[split]:
            used.setdefault(photo, []).append((top, left, h, w))
    for crops in used.values():
        for i, (t1, l1, h1, w1) in enumerate(crops):
            for t2, l2, h2, w2 in crops[i + 1 :]:
                assert t1 + h1 <= t2 or t2 + h2 <= t1 or l1 + w1 <= l2 or l2 + w2 <= l1


def test_photos_are_the_scikit_image_originals(val_dir):
    import skimage.data

    images = dict(builtin_images("val", cache_dir=val_dir, progress=False))
    np.testing.assert_array_equal(images["photo_coffee"], skimage.data.coffee()[56:344, 36:564])
    rocket = skimage.data.rocket()[69:357, 56:584]
    # JPEG: decoded by the same libjpeg through Pillow in both cases.
    np.testing.assert_array_equal(images["photo_rocket"], rocket)


def test_each_kind_has_its_character(val_dir, train_records):
    by_name = dict(builtin_images("val", cache_dir=val_dir, progress=False))
    # Gradients are smooth, textures are busy.
    assert _neighbour_diff(by_name["gradient_00"]) < 3.0
    for name in ("texture_00", "texture_01"):
        assert _neighbour_diff(by_name[name]) > 15.0, name
    # Hard-edged digital art is a handful of flat colours; the anti-aliased variant has edge blends.
    assert len(_colours(by_name["art_00"])[0]) <= 12
    assert len(_colours(by_name["art_01"])[0]) > 30
    # Text/UI: mostly one background colour, with many glyph pixels of other colours.
    for name in ("text_00", "text_01"):
        colours, counts = _colours(by_name[name])
        assert 0.4 < counts.max() / counts.sum() < 0.95, name
        assert len(colours) > 50, name  # anti-aliased glyph edges
    # Render: a smooth sky on top (vertical gradient), detail (grid, objects) below.
    for name in ("render_00", "render_01"):
        img = by_name[name]
        assert _neighbour_diff(img[:40]) < 2.0, name
        assert _neighbour_diff(img[200:]) > _neighbour_diff(img[:40]) + 1.0, name
    kinds = {r.kind for r in train_records}
    assert kinds == set(KINDS)


def test_cache_root_and_split_validation(monkeypatch, tmp_path):
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "c"))
    assert builtin_dir("val") == tmp_path / "c" / "builtin" / f"v{builtin.GENERATOR_VERSION}" / "val"
    monkeypatch.delenv("RTSR_CACHE_DIR")
    assert builtin_dir("train") == Path.home() / ".cache" / "rtsr-nas" / "builtin" / f"v{builtin.GENERATOR_VERSION}" / "train"
    assert builtin_dir("val", cache_dir=tmp_path / "x") == tmp_path / "x" / "builtin" / f"v{builtin.GENERATOR_VERSION}" / "val"
    with pytest.raises(UserError, match="splits train, val, test"):
        builtin_images("holdout", cache_dir=tmp_path)


@pytest.fixture(scope="module")
def test_records(builtin_root):
    return builtin_records("test", cache_dir=builtin_root, progress=False)


def test_test_split_is_like_val_and_disjoint_from_train_and_val(test_records, train_records, val_dir):
    assert len(test_records) == 11
    assert {r.kind for r in test_records} == set(KINDS)
    for r in test_records:
        assert r.image.dtype == np.uint8 and r.image.shape[0] == 288 and r.image.shape[1] in (480, 528), r.name
        assert r.image.shape[0] % 48 == 0 and r.image.shape[1] % 48 == 0, r.name
        assert r.license in ("public domain", "CC0-1.0") or r.license.startswith("CC0-1.0 (procedurally"), r.name
    val = builtin_records("val", cache_dir=val_dir, progress=False)
    pixels = {split: {r.image.tobytes() for r in records} for split, records in (("train", train_records), ("val", val), ("test", test_records))}
    assert len(pixels["test"]) == 11  # no two test images alike
    assert not pixels["test"] & pixels["val"] and not pixels["test"] & pixels["train"] and not pixels["train"] & pixels["val"]


def test_adding_the_test_split_left_train_and_val_unchanged(train_records, val_dir):
    """Train and val are pixel for pixel what they were before the test split existed, so cached LR
    entries and published results stay valid."""
    import hashlib

    def digest(records) -> str:
        hashes = "".join(pixel_hash(r.image) for r in records if r.kind not in ("text", "photo"))
        return hashlib.sha256(hashes.encode()).hexdigest()[:16]

    assert digest(train_records) == TRAIN_V1_DIGEST
    assert digest(builtin_records("val", cache_dir=val_dir, progress=False)) == VAL_V1_DIGEST
