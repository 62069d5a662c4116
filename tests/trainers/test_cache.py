"""trainers.cache.LRCache: encode once, hit after, key by content/spec/QP, repair damage, threads == serial."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from search_space.errors import UserError
from trainers.cache import CacheWarning, LRCache, content_hash, default_cache_root
from trainers.degrade import DegradeSpec, degrade


@pytest.fixture(scope="module")
def hrs(rng_image) -> list[np.ndarray]:
    # LR 32x24, 20x32 and 13x16 (a size not divisible by 4 on both sides): fast to encode.
    return [rng_image(128, 96, seed=21), rng_image(80, 128, seed=22), rng_image(50, 61, seed=23)]


def test_second_run_encodes_nothing(tmp_path, hrs):
    cache = LRCache(tmp_path)
    first = cache.lr_images(hrs, [31, 63], workers=1, progress=False)
    assert (cache.stats.encoded, cache.stats.hits) == (6, 0)
    again = LRCache(tmp_path)  # a new process would start like this
    second = again.lr_images(hrs, [31, 63], workers=2, progress=False)
    assert (again.stats.encoded, again.stats.hits) == (0, 6)
    assert set(second) == {31, 63}
    for qp in (31, 63):
        assert len(second[qp]) == len(hrs)
        for a, b in zip(first[qp], second[qp]):
            assert a.dtype == np.uint8 and np.array_equal(a, b)


def test_results_are_the_degradation(tmp_path, hrs):
    out = LRCache(tmp_path).lr_images(hrs, [47], workers=1, progress=False)
    for hr, lr in zip(hrs, out[47]):
        assert np.array_equal(lr, degrade(hr, 47))
        assert lr.shape == (-(-hr.shape[0] // 4), -(-hr.shape[1] // 4), 3)


def test_key_changes_with_qp_content_and_spec(tmp_path, hrs):
    cache = LRCache(tmp_path)
    cache.lr_images(hrs[:2], [31], workers=1, progress=False)
    assert cache.stats.encoded == 2
    cache.lr_images(hrs[:2], [31, 39], workers=1, progress=False)  # new QP: only it is encoded
    assert (cache.stats.encoded, cache.stats.hits) == (4, 2)
    edited = hrs[0].copy()
    edited[0, 0, 0] ^= 1  # one bit of one pixel
    cache.lr_images([edited, hrs[1]], [31], workers=1, progress=False)  # new content: encoded
    assert (cache.stats.encoded, cache.stats.hits) == (5, 3)
    cache.lr_images([hrs[1], hrs[0]], [31], workers=1, progress=False)  # order/position is not the key
    assert (cache.stats.encoded, cache.stats.hits) == (5, 5)
    other = LRCache(tmp_path, DegradeSpec(speed=8))  # another spec: its own entries
    other.lr_images(hrs[:2], [31], workers=1, progress=False)
    assert (other.stats.encoded, other.stats.hits) == (2, 0)
    assert other.folder != cache.folder and other.folder.parent == cache.folder.parent


def test_layout_on_disk(tmp_path, hrs):
    cache = LRCache(tmp_path)
    cache.lr_images(hrs[:1], [55], workers=1, progress=False)
    key = content_hash(hrs[0])
    path = tmp_path / "lr-avif" / cache.spec.hash / key[:2] / f"{key}-qp55.avif"
    assert path.is_file() and path == cache.path(key, 55)
    assert path.read_bytes()[4:12] == b"ftypavif"
    assert (cache.folder / "spec.json").is_file()
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_content_hash_sees_shape_and_pixels():
    a = np.zeros((4, 6, 3), np.uint8)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(a.reshape(6, 4, 3))
    b = a.copy()
    b[3, 5, 2] = 1
    assert content_hash(a) != content_hash(b)
    assert content_hash(np.asfortranarray(b)) == content_hash(b)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_entry_is_reported_and_reencoded(tmp_path, hrs, damage):
    cache = LRCache(tmp_path)
    good = cache.lr_images(hrs[:1], [39], workers=1, progress=False)[39][0]
    path = cache.path(content_hash(hrs[0]), 39)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x00" * 64}[damage])
    fresh = LRCache(tmp_path)
    with pytest.warns(CacheWarning, match="damaged"):
        out = fresh.lr_images(hrs[:1], [39], workers=1, progress=False)[39][0]
    assert (fresh.stats.encoded, fresh.stats.hits, fresh.stats.repaired) == (1, 0, 1)
    assert np.array_equal(out, good) and path.read_bytes() == data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LRCache(tmp_path).lr_images(hrs[:1], [39], workers=1, progress=False)  # repaired for good


def test_parallel_equals_serial(tmp_path, hrs):
    serial = LRCache(tmp_path / "serial")
    threaded = LRCache(tmp_path / "threaded")
    a = serial.lr_images(hrs, [31, 55, 63], workers=1, progress=False)
    b = threaded.lr_images(hrs, [31, 55, 63], workers=3, progress=False)
    assert serial.stats.encoded == threaded.stats.encoded == 9
    for qp in (31, 55, 63):
        for x, y in zip(a[qp], b[qp]):
            assert np.array_equal(x, y)
    files_a = sorted(p.relative_to(serial.root) for p in serial.root.rglob("*.avif"))
    files_b = sorted(p.relative_to(threaded.root) for p in threaded.root.rglob("*.avif"))
    assert files_a == files_b and len(files_a) == 9
    assert all((serial.root / f).read_bytes() == (threaded.root / f).read_bytes() for f in files_a)


def test_default_root_from_environment(tmp_path, monkeypatch, hrs):
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "envroot"))
    assert default_cache_root() == tmp_path / "envroot"
    cache = LRCache()
    assert cache.folder.is_relative_to(tmp_path / "envroot")
    cache.lr_images(hrs[:1], [63], workers=1, progress=False)
    assert list((tmp_path / "envroot").rglob("*-qp63.avif"))
    monkeypatch.delenv("RTSR_CACHE_DIR")
    assert default_cache_root().parts[-2:] == (".cache", "rtsr-nas")


def test_progress_bar_goes_to_stderr_and_can_be_disabled(tmp_path, hrs, capsys):
    LRCache(tmp_path).lr_images(hrs[:2], [63], workers=2, progress=True)
    captured = capsys.readouterr()
    assert "LR images" in captured.err and captured.out == ""
    LRCache(tmp_path).lr_images(hrs[:2], [63], workers=2, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_requests_fail_before_any_encoding(tmp_path, hrs):
    cache = LRCache(tmp_path)
    with pytest.raises(UserError, match="QP 30 is not in"):
        cache.lr_images(hrs, [31, 30], progress=False)
    with pytest.raises(UserError, match="HR image 1: .*RGB"):
        cache.lr_images([hrs[0], hrs[0][:, :, 0]], [31], progress=False)
    with pytest.raises(UserError, match="no QPs"):
        cache.lr_images(hrs, [], progress=False)
    with pytest.raises(UserError, match="workers"):
        cache.lr_images(hrs, [31], workers=0, progress=False)
    with pytest.raises(UserError, match="DegradeSpec"):
        LRCache(tmp_path, spec={"backend": "pillow"})  # type: ignore[arg-type]
    assert cache.stats.encoded == 0 and not list(tmp_path.rglob("*.avif"))


def test_empty_input_and_duplicate_qps(tmp_path, hrs):
    cache = LRCache(tmp_path)
    assert cache.lr_images([], [31, 63], progress=False) == {31: [], 63: []}
    out = cache.lr_images(hrs[:1], [63, 63], workers=1, progress=False)
    assert list(out) == [63] and cache.stats.encoded == 1
