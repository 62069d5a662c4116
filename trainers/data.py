"""Paired HR / AVIF-LR training data held in memory, and the reproducible patch sampler.

`load_split` turns one source (``"builtin"``, ``"photos"`` or a folder of HR images) into a `PairedSet`: HR uint8
images plus, for every QP, the decoded AVIF LR images (made once by `trainers.cache.LRCache`, so a
training step never encodes or decodes anything). `load_splits` loads train, val and test together.

Splits are honest: no image is in two of them (`check_disjoint` compares pixels). The named sources
(`NAMED_SOURCES`: the embedded ``builtin`` images, the pinned ``photos`` of `trainers.photos`) have
their own train, val and test images. A folder with ``train/`` (+ ``val/``, ``test/``)
subfolders is read from them (DIV2K style); any other folder is one set of images. A split the user
does not give (``--val-data``/``--test-data``, or a subfolder) is *carved* from the training images
by `carve`: about 10 % each, at least one image, chosen by a stable hash of each file name, so the
same folder always splits the same way whatever the file order. `load_split` on a plain folder reads
all of it: that is how a separately passed validation or test folder is read.

HR sizes. Each HR image is cropped, top-left anchored (rows/columns dropped at the bottom and right
only), to a multiple of ``hr_multiple``: 8 = 4 (scale) x 2 for ``train``, so the LR is exactly HR/4 and
has even sides; 48 = 4 x 12 for every other split, because validation runs *whole* images through the
network and a network that pixel-unshuffles its input by u in {1, 2, 3, 4} needs LR sides divisible
by lcm(1, 2, 3, 4) = 12 (4K, 3840x2160, is such a size). Images whose shorter side is then below
``min_hr_size`` are skipped with a `DataWarning` naming them; if every image is skipped that is a
`UserError`.

`PatchSampler.batch(step, total_steps)` draws everything it needs from a generator seeded by
``(seed, step)`` only, so batch ``k`` is identical whether a run got there directly or resumed from a
checkpoint. Crops are aligned (the HR crop is the 4x LR crop at 4x the offset), and the same random
dihedral transform (flips and 90-degree rotations, 8 in all) is applied to both.

QP sampling (`QPSampling`): ``uniform`` (each sample's QP uniform over the set's QPs), ``fixed:Q``
(always QP Q; ``fixed:31,39`` uniform over the listed QPs), or ``curriculum`` (easy to hard). Curriculum, precisely: QPs are ordered by difficulty,
i.e. ascending QP (QP 31 is the mildest compression); at 0-based ``step`` of ``total_steps`` the
allowed QPs are the first ``k = ceil((step + 1) * n / total_steps)`` of the ``n`` QPs (at least 1,
at most n), and a sample's QP is uniform over those. With 5 QPs each fifth of the run adds the next
harder QP, and the last fifth samples all five.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_space.configio import content_hash
from search_space.errors import UserError
from trainers.imageio import DataWarning, load_folder

if TYPE_CHECKING:  # imported lazily at run time: the sampler does not need the codec stack
    import torch

    from trainers.cache import LRCache
    from trainers.degrade import DegradeSpec
    from trainers.linear_filter import LinearBaselineScores, LinearFilter

__all__ = [
    "SCALE",
    "HR_MULTIPLE",
    "EVAL_HR_MULTIPLE",
    "SPLITS",
    "NAMED_SOURCES",
    "QPSampling",
    "PairedSet",
    "PatchSampler",
    "load_split",
    "resolve_split_folder",
    "crop_to_multiple",
]

SCALE = 4
HR_MULTIPLE = 2 * SCALE
"""Training HR sides are cropped to a multiple of this, so LR = HR / 4 is integral and even."""
EVAL_HR_MULTIPLE = 12 * SCALE
"""Evaluation HR sides are cropped to a multiple of this, so LR sides divide by every unshuffle factor 1-4."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
NAMED_SOURCES: tuple[str, ...] = ("builtin", "photos")
"""Source names that are datasets of this project, not folders (a folder of that name is passed as ``./builtin``)."""

_QP_KINDS = ("uniform", "fixed", "curriculum")


@dataclass(frozen=True)
class QPSampling:
    """How each training sample picks its QP: ``uniform``, ``fixed:Q[,Q...]`` or ``curriculum``.

    ``qps`` holds the fixed QPs (ascending, distinct) for ``fixed`` and is empty otherwise. With
    several fixed QPs a sample's QP is uniform over them (``fixed:31,39``).
    """

    kind: str = "uniform"
    qps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _QP_KINDS:
            raise UserError(f"unknown QP sampling {self.kind!r}; use 'uniform', 'fixed:<qp>[,<qp>...]' (e.g. 'fixed:31') or 'curriculum'")
        if not isinstance(self.qps, tuple):
            raise UserError(f"QPSampling.qps must be a tuple of QPs, got {self.qps!r}")
        if self.kind == "fixed":
            if not self.qps:
                raise UserError("QP sampling 'fixed' needs at least one QP, e.g. 'fixed:31' or 'fixed:31,39'")
            for q in self.qps:
                if not isinstance(q, int) or isinstance(q, bool) or not 0 <= q <= 63:
                    raise UserError(f"QP sampling 'fixed' takes AV1 QPs between 0 and 63, e.g. 'fixed:31' (got {q!r})")
            if len(set(self.qps)) != len(self.qps):
                raise UserError(f"QP sampling 'fixed:{','.join(map(str, self.qps))}' lists a QP twice")
            object.__setattr__(self, "qps", tuple(sorted(self.qps)))  # one spelling per set, one hash
        elif self.qps:
            raise UserError(f"QP sampling {self.kind!r} takes no QPs (got {list(self.qps)}); use 'fixed:...' to pin them")

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | QPSampling) -> QPSampling:
        """From ``"uniform"``, ``"fixed:31"``, ``"fixed:31,39"``, ``"curriculum"``, a `to_dict` dict, or an instance."""
        if isinstance(value, QPSampling):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if not isinstance(value, str):
            raise UserError(f"QP sampling must be a string like 'uniform', 'fixed:31' or 'curriculum', got {value!r}")
        text = value.strip().lower()
        m = re.fullmatch(r"fixed\s*:\s*(\d+(?:\s*,\s*\d+)*)", text)
        if m:
            return cls(kind="fixed", qps=tuple(int(q) for q in m.group(1).split(",")))
        if text.startswith("fixed"):
            raise UserError(f"QP sampling {value!r}: write 'fixed:' and QPs separated by commas, e.g. 'fixed:31' or 'fixed:31,39'")
        return cls(kind=text)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "qps": list(self.qps)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QPSampling:
        unknown = set(d) - {"kind", "qps"}
        if unknown:
            raise UserError(f"unknown QP sampling keys {sorted(unknown)}; allowed: kind, qps")
        qps = d.get("qps", ())
        if not isinstance(qps, (list, tuple)):
            raise UserError(f"QP sampling 'qps' must be a list of QPs, got {qps!r}")
        return cls(kind=d.get("kind", "uniform"), qps=tuple(qps))

    def __str__(self) -> str:
        return f"fixed:{','.join(map(str, self.qps))}" if self.kind == "fixed" else self.kind

    @property
    def hash(self) -> str:
        return content_hash(self.to_dict())

    def check(self, qps: Sequence[int]) -> None:
        """Raise `UserError` if this sampling cannot work with the data's QPs."""
        missing = [q for q in self.qps if q not in qps]
        if missing:
            raise UserError(f"QP sampling '{self}' needs QP {missing} in the data, which has QPs {sorted(qps)}; add them to the study's qps")

    def allowed(self, qps: Sequence[int], *, step: int, total_steps: int) -> tuple[int, ...]:
        """The QPs a sample may use at ``step`` (0-based) of ``total_steps``, easiest (lowest) first."""
        order = tuple(sorted(qps))
        if not order:
            raise ValueError("no QPs to sample from")
        if self.kind == "fixed":
            self.check(order)
            return self.qps
        if self.kind == "uniform":
            return order
        if total_steps < 1 or step < 0:
            raise ValueError(f"curriculum needs 0 <= step and total_steps >= 1, got step={step}, total_steps={total_steps}")
        n = len(order)
        k = -(-(step + 1) * n // total_steps)  # ceil((step + 1) * n / total_steps) in exact integers
        return order[: max(1, min(n, k))]


def crop_to_multiple(img: np.ndarray, multiple: int = HR_MULTIPLE) -> np.ndarray:
    """Top-left anchored crop of ``img`` to sides that are multiples of ``multiple``."""
    h, w = img.shape[:2]
    return img[: h - h % multiple, : w - w % multiple]


@dataclass(frozen=True, eq=False)
class PairedSet:
    """HR images and their decoded LR per QP, plus where they came from (for logs and run records)."""

    names: tuple[str, ...]
    hr: tuple[np.ndarray, ...]
    lr: Mapping[int, tuple[np.ndarray, ...]]
    spec: DegradeSpec
    source: str
    split: str
    skipped: tuple[str, ...] = field(default=())
    linear_baseline: LinearBaselineScores | None = field(default=None, repr=False)
    """Per-image PSNR-Y of the least-squares linear filter fitted on the *training* split, per QP
    (`trainers.linear_baseline.attach_linear_baseline`); None on a training split or when not fitted."""
    anchors: Mapping[int, LinearFilter] | None = field(default=None, repr=False)
    """On a training split: the QP-blind least-squares filter of this split per kernel side, which the
    `fitted` anchors of every network trained on it hold (`trainers.linear_baseline.anchor_filters`,
    set by `ProxyData.load`); None elsewhere, and then a trainer fits (or reads from the cache) on use."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("PairedSet needs at least one image")
        if len(self.hr) != n or any(len(v) != n for v in self.lr.values()):
            raise ValueError("PairedSet: names, HR and every QP's LR list must have the same length")
        if not self.lr:
            raise ValueError("PairedSet needs at least one QP")
        for qp, lrs in self.lr.items():
            for name, hr, lr in zip(self.names, self.hr, lrs):
                if lr.shape != (hr.shape[0] // SCALE, hr.shape[1] // SCALE, 3) or hr.shape[0] % SCALE or hr.shape[1] % SCALE:
                    raise ValueError(f"PairedSet: {name} QP {qp}: LR {lr.shape} is not HR {hr.shape} / {SCALE}")
        if self.linear_baseline is not None:
            scores = self.linear_baseline.psnr_y
            if any(qp not in scores or len(scores[qp]) != n for qp in self.lr):
                raise ValueError("PairedSet: the linear baseline must hold one PSNR per image for every QP")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def qps(self) -> tuple[int, ...]:
        return tuple(sorted(self.lr))

    def summary(self) -> str:
        """One line: source, split, image count and sizes, QPs, degradation hash, skipped files."""
        areas = [h.shape[0] * h.shape[1] for h in self.hr]
        smallest = min(self.hr, key=lambda a: a.shape[0] * a.shape[1]).shape
        largest = max(self.hr, key=lambda a: a.shape[0] * a.shape[1]).shape
        line = (
            f"{self.source} [{self.split}]: {len(self)} HR images ({smallest[1]}x{smallest[0]} to "
            f"{largest[1]}x{largest[0]}, {sum(areas) / 1e6:.1f} Mpx), QPs {list(self.qps)}, degradation {self.spec.hash}"
        )
        if self.skipped:
            line += f"; skipped {len(self.skipped)}: {', '.join(self.skipped)}"
        return line


def resolve_split_folder(source: str | Path, split: str) -> Path:
    """The folder holding ``split``'s HR images: ``source/split`` if present, else ``source`` itself.

    A folder with some of the ``train/``, ``val/``, ``test/`` subfolders but not ``split``'s is an
    error: reading the whole folder would put training images into an evaluation split.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise UserError(
            f"data folder {folder} {what}; pass a folder of HR images (e.g. DIV2K_train_HR, or one with "
            "train/ and val/ subfolders), 'builtin' or 'photos'"
        )
    sub = folder / split
    if sub.is_dir():
        return sub
    present = [s for s in SPLITS if (folder / s).is_dir()]
    if present:
        flag = "--data" if split == "train" else f"--{split}-data"
        raise UserError(
            f"data folder {folder} has {'/ and '.join(present)}/ but no {split}/ subfolder; add {sub} or pass a "
            f"separate folder for the {split} images (e.g. {flag} DIR, 'builtin' or 'photos')"
        )
    return folder


def _check_qps(qps: Sequence[int]) -> tuple[int, ...]:
    if isinstance(qps, (str, bytes)) or not isinstance(qps, Sequence) or not qps:
        raise UserError(f"qps must be a non-empty list of AV1 QPs (e.g. [31, 39, 47, 55, 63]), got {qps!r}")
    out = []
    for q in qps:
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= int(q) <= 63:
            raise UserError(f"QP {q!r} is not an AV1 quantizer between 0 and 63; use e.g. [31, 39, 47, 55, 63]")
        out.append(int(q))
    if len(set(out)) != len(out):
        raise UserError(f"qps {list(qps)} lists a QP twice")
    return tuple(sorted(out))


def _is_builtin(source: str | Path) -> bool:
    return isinstance(source, str) and source == "builtin"


def _is_named_source(source: str | Path) -> bool:
    """``"builtin"`` or ``"photos"`` (a str, never a Path): a dataset with its own splits, not a folder."""
    return isinstance(source, str) and source in NAMED_SOURCES


def _check_load_args(split: str, min_hr_size: int, hr_multiple: int | None, spec: DegradeSpec | None, cache: LRCache | None) -> tuple[int, LRCache]:
    """Validate the size rules and the cache/spec pair; returns ``(hr_multiple, cache)``."""
    if hr_multiple is None:
        hr_multiple = HR_MULTIPLE if split == "train" else EVAL_HR_MULTIPLE
    if not isinstance(hr_multiple, int) or hr_multiple < HR_MULTIPLE or hr_multiple % HR_MULTIPLE:
        raise UserError(f"hr_multiple must be a positive multiple of {HR_MULTIPLE}, got {hr_multiple!r}")
    if not isinstance(min_hr_size, int) or min_hr_size < hr_multiple:
        raise UserError(f"min_hr_size must be an integer >= {hr_multiple} (the crop multiple), got {min_hr_size!r}")
    if cache is not None and spec is not None and cache.spec != spec:
        raise UserError(f"the LR cache was built for degradation {cache.spec.hash}, not the requested {spec.hash}; pass one of them")
    if cache is None:
        from trainers.cache import LRCache

        cache = LRCache(spec=spec)
    return hr_multiple, cache


def _read_source(source: str | Path, split: str, cache: LRCache, *, workers: int | None, progress: bool) -> tuple[list[str], list[np.ndarray], list[str], str]:
    """``(names, images, unreadable names, description)`` of one split's source, uncropped."""
    if _is_builtin(source):
        from trainers.builtin import builtin_images

        pairs = builtin_images(split, cache_dir=getattr(cache, "root", None), progress=progress)
        return [n for n, _ in pairs], [img for _, img in pairs], [], "builtin"
    if isinstance(source, str) and source == "photos":
        from trainers.photos import photos_images

        pairs = photos_images(split, cache_dir=getattr(cache, "root", None), progress=progress)
        return [n for n, _ in pairs], [img for _, img in pairs], [], "photos"
    folder = resolve_split_folder(source, split)
    loaded = load_folder(folder, progress=progress, workers=workers)
    return [p.name for p in loaded.paths], list(loaded.images), [p.name for p, _ in loaded.skipped], str(folder)


def _make_pairs(
    names: Sequence[str],
    images: Sequence[np.ndarray],
    *,
    skipped: Sequence[str],
    described: str,
    split: str,
    qps: tuple[int, ...],
    cache: LRCache,
    workers: int | None,
    min_hr_size: int,
    hr_multiple: int,
    progress: bool,
) -> PairedSet:
    """Crop, drop the too-small (with a warning), and attach every QP's LR from the cache."""
    kept_names: list[str] = []
    kept: list[np.ndarray] = []
    too_small: list[str] = []
    for name, original in zip(names, images):
        img = crop_to_multiple(original, hr_multiple)
        if min(img.shape[0], img.shape[1]) < min_hr_size:
            too_small.append(name)
            warnings.warn(
                f"{described}: skipping {name} ({original.shape[1]}x{original.shape[0]}): smaller than "
                f"min_hr_size={min_hr_size} px after cropping to a multiple of {hr_multiple}",
                DataWarning,
                stacklevel=3,
            )
            continue
        img.setflags(write=False)  # a view: no second copy of a large dataset in memory
        kept_names.append(name)
        kept.append(img)
    if not kept:
        raise UserError(
            f"{described} [{split}]: all {len(names)} images are smaller than {min_hr_size} px on the shorter side "
            f"(after cropping to a multiple of {hr_multiple}); use larger HR images or a lower min_hr_size"
        )
    lr_lists = cache.lr_images(kept, list(qps), workers=workers, progress=progress)
    lr: dict[int, tuple[np.ndarray, ...]] = {}
    for qp in qps:
        arrays = []
        for a in lr_lists[qp]:
            a = np.ascontiguousarray(a, dtype=np.uint8)
            a.setflags(write=False)
            arrays.append(a)
        lr[qp] = tuple(arrays)
    return PairedSet(
        names=tuple(kept_names),
        hr=tuple(kept),
        lr=lr,
        spec=cache.spec,
        source=described,
        split=split,
        skipped=tuple(list(skipped) + too_small),
    )


def load_split(
    source: str | Path,
    *,
    split: str,
    qps: Sequence[int],
    spec: DegradeSpec | None = None,
    cache: LRCache | None = None,
    workers: int | None = None,
    min_hr_size: int = 64,
    hr_multiple: int | None = None,
    progress: bool = True,
) -> PairedSet:
    """Load one split of ``source`` (``"builtin"``, ``"photos"`` or a folder) with its LR images for every QP in ``qps``.

    The string ``"builtin"`` names the embedded dataset (`trainers.builtin`), ``"photos"`` the pinned
    photographs (`trainers.photos`), both kept under the LR cache's root; a folder that happens to
    be called so is passed as a path (``"./builtin"``). A
    folder is read from its ``split`` subfolder if it has one, else whole (see `resolve_split_folder`):
    carving a split out of a training folder is `load_splits`' job.

    ``spec`` is the degradation (default: `DegradeSpec()`); ``cache`` the LR cache to use (default: a
    `LRCache` for ``spec`` under the default cache root). If both are given they must agree.
    ``workers`` is passed to the image reader and to the LR cache (threads for decoding/encoding).
    ``hr_multiple`` overrides the crop multiple (default `HR_MULTIPLE` for ``train``, else
    `EVAL_HR_MULTIPLE`); it must be a multiple of 8.
    """
    qp_tuple = _check_qps(qps)
    hr_multiple, cache = _check_load_args(split, min_hr_size, hr_multiple, spec, cache)
    names, images, skipped, described = _read_source(source, split, cache, workers=workers, progress=progress)
    return _make_pairs(
        names, images, skipped=skipped, described=described, split=split, qps=qp_tuple, cache=cache,
        workers=workers, min_hr_size=min_hr_size, hr_multiple=hr_multiple, progress=progress,
    )


class PatchSampler:
    """Aligned, augmented LR/HR patch batches from a `PairedSet`, reproducible from (seed, step).

    ``patch`` is the LR patch side; the HR patch is ``4 * patch``. Each sample picks an image uniformly
    (every image equally often on average, whatever its size), a QP by ``qp_sampling``, a uniformly
    random LR offset, and with ``augment`` one of the 8 flips/rotations.
    """

    def __init__(self, pairs: PairedSet, *, patch: int, batch: int, qp_sampling: QPSampling | str, seed: int, augment: bool = True) -> None:
        if not isinstance(patch, int) or patch < 1:
            raise UserError(f"patch size must be a positive integer (LR pixels), got {patch!r}")
        if not isinstance(batch, int) or batch < 1:
            raise UserError(f"batch size must be a positive integer, got {batch!r}")
        if not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        self.qp_sampling = QPSampling.parse(qp_sampling)
        self.qp_sampling.check(pairs.qps)
        lr_shapes = [lr.shape for lr in pairs.lr[pairs.qps[0]]]
        fits = [i for i, shape in enumerate(lr_shapes) if min(shape[:2]) >= patch]
        if not fits:
            largest = max(min(shape[:2]) for shape in lr_shapes)
            raise UserError(
                f"LR patch size {patch} (HR {SCALE * patch}) fits none of the {len(lr_shapes)} image(s) of "
                f"{pairs.source} (the largest has a shorter LR side of {largest}); use a patch of at most {largest} "
                "or larger images"
            )
        if len(fits) < len(lr_shapes):
            skipped = [f"{pairs.names[i]} (LR {lr_shapes[i][1]}x{lr_shapes[i][0]})" for i in range(len(lr_shapes)) if i not in fits]
            warnings.warn(
                f"LR patch size {patch} (HR {SCALE * patch}) does not fit {len(skipped)} of {len(lr_shapes)} image(s) of "
                f"{pairs.source}; they are not sampled: {', '.join(skipped)}",
                DataWarning,
                stacklevel=2,
            )
        self.eligible = np.array(fits, dtype=np.int64)
        self.pairs = pairs
        self.patch = patch
        self.batch_size = batch
        self.seed = seed
        self.augment = augment
        self._lr_sizes = np.array([lr.shape[:2] for lr in pairs.lr[pairs.qps[0]]], dtype=np.int64)

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step])))

    def indices(self, step: int, total_steps: int) -> dict[str, np.ndarray]:
        """The random choices of batch ``step``: image, qp, LR offsets (y, x) and dihedral op (0-7)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = self._rng(step)
        b = self.batch_size
        allowed = np.array(self.qp_sampling.allowed(self.pairs.qps, step=step, total_steps=total_steps), dtype=np.int64)
        image = self.eligible[rng.integers(0, len(self.eligible), size=b)]  # == the plain draw when all fit
        qp = allowed[rng.integers(0, len(allowed), size=b)]
        sizes = self._lr_sizes[image]
        y = rng.integers(0, sizes[:, 0] - self.patch + 1)
        x = rng.integers(0, sizes[:, 1] - self.patch + 1)
        op = rng.integers(0, 8, size=b)  # always drawn, so augment=False sees the same crops
        if not self.augment:
            op = np.zeros_like(op)
        return {"image": image, "qp": qp, "y": y, "x": x, "op": op}

    @staticmethod
    def dihedral(img: np.ndarray, op: int) -> np.ndarray:
        """One of the 8 symmetries of the square on an HxWxC array: op % 4 quarter turns, mirrored if op >= 4."""
        out = img[:, ::-1] if op >= 4 else img
        return np.rot90(out, op % 4, axes=(0, 1))

    def batch(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lr, hr, qps)``: float32 Bx3xPxP and Bx3x4Px4P in [0, 1], and int64 B; depends on (seed, step)."""
        import torch

        ch = self.indices(step, total_steps)
        p, s = self.patch, SCALE
        lr_out = np.empty((self.batch_size, p, p, 3), dtype=np.uint8)
        hr_out = np.empty((self.batch_size, s * p, s * p, 3), dtype=np.uint8)
        for i in range(self.batch_size):
            k, qp, y, x, op = (int(ch[key][i]) for key in ("image", "qp", "y", "x", "op"))
            lr = self.pairs.lr[qp][k][y : y + p, x : x + p]
            hr = self.pairs.hr[k][s * y : s * (y + p), s * x : s * (x + p)]
            lr_out[i] = self.dihedral(lr, op)
            hr_out[i] = self.dihedral(hr, op)
        lr_t = torch.from_numpy(lr_out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        hr_t = torch.from_numpy(hr_out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return lr_t, hr_t, torch.from_numpy(ch["qp"].astype(np.int64))
