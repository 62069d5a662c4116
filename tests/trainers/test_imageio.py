"""trainers.imageio: every odd file a data folder can hold has a deliberate, tested answer."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from search_space.errors import UserError
from trainers.imageio import DataWarning, apply_exif_orientation, list_images, load_folder, read_image

# 16-bit samples around the rounding boundaries, with round(v / 257) worked out by hand:
# 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1, 385/257 = 1.498 -> 1, 386/257 = 1.502 -> 2,
# 32767/257 = 127.498 -> 127, 32768/257 = 127.502 -> 128, 65535/257 = 255.
V16 = [0, 128, 129, 385, 386, 32767, 32768, 65535]
V8_ROUNDED = [0, 0, 1, 1, 2, 127, 128, 255]
V8_TRUNCATED = [v >> 8 for v in V16]  # what keeping the high byte would give: [0, 0, 0, 1, 1, 127, 128, 255]


def _rng_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- a tiny independent PNG writer, so 16-bit files with every filter type exist without an encoder


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, row: bytes, prior: bytes, bpp: int) -> bytes:
    out = bytearray(len(row))
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out[i] = (x - pred) % 256
    return bytes([kind]) + bytes(out)


def _write_png16(path: Path, samples: np.ndarray, colour_type: int) -> None:
    """Write 16-bit samples (HxWxC uint16) as a PNG, cycling row filters None/Sub/Up/Average/Paeth."""
    h, w, c = samples.shape
    bpp = 2 * c
    rows = [samples[y].astype(">u2").tobytes() for y in range(h)]
    raw = b"".join(_filter_row(y % 5, rows[y], rows[y - 1] if y else bytes(len(rows[0])), bpp) for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _v16_image(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A 5x8 image whose row r holds V16 rotated by r (so every filter meets every value), per channel shifted."""
    vals = np.array(V16, dtype=np.uint16)
    exp = np.array(V8_ROUNDED, dtype=np.uint8)
    s16 = np.stack([np.stack([np.roll(vals, r + ch) for ch in range(channels)], axis=-1) for r in range(5)])
    s8 = np.stack([np.stack([np.roll(exp, r + ch) for ch in range(channels)], axis=-1) for r in range(5)])
    return s16, s8


# --- plain and converted modes


def test_rgb_png_round_trips_exactly(tmp_path):
    img = _rng_rgb(7, 9)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("ext", ["bmp", "webp", "tiff"])
def test_lossless_formats_round_trip(tmp_path, ext):
    img = _rng_rgb(6, 5, seed=3)
    path = tmp_path / f"a.{ext}"
    Image.fromarray(img).save(path, **({"lossless": True} if ext == "webp" else {}))
    np.testing.assert_array_equal(read_image(path), img)


def test_jpeg_reads_as_rgb(tmp_path):
    img = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.JPG", quality=95)
    out = read_image(tmp_path / "a.JPG")
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - img).max() <= 4  # a flat colour survives JPEG almost exactly


def test_grayscale_is_replicated(tmp_path):
    g = np.array([[0, 17, 255], [128, 3, 99]], dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_bilevel_is_black_and_white(tmp_path):
    Image.fromarray(np.array([[0, 1], [1, 0]], dtype=bool)).save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])


def test_rgba_drops_alpha_keeping_stored_colour(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    # Not composited: the fully transparent pixel keeps (10, 20, 30) rather than becoming black.
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_la_drops_alpha(tmp_path):
    la = np.array([[[200, 0], [7, 255]]], dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), [[[200] * 3, [7] * 3]])


def test_palette_resolves_colours(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 12, 34, 56] + [0] * (256 * 3 - 9))
    im.putdata([2, 0, 1])
    im.info["transparency"] = 0  # a transparent palette entry: still its stored colour
    im.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[[12, 34, 56], [255, 0, 0], [0, 255, 0]]])


# --- 16 bits per sample: rounded, not truncated


def test_i16_grayscale_png_is_rounded(tmp_path):
    Image.fromarray(np.array([V16], dtype=np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :, 0], V8_ROUNDED)
    np.testing.assert_array_equal(out[..., 1], out[..., 2])
    assert V8_ROUNDED != V8_TRUNCATED  # the fixture distinguishes rounding from truncation


@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4)], ids=["rgb16", "rgba16"])
def test_16bit_colour_png_is_rounded_with_all_filters(tmp_path, colour_type, channels):
    s16, s8 = _v16_image(channels)
    _write_png16(tmp_path / "c16.png", s16, colour_type)
    out = read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, s8[..., :3])


def test_16bit_gray_alpha_png_is_rounded(tmp_path):
    s16, s8 = _v16_image(2)
    _write_png16(tmp_path / "la16.png", s16, 4)
    out = read_image(tmp_path / "la16.png")
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], s8[..., 0])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_rgb_tiff_is_rounded(tmp_path, compression):
    import tifffile  # installed with scikit-image, a project dependency (the builtin photos)

    s16, s8 = _v16_image(3)
    tifffile.imwrite(tmp_path / "c16.tif", s16, photometric="rgb", compression=compression)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.tif"), s8)


def test_float_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(UserError, match=r"f\.tiff.*floating-point"):
        read_image(tmp_path / "f.tiff")


# --- EXIF orientation


def _png_with_orientation(path: Path, img: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, exif=exif)


def test_orientation_6_rotates_clockwise_by_hand(tmp_path):
    img = np.zeros((2, 3, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)  # stored top-left; orientation 6 = rotate 90 deg clockwise to display
    _png_with_orientation(tmp_path / "o6.png", img, 6)
    out = read_image(tmp_path / "o6.png")
    assert out.shape == (3, 2, 3)
    assert tuple(out[0, 1]) == (255, 0, 0)  # now top-right
    assert out.sum() == 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    img = _rng_rgb(4, 7, seed=orientation)
    path = tmp_path / f"o{orientation}.png"
    _png_with_orientation(path, img, orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(apply_exif_orientation(img, orientation), expected)


# --- bad files


def test_truncated_png_names_the_file(tmp_path):
    Image.fromarray(_rng_rgb(64, 64)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


def test_random_bytes_named_png(tmp_path):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(UserError, match=r"cannot read image .*noise\.png"):
        read_image(tmp_path / "noise.png")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.png"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(UserError, match=r"nothere\.png does not exist"):
        read_image(tmp_path / "nothere.png")


# --- folders


def test_list_images_filters_and_sorts(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.webp", "d.tif", "e.bmp", "f.jpeg", "g.TIFF", "notes.txt", ".hidden.png", "._a.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp", "d.tif", "e.bmp", "f.jpeg", "g.TIFF"]


def test_list_images_errors_say_what_to_pass(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*folder of HR images.*builtin"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UserError, match=r"is a file, not a folder"):
        list_images(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(UserError, match=r"holds no image files \(1 other entries.*builtin"):
        list_images(tmp_path / "empty")


def test_load_folder_skips_bad_files_with_warnings_and_count(tmp_path):
    good = [_rng_rgb(8, 8, seed=i) for i in range(3)]
    for i, img in enumerate(good):
        Image.fromarray(img).save(tmp_path / f"ok{i}.png")
    (tmp_path / "bad1.png").write_bytes(b"not a png at all")
    (tmp_path / "bad2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_folder(tmp_path, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("bad1.png" in m for m in messages) and any("bad2.jpg" in m for m in messages)
    assert any("skipped 2 of 5" in m for m in messages)
    assert [p.name for p in loaded.paths] == ["ok0.png", "ok1.png", "ok2.png"]
    for a, b in zip(loaded.images, good):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p, _ in loaded.skipped] == ["bad1.png", "bad2.jpg"]
    assert "2 skipped" in loaded.summary() and "bad1.png" in loaded.summary()


def test_load_folder_with_only_bad_files_is_an_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.warns(DataWarning), pytest.raises(UserError, match=r"none of the 1 image files"):
        load_folder(tmp_path, progress=False)
