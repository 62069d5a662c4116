"""Read HR images from disk into one canonical form: HxWx3 uint8 RGB, as displayed.

Training data comes from user folders (DIV2K-style dumps, game captures, scans), so every odd file a
real folder can hold gets a deliberate answer instead of a traceback from deep inside Pillow:

* unreadable, truncated or non-image bytes -> `UserError` naming the file (`read_image`), or, when a
  whole folder is loaded, a `DataWarning` naming each skipped file plus a count (`load_folder`);
* grayscale (``1``, ``L``, 16-bit ``I;16``) -> the gray value replicated to R, G and B;
* palette (``P``/``PA``) -> the palette's RGB colours;
* alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``) -> **dropped, not composited**: the
  stored colour is kept as it is. The challenge pipeline (ffmpeg RGB -> YUV for AV1) ignores alpha
  the same way, and compositing on any background would invent content the colour planes never had;
* 16 bits per sample (``I;16`` PNG/TIFF, 16-bit RGB/RGBA/LA PNG and TIFF) -> 8 bits **rounded**:
  ``v8 = round(v16 * 255 / 65535) = (v16 + 128) // 257``. Pillow itself truncates 16-bit colour
  samples to their high byte (off by up to one level, biased dark), so for those files we decode the
  data a second time with the opposite byte order to recover the low bytes (see `_read_16bit_colour`);
* EXIF orientation (tag 0x0112) -> applied, so the array is the image as a viewer shows it;
* CMYK, YCbCr, LAB, HSV -> Pillow's conversion to RGB; 32-bit float (``F``) -> `UserError` (no
  agreed range: convert the file to 8-bit first); animated files -> first frame.

`list_images` finds the image files of one folder (not recursive), sorted by name so every run sees
the same order; hidden files (``.*``, e.g. macOS ``._x.png`` resource forks) are ignored.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from search_space.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataWarning",
    "FolderImages",
    "read_image",
    "list_images",
    "load_folder",
    "apply_exif_orientation",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""File name endings (case-insensitive) that `list_images` treats as images."""

_EXIF_ORIENTATION = 0x0112
_16BIT_SUFFIXES = (";16B", ";16L", ";16N")


class DataWarning(UserWarning):
    """A data problem that was worked around (a skipped file or image), shown once per occurrence."""


def apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Return ``img`` (HxW or HxWxC) as displayed for EXIF orientation 1-8 (other values: unchanged).

    Orientation names the transform a viewer applies to the stored pixels (the same table as Pillow's
    ``ImageOps.exif_transpose``): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise.
    """
    axes = (1, 0) + tuple(range(2, img.ndim))
    if orientation == 2:
        out = img[:, ::-1]
    elif orientation == 3:
        out = img[::-1, ::-1]
    elif orientation == 4:
        out = img[::-1]
    elif orientation == 5:
        out = img.transpose(axes)
    elif orientation == 6:
        out = np.rot90(img, -1)
    elif orientation == 7:
        out = img.transpose(axes)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(img, 1)
    else:
        return img
    return np.ascontiguousarray(out)


def _scale_16_to_8(v: np.ndarray) -> np.ndarray:
    """Round 16-bit samples to 8 bits: (v + 128) // 257 == round(v * 255 / 65535), no ties exist."""
    return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _swap_16bit_rawmode(rawmode: str) -> str:
    """The rawmode that unpacks the *other* byte of each 16-bit sample (native order resolved here)."""
    head, _, order = rawmode.rpartition(";16")
    native_other = "B" if sys.byteorder == "little" else "L"
    return head + ";16" + {"B": "L", "L": "B", "N": native_other}[order]


def _tile_rawmode(tile) -> str | None:
    args = tile.args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile, rawmode: str):
    args = tile.args
    new_args = rawmode if isinstance(args, str) else (rawmode,) + tuple(args[1:])
    return tile._replace(args=new_args)


def _is_16bit_colour(im: Image.Image) -> bool:
    """True for files Pillow would truncate: 16-bit samples unpacked into an 8-bit RGB/RGBA image."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    modes = [_tile_rawmode(t) for t in im.tile]
    return all(m is not None and m.endswith(_16BIT_SUFFIXES) and m.startswith(("RGB", "LA")) for m in modes)


def _read_16bit_colour(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB/RGBA/LA file exactly and return its colour as rounded 8-bit RGB.

    Pillow unpacks ``RGB;16B`` by keeping each sample's high byte. Decoding the same tiles again with
    the opposite byte order keeps the low bytes instead, so ``256 * high + low`` is the exact 16-bit
    value. 16-bit gray+alpha (rawmode ``LA;16B``, 4 bytes per pixel) is decoded as plain 8-bit
    ``RGBA`` instead, which hands back all four bytes (L high, L low, A high, A low) untouched.
    """
    with Image.open(path) as im:
        rawmodes = {_tile_rawmode(t) for t in im.tile}
        if rawmodes == {"LA;16B"}:
            im.tile = [_with_rawmode(t, "RGBA") for t in im.tile]
            im.load()
            b = np.asarray(im).astype(np.uint16)
            gray = _scale_16_to_8(b[..., 0] * 256 + b[..., 1])
            return np.repeat(gray[..., None], 3, axis=2)
        im.load()
        high = np.asarray(im)[..., :3].astype(np.uint16)
    with Image.open(path) as im:
        im.tile = [_with_rawmode(t, _swap_16bit_rawmode(_tile_rawmode(t))) for t in im.tile]
        im.load()
        low = np.asarray(im)[..., :3].astype(np.uint16)
    return _scale_16_to_8(high * 256 + low)


def _to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    """Convert an opened, loaded Pillow image of any supported mode to HxWx3 uint8 RGB."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise UserError(
                f"image {path}: 32-bit integer pixels ({v.min()}..{v.max()}) have no agreed 8-bit range; "
                "convert the file to an 8- or 16-bit PNG"
            )
        gray = _scale_16_to_8(v)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise UserError(
            f"image {path}: floating-point pixels have no agreed 8-bit range; convert the file to an 8-bit PNG"
        )
    # 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV: Pillow's conversion drops alpha
    # (keeps the stored colour, no compositing) and resolves palettes.
    if mode == "LA":
        im = im.convert("L")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as an HxWx3 uint8 RGB array, oriented as displayed (see module docstring).

    Raises `UserError` naming the file when it is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} does not exist (or is not a file); check the path")
    try:
        with Image.open(path) as im:
            im.seek(0)
            is_16bit_colour = _is_16bit_colour(im)  # must look at the tiles before load() clears them
            im.load()
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            rgb = None if is_16bit_colour else _to_rgb8(im, path)
        if rgb is None:
            rgb = _read_16bit_colour(path)
    except UserError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ... for bad bytes
        reason = str(exc) or type(exc).__name__
        raise UserError(
            f"cannot read image {path}: {reason}. The file is corrupt, truncated or not an image; "
            "re-export it or remove it from the folder"
        ) from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UserError(f"image {path} decoded to an unusable shape {rgb.shape}; re-export it as an RGB PNG")
    return apply_exif_orientation(rgb, orientation)


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (extensions in `IMAGE_EXTENSIONS`), sorted by name.

    Raises `UserError` when the folder is missing, is a file, or holds no image files.
    """
    folder = Path(folder).expanduser()
    hint = "pass a folder of HR images (PNG/JPEG/WebP/BMP/TIFF), e.g. DIV2K_train_HR, or 'builtin'"
    if not folder.exists():
        raise UserError(f"data folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise UserError(f"data path {folder} is a file, not a folder; {hint}")
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        others = sum(1 for _ in folder.iterdir())
        raise UserError(
            f"data folder {folder} holds no image files ({others} other entries; looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}); {hint}"
        )
    return sorted(files, key=lambda p: (p.name, str(p)))


@dataclass(frozen=True, eq=False)
class FolderImages:
    """The readable images of one folder, plus what was skipped and why (for the run summary)."""

    folder: Path
    paths: tuple[Path, ...]
    images: tuple[np.ndarray, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())

    def summary(self) -> str:
        """One line for logs: counts, and the skipped files by name."""
        line = f"{self.folder}: {len(self.images)} images read"
        if self.skipped:
            names = ", ".join(p.name for p, _ in self.skipped)
            line += f", {len(self.skipped)} skipped (unreadable: {names})"
        return line


def load_folder(
    folder: str | Path, *, progress: bool = True, paths: Sequence[Path] | None = None, workers: int | None = None
) -> FolderImages:
    """Read every image of ``folder`` (or the given ``paths``), skipping unreadable files with a warning.

    A bad file in a folder of hundreds should not kill a training run, but it must not vanish quietly
    either: each skipped file gets a `DataWarning` with its name and reason, and `FolderImages.skipped`
    / `FolderImages.summary` carry the count. If *no* file is readable that is a `UserError`.
    Files are decoded by ``workers`` threads (Pillow decodes without the GIL; default: up to 8, one
    per CPU); the result keeps the sorted file order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    folder = Path(folder).expanduser()
    files = list(paths) if paths is not None else list_images(folder)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)

    def attempt(p: Path) -> np.ndarray | UserError:
        try:
            return read_image(p)
        except UserError as exc:
            return exc

    ok_paths: list[Path] = []
    images: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(attempt, files)
        bar = tqdm(results, total=len(files), desc=f"reading {folder.name or folder}", unit="img", disable=not progress, file=sys.stderr)
        for p, result in zip(files, bar):
            if isinstance(result, UserError):
                skipped.append((p, str(result)))
                warnings.warn(f"skipping {p}: {result}", DataWarning, stacklevel=2)
            else:
                images.append(result)
                ok_paths.append(p)
    if not images:
        raise UserError(
            f"none of the {len(files)} image files in {folder} could be read (first: {skipped[0][1]}); "
            "check the folder's contents"
        )
    if skipped:
        warnings.warn(
            f"{folder}: skipped {len(skipped)} of {len(files)} image files that could not be read", DataWarning, stacklevel=2
        )
    return FolderImages(folder=folder, paths=tuple(ok_paths), images=tuple(images), skipped=tuple(skipped))
