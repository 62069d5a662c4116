"""`photos`: 24 real photographs with free licences, from two Debian wallpaper packages, pinned by a manifest.

Why: what a network learns on the procedural `builtin` images does not carry over to photographs
(issue 24), and photographs are what every user's data is. These are obtained by the project itself
on a fresh Debian/Ubuntu machine: ``apt-get download mate-backgrounds plasma-workspace-wallpapers``
(no root needed), of which only the photographs are kept (mate's ``nature/`` folder and 12 photo
wallpapers of plasma; the abstract art stays out). ``trainers/photos_manifest.toml`` pins each file
(package, version, path, sha256, licence, credit, split): a file whose bytes differ is refused by
name, so the data identity is fixed whatever package version the machine offers.

Preparation (once, cached): each photo is halved with the project's Lanczos-5 (`trainers.lanczos`),
so its detail is at the scale of DIV2K-like 2K images and a 5K wallpaper costs what a 2.5K one does;
``train`` images are then centre-cropped to a multiple of 8, ``val``/``test`` ones centre-cropped to
at most `EVAL_MAX_HR` (960x528, ~16:9, a multiple of 48) so evaluating a trial stays cheap on 2 cores.

Cache (under `trainers.cache.default_cache_root`, or the LR cache's root)::

    <root>/photos/originals/<package>/<path in package>    verified files + the package's copyright file
    <root>/photos/prepared-v<PREP_VERSION>-<manifest hash>/{train,val,test}/*.png, manifest.json (last)

The .deb files are downloaded to a temporary folder, read with `trainers.debfile`, and deleted once
the photos are out of them.
``python -m trainers.photos`` fetches and prepares (``--debs DIR`` reads .deb files fetched by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_space.configio import atomic_write, content_hash, parse_toml, reject_unknown_keys
from search_space.errors import UserError
from trainers.cache import pixel_hash, publish_folder
from trainers.debfile import DebFileError, deb_control, deb_tar, member_path

__all__ = [
    "SOURCE",
    "PREP_VERSION",
    "HALVE",
    "EVAL_MAX_HR",
    "SPLITS",
    "PackagePin",
    "PhotoEntry",
    "PhotoImage",
    "PhotosManifest",
    "PhotosUnavailable",
    "fetch_photos",
    "load_manifest",
    "photos_available",
    "photos_identity",
    "photos_images",
    "photos_records",
    "resolve_default_source",
]

SOURCE = "photos"
"""The reserved data source name (``--data photos``, ``[data] train = "photos"``)."""
PREP_VERSION = 1
"""Bump when the preparation (halving, crops, PNG pixels) changes; it names the prepared folder."""
HALVE = 2
"""Every original is downscaled by this factor with Lanczos-5 before use."""
EVAL_MAX_HR = (528, 960)
"""(height, width) cap of a prepared val/test image: centre crop, both multiples of 48."""
SPLITS: tuple[str, ...] = ("train", "val", "test")

_MANIFEST_FILE = "photos_manifest.toml"
_MANIFEST_FORMAT = 1
_TRAIN_MULTIPLE = 8  # trainers.data.HR_MULTIPLE
_EVAL_MULTIPLE = 48  # trainers.data.EVAL_HR_MULTIPLE
_DOWNLOAD_TIMEOUT_S = 1800
_BY_HAND = "python -m trainers.photos --debs DIR"
_VERSION_FILE = ".deb-version"


class PhotosUnavailable(UserError):
    """The photos cannot be had on this machine (no apt-get, no network, a package whose photos differ)."""


# -- the manifest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackagePin:
    """A Debian package the photos come from, with the version their hashes were taken from."""

    name: str
    version: str
    copyright: str
    licence: str
    homepage: str = ""


@dataclass(frozen=True)
class PhotoEntry:
    """One pinned photograph: where it is in its package, its bytes' sha256, licence, credit, split."""

    name: str
    package: str
    file: str
    sha256: str
    size: tuple[int, int]  # width, height of the original
    licence: str
    credit: str
    split: str
    upstream_licence: str = ""


@dataclass(frozen=True)
class PhotosManifest:
    """The shipped pin list; `hash` (content hash of every field) is part of the data identity."""

    packages: tuple[PackagePin, ...]
    photos: tuple[PhotoEntry, ...]

    @property
    def hash(self) -> str:
        return content_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _MANIFEST_FORMAT,
            "package": [asdict(p) for p in self.packages],
            "photo": [{**asdict(p), "size": list(p.size)} for p in self.photos],
        }

    def package(self, name: str) -> PackagePin:
        return next(p for p in self.packages if p.name == name)

    def of_package(self, name: str) -> tuple[PhotoEntry, ...]:
        return tuple(p for p in self.photos if p.package == name)

    def split(self, split: str) -> tuple[PhotoEntry, ...]:
        if split not in SPLITS:
            raise UserError(f"photos have splits {', '.join(SPLITS)}, not {split!r}")
        return tuple(p for p in self.photos if p.split == split)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "photos manifest") -> PhotosManifest:
        """Parse and check: known keys, one split per photo, unique names, files and hashes, listed packages."""
        reject_unknown_keys(source, data, ("format", "package", "photo"))
        if data.get("format") != _MANIFEST_FORMAT:
            raise UserError(f"{source}: format {data.get('format')!r} is not {_MANIFEST_FORMAT}; this rtsr-nas reads format {_MANIFEST_FORMAT}")
        try:
            packages = tuple(PackagePin(**p) for p in data["package"])
            photos = tuple(PhotoEntry(**{**p, "size": tuple(p["size"])}) for p in data["photo"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"{source}: malformed entry ({exc}); see the fields of trainers/{_MANIFEST_FILE}") from None
        names = {p.name for p in packages}
        for what, values in (("package", [p.name for p in packages]), ("photo name", [p.name for p in photos]),
                             ("file", [(p.package, p.file) for p in photos]), ("sha256", [p.sha256 for p in photos])):
            if len(set(values)) != len(values):
                raise UserError(f"{source}: a {what} is listed twice; every photo must be in exactly one split")
        for p in photos:
            if p.package not in names:
                raise UserError(f"{source}: photo {p.name} names package {p.package!r}, which is not a [[package]]")
            if p.split not in SPLITS:
                raise UserError(f"{source}: photo {p.name} has split {p.split!r}; use one of {', '.join(SPLITS)}")
            if len(p.sha256) != 64 or any(c not in "0123456789abcdef" for c in p.sha256):
                raise UserError(f"{source}: photo {p.name}: sha256 must be 64 lowercase hex digits")
            if Path(p.file).is_absolute() or ".." in Path(p.file).parts:
                raise UserError(f"{source}: photo {p.name}: file must be a relative path inside the package, got {p.file!r}")
        return cls(packages=packages, photos=photos)


def load_manifest(path: str | Path | None = None) -> PhotosManifest:
    """The shipped manifest (package data), or the one at ``path``."""
    if path is None:
        import importlib.resources

        text = importlib.resources.files("trainers").joinpath(_MANIFEST_FILE).read_text(encoding="utf-8")
        return PhotosManifest.from_dict(parse_toml(text, source=f"trainers/{_MANIFEST_FILE}"), source=f"trainers/{_MANIFEST_FILE}")
    path = Path(path)
    return PhotosManifest.from_dict(parse_toml(path.read_text(encoding="utf-8"), source=str(path)), source=str(path))


# -- where things live ----------------------------------------------------------------------------


def _root(cache_dir: str | Path | None) -> Path:
    from trainers.cache import default_cache_root

    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()) / SOURCE


def _prepared_dir(manifest: PhotosManifest, cache_dir: str | Path | None) -> Path:
    return _root(cache_dir) / f"prepared-v{PREP_VERSION}-{manifest.hash[:12]}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unavailable_hint() -> str:
    return (f"get the two .deb files by hand (packages.debian.org) and run `{_BY_HAND}`, or pass --data builtin "
            "(or a folder of your own photos)")


def _extract_package(deb: Path, pin: PackagePin, manifest: PhotosManifest, originals: Path) -> str:
    """Verify every pinned photo of ``pin`` in ``deb`` and write them (and the copyright file) to the cache.

    Nothing is written unless every photo matches: a package version whose photos differ is refused,
    naming the first file that does. Returns the package version read from the .deb."""
    try:
        return _extract_verified(deb, pin, manifest, originals)
    except DebFileError as exc:
        raise PhotosUnavailable(f"{exc}; download it again, or {_unavailable_hint()}") from None


def _extract_verified(deb: Path, pin: PackagePin, manifest: PhotosManifest, originals: Path) -> str:
    package, version = deb_control(deb)
    if package != pin.name:
        raise PhotosUnavailable(f"{deb.name} is package {package}, not {pin.name}; pass the right .deb or {_unavailable_hint()}")
    wanted = {p.file: p for p in manifest.of_package(pin.name)}
    got: dict[str, bytes] = {}
    with deb_tar(deb, "data") as tar:
        for member in tar:
            path = member_path(member.name)
            if (path in wanted or path == pin.copyright) and member.isfile():
                got[path] = tar.extractfile(member).read()  # type: ignore[union-attr]
    which = f"{pin.name} {version}" + (f" (the manifest pins {pin.version})" if version != pin.version else "")
    fix = (f"use version {pin.version} (`apt-get download {pin.name}={pin.version}`, or its .deb by hand with `{_BY_HAND}`), "
           "or pass --data builtin")
    for path, photo in wanted.items():
        if path not in got:
            raise PhotosUnavailable(f"{which}: {path} (photo {photo.name}) is missing from {deb.name}; its photos differ from the manifest's: {fix}")
        digest = hashlib.sha256(got[path]).hexdigest()
        if digest != photo.sha256:
            raise PhotosUnavailable(f"{which}: {path} (photo {photo.name}) differs from the manifest (sha256 {digest[:12]}... != "
                                    f"{photo.sha256[:12]}...); its photos are not the pinned ones: {fix}")
    for path, data in got.items():
        atomic_write(originals / pin.name / path, data)
    atomic_write(originals / pin.name / _VERSION_FILE, version + "\n")  # the version the files were taken from
    return version


def _apt_download(pin: PackagePin, workdir: Path, *, progress: bool) -> Path:
    """``apt-get download`` the pinned version if the package lists have it, else the candidate."""
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise PhotosUnavailable(f"the photos need the Debian package {pin.name} {pin.version} and apt-get is not on PATH: {_unavailable_hint()}")
    if progress:
        print(f"photos: apt-get download {pin.name} ...", file=sys.stderr, flush=True)
    err = ""
    for spec in (f"{pin.name}={pin.version}", pin.name):
        try:
            proc = subprocess.run([apt_get, "download", spec], cwd=workdir, capture_output=True, text=True,
                                  timeout=_DOWNLOAD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PhotosUnavailable(f"apt-get download {pin.name} took over {_DOWNLOAD_TIMEOUT_S} s; check the network, or "
                                    f"{_unavailable_hint()}") from None
        debs = sorted(workdir.glob(f"{pin.name}_*.deb"))
        if proc.returncode == 0 and debs:
            return debs[-1]
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        err = lines[-1].strip() if lines else f"exit status {proc.returncode}"
    raise PhotosUnavailable(
        f"apt-get download {pin.name} failed ({err}); check the network and the package lists (`sudo apt-get update`), "
        f"or {_unavailable_hint()}"
    )


def _find_deb(folder: Path, pin: PackagePin) -> Path:
    debs = sorted(Path(folder).expanduser().glob(f"{pin.name}_*.deb"))
    if not debs:
        raise PhotosUnavailable(f"no {pin.name}_*.deb in {folder}; download {pin.name} {pin.version} (packages.debian.org) into it, "
                                "or pass --data builtin")
    return debs[-1]


def _verified(manifest: PhotosManifest, originals: Path, package: str) -> bool:
    for photo in manifest.of_package(package):
        path = originals / package / photo.file
        if not path.is_file() or _sha256_file(path) != photo.sha256:
            return False
    return True


def fetch_photos(
    *, cache_dir: str | Path | None = None, debs: str | Path | None = None, manifest: PhotosManifest | None = None,
    progress: bool = True,
) -> Path:
    """Make sure every pinned original is in the cache and matches its sha256; returns the originals folder.

    Packages whose photos are all cached and intact are not fetched again. Others are read from
    ``debs`` (a folder of .deb files) when given, else downloaded with ``apt-get download`` into a
    temporary folder that is deleted afterwards. Raises `PhotosUnavailable` (a one-line `UserError`)
    when that cannot be done or a file differs from the manifest."""
    manifest = manifest or load_manifest()
    root = _root(cache_dir)
    originals = root / "originals"
    todo = [pin for pin in manifest.packages if not _verified(manifest, originals, pin.name)]
    if not todo:
        return originals
    if debs is None and shutil.which("apt-get") is None:
        wanted = " and ".join(f"{pin.name} {pin.version}" for pin in todo)
        raise PhotosUnavailable(f"the photos come from the Debian packages {wanted}, and apt-get is not on PATH (not "
                                f"Debian/Ubuntu): {_unavailable_hint()}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PhotosUnavailable(f"cannot write the photos cache {root} ({exc.strerror}); set RTSR_CACHE_DIR to a writable folder") from None
    for pin in todo:
        if debs is not None:
            _extract_package(_find_deb(Path(debs), pin), pin, manifest, originals)
            continue
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
            os.chmod(tmp, 0o755)  # apt's _apt sandbox user must be able to write into it when run as root
            deb = _apt_download(pin, Path(tmp), progress=progress)
            _extract_package(deb, pin, manifest, originals)
    return originals


# -- preparation ----------------------------------------------------------------------------------


def _centre_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
    return img[top : top + height, left : left + width]


def _prepare_one(original: np.ndarray, split: str) -> np.ndarray:
    """Halve with Lanczos-5, then centre-crop: train to a multiple of 8, val/test to at most `EVAL_MAX_HR` (multiples of 48)."""
    from trainers.lanczos import lanczos_downscale

    img = lanczos_downscale(original, HALVE)
    h, w = img.shape[:2]
    if split == "train":
        return np.ascontiguousarray(_centre_crop(img, h - h % _TRAIN_MULTIPLE, w - w % _TRAIN_MULTIPLE))
    cap_h, cap_w = EVAL_MAX_HR
    return np.ascontiguousarray(_centre_crop(img, min(h, cap_h) // _EVAL_MULTIPLE * _EVAL_MULTIPLE,
                                              min(w, cap_w) // _EVAL_MULTIPLE * _EVAL_MULTIPLE))



def _prepare(manifest: PhotosManifest, originals: Path, final: Path, versions: Mapping[str, str], *, progress: bool) -> None:
    """Write every prepared split into a temp folder beside ``final`` and move it into place (atomic)."""
    from PIL import Image
    from tqdm import tqdm

    from trainers.imageio import read_image

    t0 = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepared.tmp-", dir=final.parent))
    try:
        entries = []
        for photo in tqdm(manifest.photos, desc="preparing photos (Lanczos halving)", unit="img", disable=not progress, file=sys.stderr):
            img = _prepare_one(read_image(originals / photo.package / photo.file), photo.split)
            (tmp / photo.split).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp / photo.split / f"{photo.name}.png", compress_level=1)
            entries.append({"name": photo.name, "split": photo.split, "file": f"{photo.split}/{photo.name}.png",
                            "height": int(img.shape[0]), "width": int(img.shape[1]), "sha256_pixels": pixel_hash(img),
                            "package": photo.package, "original": photo.file, "licence": photo.licence, "credit": photo.credit})
        doc = {"source": SOURCE, "prep_version": PREP_VERSION, "manifest_hash": manifest.hash, "halve": HALVE,
               "eval_max_hr": list(EVAL_MAX_HR), "package_versions": dict(versions),
               "seconds": round(time.perf_counter() - t0, 2), "images": entries}
        atomic_write(tmp / "manifest.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
        publish_folder(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class PhotoImage:
    """A prepared photo: its pixels (HxWx3 uint8) and where it came from."""

    name: str
    split: str
    image: np.ndarray
    licence: str
    credit: str


def _read_prepared(folder: Path, split: str | None) -> tuple[dict[str, Any], list[PhotoImage]] | None:
    """The prepared manifest and images (of ``split``, or none with None); None when missing or damaged."""
    from PIL import Image

    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if doc["prep_version"] != PREP_VERSION or not isinstance(doc["manifest_hash"], str) or not isinstance(doc["package_versions"], dict):
            return None
        out = []
        for e in doc["images"]:
            if split is None or e["split"] != split:
                continue
            with Image.open(folder / e["file"]) as im:
                img = np.asarray(im.convert("RGB"))
            if pixel_hash(img) != e["sha256_pixels"]:
                return None
            out.append(PhotoImage(name=e["name"], split=e["split"], image=img, licence=e["licence"], credit=e["credit"]))
        return doc, out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ensure_prepared(*, cache_dir: str | Path | None, debs: str | Path | None = None, progress: bool = True) -> Path:
    """The prepared folder, fetched and prepared on first use."""
    manifest = load_manifest()
    folder = _prepared_dir(manifest, cache_dir)
    if (folder / "manifest.json").is_file():
        if _read_prepared(folder, None) is not None:
            return folder
        from trainers.cache import CacheWarning

        warnings.warn(f"photos cache {folder} is incomplete or damaged; preparing it again", CacheWarning, stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
    originals = fetch_photos(cache_dir=cache_dir, debs=debs, manifest=manifest, progress=progress)
    versions = {}
    for pin in manifest.packages:
        seen = originals / pin.name / _VERSION_FILE
        versions[pin.name] = seen.read_text(encoding="utf-8").strip() if seen.is_file() else pin.version
    _prepare(manifest, originals, folder, versions, progress=progress)
    return folder


def photos_records(split: str, *, cache_dir: str | Path | None = None, progress: bool = True) -> list[PhotoImage]:
    """The prepared photos of ``split`` (in manifest order), fetched and prepared on first use.

    A damaged prepared folder (missing file, changed pixels) is prepared again with a warning."""
    load_manifest().split(split)  # checks the split name
    folder = _ensure_prepared(cache_dir=cache_dir, progress=progress)
    read = _read_prepared(folder, split)
    if read is None:
        from trainers.cache import CacheWarning

        warnings.warn(f"photos cache {folder} is incomplete or damaged; preparing it again", CacheWarning, stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        folder = _ensure_prepared(cache_dir=cache_dir, progress=progress)
        read = _read_prepared(folder, split)
        if read is None:
            raise UserError(f"could not write the photos to {folder}; check that the folder is writable or set RTSR_CACHE_DIR")
    return read[1]


def photos_images(split: str, *, cache_dir: str | Path | None = None, progress: bool = True) -> list[tuple[str, np.ndarray]]:
    """``[(name, HxWx3 uint8)]`` of one split; see `photos_records`."""
    return [(p.name, p.image) for p in photos_records(split, cache_dir=cache_dir, progress=progress)]


def photos_available(*, cache_dir: str | Path | None = None) -> bool:
    """True when the photos are prepared in the cache or their verified originals are: no download, no network."""
    manifest = load_manifest()
    if (_prepared_dir(manifest, cache_dir) / "manifest.json").is_file():
        return True
    originals = _root(cache_dir) / "originals"
    return all(_verified(manifest, originals, pin.name) for pin in manifest.packages)


def resolve_default_source(*, cache_dir: str | Path | None = None, fetch: bool = True, progress: bool = True) -> tuple[str, str | None]:
    """``("photos", None)`` when the photos are (or, with ``fetch``, can now be) prepared, else
    ``("builtin", notice)`` with a one-line notice saying why: for a default that prefers photographs."""
    try:
        if fetch:
            _ensure_prepared(cache_dir=cache_dir, progress=progress)
        elif not photos_available(cache_dir=cache_dir):
            raise PhotosUnavailable(f"they are not in the cache; fetch them with `python -m trainers.photos` ({_unavailable_hint()})")
    except PhotosUnavailable as exc:
        return "builtin", f"data: builtin, because the photos source is unavailable: {exc}"
    return SOURCE, None


def photos_identity(*, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """What fixes the photos' pixels, for run records: manifest hash, preparation version, the package
    versions the files were taken from, and a hash of every prepared image's pixels.

    Prepares the photos if needed (the caller is about to use them)."""
    folder = _ensure_prepared(cache_dir=cache_dir, progress=False)
    read = _read_prepared(folder, None)
    if read is None:
        raise UserError(f"photos cache {folder} is damaged; delete it and run again")
    doc = read[0]
    pixels = hashlib.sha256("".join(f"{e['split']}/{e['name']}:{e['sha256_pixels']}\n" for e in doc["images"]).encode()).hexdigest()
    return {"source": SOURCE, "manifest_hash": doc["manifest_hash"], "prep_version": doc["prep_version"],
            "package_versions": doc["package_versions"], "pixels_sha256": pixels,
            "images": {s: sum(e["split"] == s for e in doc["images"]) for s in SPLITS}}


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers.photos``: fetch, verify and prepare the photos; print where and how big."""
    parser = argparse.ArgumentParser(prog="python -m trainers.photos", description=__doc__.splitlines()[0])
    parser.add_argument("--debs", help="folder with the two .deb files, fetched by hand (default: apt-get download)")
    parser.add_argument("--cache-dir", help="cache root (default: $RTSR_CACHE_DIR or ~/.cache/rtsr-nas)")
    parser.add_argument("--setup", action="store_true", help="never fail: where the photos cannot be had, print a one-line notice and exit 0")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        folder = _ensure_prepared(cache_dir=args.cache_dir, debs=args.debs, progress=True)
    except UserError as exc:
        if args.setup:
            print(f"[setup] notice: the photos data source is not set up: {exc}", flush=True)
            return 0
        print(f"trainers.photos: error: {exc}", file=sys.stderr)
        return 2
    read = _read_prepared(folder, None)
    if read is None:
        print(f"trainers.photos: error: {folder} is damaged; delete it and run again", file=sys.stderr)
        return 2
    doc = read[0]
    for split in SPLITS:
        sizes = sorted(((e["width"], e["height"]) for e in doc["images"] if e["split"] == split), key=lambda s: s[0] * s[1])
        mpx = sum(w * h for w, h in sizes) / 1e6
        print(f"photos [{split}]: {len(sizes)} images, {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]}, {mpx:.1f} Mpx")
    print(f"photos: ready in {folder} ({time.perf_counter() - t0:.1f} s; manifest {doc['manifest_hash']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
