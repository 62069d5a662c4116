"""Several splits of one dataset: train, val and test, disjoint, carved when not given.

Why a module of its own: `trainers.data` reads one split; the rules that relate splits (a split that
is not given is carved deterministically from the training images; no image may be in two splits;
test is carved first so it does not depend on whether val is carved) are the honest-evaluation
contract of the project, and they read best in one place.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_space.errors import UserError
from trainers.data import (
    EVAL_HR_MULTIPLE,
    HR_MULTIPLE,
    SPLITS,
    PairedSet,
    _check_load_args,
    _check_qps,
    _is_named_source,
    _make_pairs,
    _read_source,
    crop_to_multiple,
    load_split,
    resolve_split_folder,
)

if TYPE_CHECKING:
    from trainers.cache import LRCache
    from trainers.degrade import DegradeSpec

__all__ = ["CARVE_FRACTION", "SPLITS", "LoadedSplits", "carve", "check_disjoint", "data_identity", "image_keys", "load_splits"]

CARVE_FRACTION = 0.1
"""Share of the training images that each carved split (val, test) takes; at least one image each."""
_CARVE_SALT = "rtsr-nas/carve/v1/"


def _carve_rank(name: str) -> str:
    return hashlib.sha256((_CARVE_SALT + name).encode("utf-8")).hexdigest()


def carve(
    names: Sequence[str],
    splits: Sequence[str],
    *,
    fraction: float = CARVE_FRACTION,
    eligible: Collection[str] | None = None,
    where: str = "the training images",
) -> dict[str, tuple[str, ...]]:
    """Split file ``names`` into ``train`` and each of ``splits`` (``val``, ``test``), deterministically.

    Each carved split takes ``max(1, round(fraction * len(names)))`` names, picked from ``eligible``
    (default: all; images too small to evaluate are not) in the order of a salted sha256 of the name:
    the result depends on the set of names only, never on their order, and ``test`` is taken first so
    that it is the same whether or not ``val`` is carved too. Every split keeps ``names``' order.
    Raises `UserError` when too few names are left for one training image.
    """
    unknown = [s for s in splits if s not in ("val", "test")]
    if unknown or len(set(splits)) != len(splits):
        raise ValueError(f"carve: splits must be distinct names among 'val', 'test', got {list(splits)}")
    if len(set(names)) != len(names):
        raise ValueError("carve: file names must be distinct")
    order = [s for s in ("test", "val") if s in splits]
    if not order:
        return {"train": tuple(names)}
    n = len(names)
    what = " and ".join(s for s in ("val", "test") if s in splits)
    hint = "add images, or pass separate " + " and ".join(f"--{s}-data" for s in ("val", "test") if s in splits) + " folders"
    need = 1 + len(order)
    if n < need:
        raise UserError(
            f"{where}: {n} usable image(s) are too few to carve {what} from them; that needs at least {need} "
            f"(1 to train on and 1 for each of {what}); {hint}"
        )
    count = max(1, int(fraction * n + 0.5))
    pool = sorted((names if eligible is None else [x for x in names if x in eligible]), key=_carve_rank)
    if len(pool) < count * len(order):
        raise UserError(
            f"{where}: only {len(pool)} of {n} images are large enough to evaluate (after cropping to a multiple of "
            f"{EVAL_HR_MULTIPLE} px), too few to carve {count * len(order)} for {what}; {hint}"
        )
    taken: dict[str, set[str]] = {}
    for i, split in enumerate(order):
        taken[split] = set(pool[i * count : (i + 1) * count])
    used = set().union(*taken.values())
    out = {"train": tuple(x for x in names if x not in used)}
    out.update({s: tuple(x for x in names if x in taken[s]) for s in splits})
    return out


_IMAGE_KEYS: weakref.WeakKeyDictionary[PairedSet, tuple[str, ...]] = weakref.WeakKeyDictionary()


def image_keys(pairs: PairedSet) -> tuple[str, ...]:
    """Content hash of each HR image of ``pairs`` (as cropped), computed once per set."""
    keys = _IMAGE_KEYS.get(pairs)
    if keys is None:
        from trainers.cache import content_hash as pixel_hash

        keys = tuple(pixel_hash(hr) for hr in pairs.hr)
        _IMAGE_KEYS[pairs] = keys
    return keys


def _overlap_key(img: np.ndarray) -> str:
    """A hash that is equal for the same source image in any split: crops are top-left anchored, so
    cropping a training crop (multiple of 8) to a multiple of 48 gives the evaluation crop."""
    from trainers.cache import content_hash as pixel_hash

    if min(img.shape[0], img.shape[1]) >= EVAL_HR_MULTIPLE:
        img = crop_to_multiple(img, EVAL_HR_MULTIPLE)
    return pixel_hash(img)


def check_disjoint(splits: Mapping[str, PairedSet | None]) -> None:
    """Raise `UserError` if any image (by pixels, not by name) is in two of ``splits``."""
    seen: dict[str, tuple[str, str]] = {}
    clashes: list[str] = []
    for split, pairs in splits.items():
        if pairs is None:
            continue
        for name, key in zip(pairs.names, (_overlap_key(h) for h in pairs.hr)):
            if key in seen and seen[key][0] != split:
                other_split, other_name = seen[key]
                clashes.append(f"{other_name} ({other_split}) = {name} ({split})")
            seen.setdefault(key, (split, name))
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise UserError(
            f"{len(clashes)} image(s) are in two splits: {', '.join(clashes[:3])}{more}; evaluation must never see a "
            "training image: remove the duplicates, or pass separate folders (do not pass the training folder as "
            "--val-data or --test-data)"
        )


@dataclass(frozen=True, eq=False)
class LoadedSplits:
    """The three splits of one dataset; ``carved`` names the ones cut out of the training images."""

    train: PairedSet
    val: PairedSet
    test: PairedSet | None
    carved: tuple[str, ...] = ()


def load_splits(
    train: str | Path = "builtin",
    val: str | Path | None = None,
    test: str | Path | None = None,
    *,
    qps: Sequence[int],
    spec: DegradeSpec | None = None,
    cache: LRCache | None = None,
    workers: int | None = None,
    min_hr_size: int = 64,
    load_test: bool = True,
    progress: bool = True,
) -> LoadedSplits:
    """Load train, val and test with disjoint images; a split not given is carved from the training folder.

    ``train`` is ``"builtin"``, ``"photos"`` or a folder; ``val``/``test`` are one of those (a folder is
    read from its ``val/``/``test/`` subfolder if it has one), or None: then the named dataset's split, the
    training folder's ``val/``/``test/`` subfolder, or else `carve`d from the training images. With
    ``load_test=False`` the test split is not read (a search does not need it), but it is still carved
    out of the training images, so the training set is the same either way.
    """
    qp_tuple = _check_qps(qps)
    _, cache = _check_load_args("val", min_hr_size, None, spec, cache)
    sources: dict[str, str | Path | None] = {"val": val, "test": test}
    train_folder: Path | None = None
    carved: list[str] = []
    if not _is_named_source(train):
        root = Path(train).expanduser()
        train_folder = resolve_split_folder(root, "train")
        for split in ("val", "test"):
            if sources[split] is None and train_folder == root / "train" and (root / split).is_dir():
                sources[split] = root / split
            elif sources[split] is None:
                carved.append(split)
    else:
        sources = {s: (train if v is None else v) for s, v in sources.items()}
    common = dict(qps=qp_tuple, cache=cache, workers=workers, min_hr_size=min_hr_size, progress=progress)
    out: dict[str, PairedSet | None] = dict.fromkeys(SPLITS)  # train first: clashes name the training image first
    if carved and train_folder is not None:  # carving implies a training folder
        names, images, skipped, described = _read_source(train_folder, "train", cache, workers=workers, progress=progress)
        by_name = dict(zip(names, images))
        eligible = {n for n, img in zip(names, images) if min(crop_to_multiple(img, EVAL_HR_MULTIPLE).shape[:2]) >= min_hr_size}
        parts = carve(names, carved, eligible=eligible, where=f"training folder {train_folder}")
        for split, part in parts.items():
            if split == "test" and not load_test:
                continue
            out[split] = _make_pairs(
                part, [by_name[n] for n in part], skipped=skipped if split == "train" else (), described=described, split=split,
                hr_multiple=HR_MULTIPLE if split == "train" else EVAL_HR_MULTIPLE, **common,
            )
    else:
        out["train"] = load_split(train, split="train", **common)
    for split in ("val", "test"):
        if split in carved or (split == "test" and not load_test):
            continue
        out[split] = load_split(sources[split], split=split, **common)  # type: ignore[arg-type]
    check_disjoint(out)
    return LoadedSplits(train=out["train"], val=out["val"], test=out["test"], carved=tuple(carved))  # type: ignore[arg-type]


def data_identity(splits: Mapping[str, PairedSet | None], *, cache_dir: str | Path | None = None) -> dict[str, dict[str, Any] | None]:
    """What each split's images are, for run records (``run.json``): source, image count, and a hash of
    every HR image's pixels (as used), plus the pinned manifest of a ``photos`` split (``cache_dir``:
    the cache root the photos were loaded from, default `trainers.cache.default_cache_root`).

    Why pixels: a source name or a folder path says where images came from, not what they were; two
    runs' numbers are comparable only where these hashes are equal."""
    out: dict[str, dict[str, Any] | None] = {}
    for split, pairs in splits.items():
        if pairs is None:
            out[split] = None
            continue
        keys = image_keys(pairs)
        record: dict[str, Any] = {
            "source": pairs.source,
            "images": len(pairs),
            "pixels_sha256": hashlib.sha256("".join(f"{n}:{k}\n" for n, k in zip(pairs.names, keys)).encode()).hexdigest(),
        }
        if pairs.linear_baseline is not None:  # what gain_linear_y is measured against (QP-blind since format 2)
            from trainers.linear_filter import FORMAT_VERSION

            record["linear_baseline"] = {"format": FORMAT_VERSION, "qp_blind_filter": pairs.linear_baseline.filter_key}
        if pairs.source == "photos":
            from trainers.photos import photos_identity

            record["photos"] = photos_identity(cache_dir=cache_dir)
        elif pairs.source == "builtin":
            from trainers.builtin import GENERATOR_VERSION

            record["builtin_generator_version"] = GENERATOR_VERSION
        out[split] = record
    return out
