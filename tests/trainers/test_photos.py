"""The `photos` data source: manifest pinning, disjoint splits, the error where the photos cannot be
had, and the data identity in run.json.

No test downloads anything: fake Debian packages (real ar + tar.xz archives, as `apt-get download`
would leave them) are built in tmp_path from synthetic images, and a fake ``apt-get`` on PATH copies
them. Only `test_real_photos_when_cached` reads the real photos, and only where `scripts/setup.sh`
fetched them into the cache (CI does); every other test runs everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_space.errors import UserError
from trainers import photos
from trainers.photos import PhotosManifest, PhotosUnavailable

# -- fakes ----------------------------------------------------------------------------------------


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def make_deb(path: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal but valid .deb (dpkg-deb reads it) holding ``files`` (paths inside the package)."""
    control = f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz({"control": control.encode()})),
                          ("data.tar.xz", _tar_xz(files))]))
    return path


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


PACKAGES = {"pkg-a": "1.0-1", "pkg-b": "2:3.0-1"}
# name -> (package, split); 2 photos per split
LAYOUT = {"a1": ("pkg-a", "train"), "a2": ("pkg-a", "val"), "a3": ("pkg-a", "test"),
          "b1": ("pkg-b", "train"), "b2": ("pkg-b", "val"), "b3": ("pkg-b", "test")}


@pytest.fixture(scope="module")
def _fake_packages(rng_image, tmp_path_factory):
    """The bytes of `fake_source`'s packages, made once for the module (PNG and xz encoding took a
    quarter of a second per test); each test writes them into its own folder."""
    files: dict[str, dict[str, bytes]] = {p: {f"usr/share/doc/{p}/copyright": b"License: GPL-2+\n",
                                             f"usr/share/{p}/abstract.png": _png(rng_image(64, 64, seed=99))} for p in PACKAGES}
    rows = []
    for i, (name, (package, split)) in enumerate(LAYOUT.items()):
        data = _png(rng_image(200, 264, seed=i))
        file = f"usr/share/{package}/{name}.png"
        files[package][file] = data
        rows.append({"name": name, "package": package, "file": file, "sha256": hashlib.sha256(data).hexdigest(), "size": [264, 200],
                     "licence": "GPL-2+", "credit": "test", "split": split})
    made = tmp_path_factory.mktemp("debs")
    debs = {}
    for package, version in PACKAGES.items():
        name = f"{package}_{version.replace(':', '%3a')}_all.deb"
        debs[name] = make_deb(made / name, package, version, files[package]).read_bytes()
    manifest = {
        "format": 1,
        "package": [{"name": p, "version": v, "copyright": f"usr/share/doc/{p}/copyright", "licence": "GPL-2+"} for p, v in PACKAGES.items()],
        "photo": rows,
    }
    return manifest, debs, files


@pytest.fixture()
def fake_source(tmp_path, _fake_packages):
    """Two fake packages in ``debs/`` and the manifest that pins their six photos (plus one abstract file left out)."""
    manifest, packages, files = _fake_packages
    debs = tmp_path / "debs"
    debs.mkdir()
    for name, data in packages.items():
        (debs / name).write_bytes(data)
    return PhotosManifest.from_dict(copy.deepcopy(manifest)), debs, {p: dict(f) for p, f in files.items()}


@pytest.fixture()
def use_fake_manifest(monkeypatch, fake_source):
    manifest = fake_source[0]
    monkeypatch.setattr(photos, "load_manifest", lambda path=None: manifest)
    return fake_source


def _hide_dpkg_deb(monkeypatch) -> None:
    real = shutil.which
    monkeypatch.setattr(photos.shutil, "which", lambda name, *a, **k: None if name == "dpkg-deb" else real(name, *a, **k))


@pytest.fixture(params=["python", "dpkg-deb"])
def extractor(request, monkeypatch):
    """Both ways of reading a .deb: dpkg-deb where installed (CI), the ar + tar reader everywhere."""
    if request.param == "python":
        _hide_dpkg_deb(monkeypatch)
    elif shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (the python reader is tested instead)")
    return request.param


def _fake_apt_get(folder: Path, debs: Path | None) -> Path:
    """An ``apt-get`` that 'downloads' from ``debs`` (None: fails like one without network or lists)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "apt-get"
    body = 'name="${2%%=*}"\n'
    body += f'cp "{debs}/$name"_*.deb . 2>/dev/null && exit 0\n' if debs is not None else ""
    body += 'echo "E: Unable to locate package $2" >&2\nexit 100\n'
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


# -- the shipped manifest -------------------------------------------------------------------------


def test_shipped_manifest_pins_24_photos_in_disjoint_splits():
    m = photos.load_manifest()
    assert {p.name for p in m.packages} == {"mate-backgrounds", "plasma-workspace-wallpapers"}
    assert len(m.photos) == 24 and len(m.of_package("mate-backgrounds")) == 12
    by_split = {s: {p.name for p in m.split(s)} for s in photos.SPLITS}
    assert [len(by_split[s]) for s in photos.SPLITS] == [12, 6, 6]  # >= 5 per evaluation split: a spread is measurable
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"] or by_split["val"] & by_split["test"])
    assert len({p.sha256 for p in m.photos}) == 24
    for s in ("val", "test"):  # each evaluation split holds photos of both packages
        assert {p.package for p in m.split(s)} == {"mate-backgrounds", "plasma-workspace-wallpapers"}
    assert all(p.licence and p.credit for p in m.photos)
    assert all(p.file.startswith("usr/share/backgrounds/mate/nature/") for p in m.of_package("mate-backgrounds"))
    assert len(m.hash) >= 12 and m.hash == photos.load_manifest().hash


def test_manifest_refuses_a_photo_in_two_splits(fake_source):
    d = fake_source[0].to_dict()
    d["photo"].append({**d["photo"][0], "split": "test"})
    with pytest.raises(UserError, match="exactly one split"):
        PhotosManifest.from_dict(d)


# -- pinning --------------------------------------------------------------------------------------


def test_fetch_from_debs_keeps_only_the_pinned_photos(tmp_path, fake_source, extractor):
    manifest, debs, files = fake_source
    originals = photos.fetch_photos(cache_dir=tmp_path / "cache", debs=debs, manifest=manifest, progress=False)
    kept = sorted(str(p.relative_to(originals)) for p in originals.rglob("*") if p.is_file() and p.name != ".deb-version")
    expected = sorted([f"{p.package}/{p.file}" for p in manifest.photos] + [f"{p}/usr/share/doc/{p}/copyright" for p in PACKAGES])
    assert kept == expected  # the abstract file stays out; the licence text comes along
    assert (originals / "pkg-b" / ".deb-version").read_text().strip() == "2:3.0-1"
    assert (originals / "pkg-a/usr/share/pkg-a/a1.png").read_bytes() == files["pkg-a"]["usr/share/pkg-a/a1.png"]


def test_a_file_that_is_not_a_package_is_one_error_naming_the_fix(tmp_path, fake_source, extractor):
    manifest, debs, _ = fake_source
    broken = sorted(debs.glob("pkg-a_*.deb"))[0]
    broken.write_bytes(b"<html>a proxy's error page, saved as a .deb</html>\n")
    with pytest.raises(PhotosUnavailable) as info:
        photos.fetch_photos(cache_dir=tmp_path / "cache", debs=debs, manifest=manifest, progress=False)
    message = str(info.value)
    assert broken.name in message and "download it again" in message and "--data builtin" in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / "photos" / "originals" / "pkg-a").exists()


def test_a_changed_photo_is_refused_by_name_and_nothing_is_written(tmp_path, fake_source, extractor):
    manifest, debs, files = fake_source
    changed = dict(files["pkg-b"])
    changed["usr/share/pkg-b/b2.png"] = changed["usr/share/pkg-b/b2.png"][:-8] + b"\0" * 8
    make_deb(debs / "pkg-b_2%3a3.0-1_all.deb", "pkg-b", "2:3.0-2", changed)  # a new version whose photo differs
    with pytest.raises(PhotosUnavailable) as err:
        photos.fetch_photos(cache_dir=tmp_path / "cache", debs=debs, manifest=manifest, progress=False)
    msg = str(err.value)
    assert "usr/share/pkg-b/b2.png" in msg and "photo b2" in msg and "pkg-b 2:3.0-2" in msg and "pins 2:3.0-1" in msg
    assert "\n" not in msg and "--data builtin" in msg
    assert not (tmp_path / "cache" / "photos" / "originals" / "pkg-b").exists()


def test_a_missing_photo_is_refused_by_name(tmp_path, fake_source):
    manifest, debs, files = fake_source
    less = {k: v for k, v in files["pkg-a"].items() if not k.endswith("a3.png")}
    make_deb(debs / "pkg-a_1.0-1_all.deb", "pkg-a", "1.0-1", less)
    with pytest.raises(PhotosUnavailable, match=r"usr/share/pkg-a/a3.png \(photo a3\) is missing"):
        photos.fetch_photos(cache_dir=tmp_path / "cache", debs=debs, manifest=manifest, progress=False)


def test_another_version_with_the_same_photos_is_accepted(tmp_path, monkeypatch, fake_source):
    manifest, debs, files = fake_source
    make_deb(debs / "pkg-a_1.0-1_all.deb", "pkg-a", "1.0-9ubuntu1", files["pkg-a"])
    monkeypatch.setattr(photos, "load_manifest", lambda path=None: manifest)
    cache = tmp_path / "cache"
    photos.fetch_photos(cache_dir=cache, debs=debs, manifest=manifest, progress=False)
    # the identity names the version the photos were taken from
    assert photos.photos_identity(cache_dir=cache)["package_versions"] == {**PACKAGES, "pkg-a": "1.0-9ubuntu1"}


def test_a_damaged_cached_original_is_fetched_again(tmp_path, fake_source):
    manifest, debs, _ = fake_source
    cache = tmp_path / "cache"
    originals = photos.fetch_photos(cache_dir=cache, debs=debs, manifest=manifest, progress=False)
    target = originals / "pkg-a/usr/share/pkg-a/a2.png"
    target.write_bytes(b"truncated")
    photos.fetch_photos(cache_dir=cache, debs=debs, manifest=manifest, progress=False)
    assert photos._sha256_file(target) == next(p.sha256 for p in manifest.photos if p.name == "a2")


# -- obtaining them -------------------------------------------------------------------------------


def test_no_apt_get_is_a_one_line_error_naming_the_fix(tmp_path, monkeypatch, use_fake_manifest):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cache = tmp_path / "cache"
    with pytest.raises(PhotosUnavailable) as err:
        photos.fetch_photos(cache_dir=cache, progress=False)
    msg = str(err.value)
    assert "apt-get is not on PATH" in msg and "python -m trainers.photos --debs DIR" in msg and "--data builtin" in msg
    assert "\n" not in msg
    source, notice = photos.resolve_default_source(cache_dir=cache, progress=False)
    assert source == "builtin" and notice is not None and "\n" not in notice and "apt-get" in notice
    assert photos.resolve_default_source(cache_dir=cache, fetch=False)[0] == "builtin"
    assert photos.photos_available(cache_dir=cache) is False

    from trainers.cache import LRCache
    from trainers.data import load_split

    with pytest.raises(UserError, match="apt-get is not on PATH"):  # what `--data photos` says
        load_split("photos", split="val", qps=[31], cache=LRCache(root=cache), progress=False)


def test_setup_mode_prints_one_notice_and_succeeds(tmp_path, monkeypatch, capsys, use_fake_manifest):
    """What scripts/setup.sh runs: no photos must never fail the setup."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert photos.main(["--setup", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("[setup] notice: the photos data source is not set up") and "\n" not in out
    assert photos.main(["--cache-dir", str(tmp_path / "cache")]) == 2  # by hand it is an error, with the same one line
    assert "apt-get is not on PATH" in capsys.readouterr().err


def test_apt_get_failure_says_what_to_do(tmp_path, monkeypatch, use_fake_manifest):
    monkeypatch.setenv("PATH", f"{_fake_apt_get(tmp_path / 'bin', None)}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(PhotosUnavailable) as err:
        photos.fetch_photos(cache_dir=tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "E: Unable to locate package pkg-a" in msg and "sudo apt-get update" in msg and "\n" not in msg
    leftovers = [p for p in (tmp_path / "cache" / "photos").iterdir() if p.name.startswith(".download-")]
    assert leftovers == []  # the temporary download folder is gone


def test_apt_get_download_fetches_and_prepares(tmp_path, monkeypatch, use_fake_manifest):
    _, debs, _ = use_fake_manifest
    _hide_dpkg_deb(monkeypatch)
    monkeypatch.setenv("PATH", f"{_fake_apt_get(tmp_path / 'bin', debs)}{os.pathsep}{os.environ['PATH']}")  # cp from the system
    cache = tmp_path / "cache"
    assert photos.resolve_default_source(cache_dir=cache, progress=False) == ("photos", None)
    assert photos.photos_available(cache_dir=cache)
    assert not list((cache / "photos").glob("*.deb")) and not list((cache / "photos").glob(".download-*"))


# -- splits and identity --------------------------------------------------------------------------


def test_photos_splits_are_disjoint_prepared_and_identified(tmp_path, use_fake_manifest):
    from trainers.cache import LRCache
    from trainers.splits import data_identity, load_splits

    manifest, debs, _ = use_fake_manifest
    cache = tmp_path / "cache"
    photos.fetch_photos(cache_dir=cache, debs=debs, manifest=manifest, progress=False)
    loaded = load_splits("photos", qps=[31, 63], cache=LRCache(root=cache), workers=1, progress=False)
    names = {s: set(getattr(loaded, s).names) for s in photos.SPLITS}
    assert names == {s: {p.name for p in manifest.split(s)} for s in photos.SPLITS}
    assert loaded.carved == () and {getattr(loaded, s).source for s in photos.SPLITS} == {"photos"}
    # halved 264x200 -> 132x100; train cropped to a multiple of 8, val/test to a multiple of 48
    assert {hr.shape for hr in loaded.train.hr} == {(96, 128, 3)}
    assert {hr.shape for s in ("val", "test") for hr in getattr(loaded, s).hr} == {(96, 96, 3)}

    ident = data_identity({"train": loaded.train, "val": loaded.val, "test": loaded.test}, cache_dir=cache)
    assert ident["val"]["source"] == "photos" and ident["val"]["images"] == 2
    assert ident["train"]["photos"]["manifest_hash"] == manifest.hash
    assert ident["train"]["photos"]["package_versions"] == PACKAGES
    assert len({ident[s]["pixels_sha256"] for s in photos.SPLITS}) == 3
    again = load_splits("photos", qps=[31, 63], cache=LRCache(root=cache), workers=1, progress=False)
    assert data_identity({"train": again.train}, cache_dir=cache)["train"] == ident["train"]  # deterministic


def test_a_damaged_prepared_photo_is_prepared_again(tmp_path, use_fake_manifest):
    from trainers.cache import CacheWarning

    manifest, debs, _ = use_fake_manifest
    cache = tmp_path / "cache"
    photos.fetch_photos(cache_dir=cache, debs=debs, manifest=manifest, progress=False)
    first = photos.photos_images("val", cache_dir=cache, progress=False)
    png = next((cache / "photos").glob("prepared-*/val/a2.png"))
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(png)
    with pytest.warns(CacheWarning, match="preparing it again"):
        second = photos.photos_images("val", cache_dir=cache, progress=False)
    assert [n for n, _ in first] == [n for n, _ in second] and all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, second))


def test_study_and_cli_accept_photos():
    from nas.study import DataSpec, load_study
    from rtsr.search import build_parser

    assert DataSpec(train="photos").val_source == "photos"
    study = load_study("smoke").with_overrides(data__train="photos")
    assert study.data.train == "photos"
    assert build_parser().parse_args(["--study", "smoke", "--data", "photos"]).data == "photos"


def test_run_json_records_the_data_identity(tmp_path, monkeypatch, use_fake_manifest):
    from nas.driver import SearchDriver
    from nas.study import load_study
    from nas.testing import FakeExecutor, fake_training_output

    manifest, debs, _ = use_fake_manifest
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "cache"))
    photos.fetch_photos(debs=debs, manifest=manifest, progress=False)
    study = load_study("smoke").with_overrides(data__train="photos", budget__trials=1)
    fake = FakeExecutor(train=lambda payload: fake_training_output(payload, 0.1), latency_ms=lambda arch: [1.0])
    run_dir = tmp_path / "run"
    assert SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run() == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["study"]["data"]["train"] == "photos"
    for split in photos.SPLITS:
        assert run["data"][split]["source"] == "photos" and run["data"][split]["images"] == 2
        assert run["data"][split]["photos"]["manifest_hash"] == manifest.hash
        assert len(run["data"][split]["pixels_sha256"]) == 64


# -- the real photos, where setup.sh fetched them -------------------------------------------------


def test_real_photos_when_cached():
    """The shipped manifest's photos as prepared on this machine (skipped where they were not fetched)."""
    if not photos.photos_available():
        pytest.skip("the photos are not in the cache: run `bash scripts/setup.sh` or `python -m trainers.photos`")
    manifest = photos.load_manifest()
    for split in photos.SPLITS:
        recs = photos.photos_records(split, progress=False)
        assert [r.name for r in recs] == [p.name for p in manifest.split(split)]
        for r in recs:
            h, w = r.image.shape[:2]
            if split == "train":
                assert h % 8 == 0 and w % 8 == 0 and min(h, w) >= 480
            else:
                assert h % 48 == 0 and w % 48 == 0 and h == photos.EVAL_MAX_HR[0] and w <= photos.EVAL_MAX_HR[1]
