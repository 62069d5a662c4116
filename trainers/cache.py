"""On-disk cache of the degraded LR images (.avif files), so each (image, degradation, QP) is encoded once.

Encoding is the slow part of making training data (tens of ms per LR image and QP with SVT-AV1, 5
QPs per image), and it is deterministic, so the encoded files are kept and reused across trials,
studies and runs. A file is keyed by what decides its bytes:

    <root>/lr-avif/<spec hash>/<content hash[:2]>/<content hash>-qp<QP>.avif
    <root>/lr-avif/<spec hash>/spec.json          (the DegradeSpec, for people; never read back)

* content hash: sha256 of the HR pixels (shape + bytes), so renaming or moving a file keeps its entry
  and editing it does not;
* spec hash: `DegradeSpec.hash`, which includes the encoder version, so a new encoder or any
  changed setting gets fresh entries instead of silently mixing old and new LR images.

The root is ``root`` if given, else ``$RTSR_CACHE_DIR``, else ``~/.cache/rtsr-nas``. Files are
written atomically (a temporary file in the same folder, then ``os.replace``), so a killed run never
leaves a half-written entry under a final name; an entry that is damaged anyway (e.g. truncated by a
full disk) fails to decode, is reported in a `CacheWarning`, and is encoded again.

Encoding runs on a thread pool: Pillow/libavif (and ffmpeg subprocesses, and numpy's BLAS in the
Lanczos step) release the GIL, so threads scale like processes without copying HR images between
processes (measured on 2 cores: 2 threads and 2 processes both ~2.3x one serial encoder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_space.errors import UserError
from search_space.configio import atomic_write
from trainers.degrade import DegradeSpec, check_hr, decode_lr, downscale, encode_hr, lr_size

__all__ = ["CacheStats", "CacheWarning", "LRCache", "content_hash", "default_cache_root", "pixel_hash", "publish_folder"]


class CacheWarning(UserWarning):
    """A cache entry was damaged and has been re-created."""


@dataclass
class CacheStats:
    """What `LRCache.lr_images` did so far: LR files ``encoded``, read back (``hits``), found damaged (``repaired``)."""

    encoded: int = 0
    hits: int = 0
    repaired: int = 0


def default_cache_root() -> Path:
    """``$RTSR_CACHE_DIR`` or ``~/.cache/rtsr-nas``."""
    env = os.environ.get("RTSR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rtsr-nas"


def content_hash(img: np.ndarray) -> str:
    """First 24 hex digits of sha256 over an image's shape, dtype and pixels."""
    arr = np.ascontiguousarray(img)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:24]


def pixel_hash(img: np.ndarray) -> str:
    """Full sha256 of an image's shape and pixels: what a prepared dataset's manifest records per image."""
    h = hashlib.sha256(f"{img.shape}".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def publish_folder(tmp: Path, final: Path) -> None:
    """Move a finished temp folder into place atomically (the prepared builtin and photos datasets).

    `tmp` (made by `tempfile.mkdtemp` beside `final`, so private) is made readable like any cache
    folder first. If another process published `final` meanwhile, its complete copy (it has its
    `manifest.json`, written last) is kept; a partial one is replaced."""
    os.chmod(tmp, 0o755)
    try:
        os.replace(tmp, final)  # atomic; fails when another process finished first
    except OSError:
        if not (final / "manifest.json").is_file():
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit numpy's BLAS to one thread while our own pool runs (a no-op without threadpoolctl).

    The Lanczos step is a few BLAS products per image. With BLAS threads *and* encoder threads on
    the same cores, OpenBLAS's spinning threads made the Lanczos step 2.5-3x slower in wall time (and
    ~3.7x in CPU time) on the busy 2-core development VM; the pool already uses every core.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, data)


class LRCache:
    """Decoded LR images for HR images and QPs, encoded on first use and read from disk after.

    ``LRCache(root=None, spec=None)``: ``root`` as in the module docstring; ``spec`` the degradation
    (default `DegradeSpec()`). ``cache.stats`` counts encodes and hits (tests and progress use it).
    """

    def __init__(self, root: Path | str | None = None, spec: DegradeSpec | None = None) -> None:
        if spec is not None and not isinstance(spec, DegradeSpec):
            raise UserError(f"LRCache: spec must be a DegradeSpec, got {type(spec).__name__}")
        self.spec = spec if spec is not None else DegradeSpec()
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.folder = self.root / "lr-avif" / self.spec.hash
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LRCache(folder={str(self.folder)!r}, stats={self.stats})"

    def path(self, key: str, qp: int) -> Path:
        """The file of content hash ``key`` at ``qp``."""
        return self.folder / key[:2] / f"{key}-qp{int(qp)}.avif"

    # -- one image -----------------------------------------------------------------------------

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def _read(self, path: Path, size: tuple[int, int]) -> np.ndarray | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(
                f"LR cache entry {path} cannot be read ({exc}); encoding it again", CacheWarning, stacklevel=2
            )
            self._count("repaired")
            return None
        try:
            return decode_lr(data, size)
        except UserError as exc:
            warnings.warn(f"LR cache entry {path} is damaged ({exc}); encoding it again", CacheWarning, stacklevel=2)
            self._count("repaired")
            return None

    def _one(self, hr: np.ndarray, qps: tuple[int, ...]) -> dict[int, np.ndarray]:
        key = content_hash(hr)
        size = lr_size(hr.shape[:2], self.spec)
        clean = None
        out: dict[int, np.ndarray] = {}
        for qp in qps:
            path = self.path(key, qp)
            lr = self._read(path, size)
            if lr is not None:
                self._count("hits")
            else:
                if clean is None and self.spec.backend == "pillow":
                    clean = downscale(hr, self.spec)  # once per image, shared by its QPs
                data = encode_hr(hr, qp, self.spec, lr=clean)
                _write_atomic(path, data)
                lr = decode_lr(data, size)
                self._count("encoded")
            out[qp] = lr
        return out

    def _write_spec(self) -> None:
        path = self.folder / "spec.json"
        if not path.exists():
            _write_atomic(path, (json.dumps(self.spec.to_dict(), indent=2, sort_keys=True) + "\n").encode())

    # -- public --------------------------------------------------------------------------------

    def lr_images(
        self,
        hrs: Sequence[np.ndarray],
        qps: Sequence[int],
        *,
        workers: int | None = None,
        progress: bool = True,
    ) -> dict[int, list[np.ndarray]]:
        """``{qp: [decoded LR uint8 HxWx3 for each HR, in order]}``; encodes only what is not cached.

        ``workers``: encoder threads (default: the CPU count; 1 runs in this thread). ``progress``
        shows a tqdm bar on stderr. All inputs are checked before anything is encoded.
        """
        hrs = list(hrs)
        qp_list: list[int] = []
        for qp in qps:
            self.spec.target_qindex(qp)  # UserError naming the available QPs
            if int(qp) not in qp_list:
                qp_list.append(int(qp))
        if not qp_list:
            raise UserError(f"LRCache.lr_images: no QPs requested; pass some of {list(self.spec.qps)}")
        for i, hr in enumerate(hrs):
            try:
                check_hr(hr, self.spec)
            except UserError as exc:
                raise UserError(f"LR cache: HR image {i}: {exc}") from None
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UserError(f"LRCache.lr_images: workers must be a positive integer, got {workers!r}")
        qps_t = tuple(qp_list)
        out: dict[int, list[np.ndarray]] = {qp: [None] * len(hrs) for qp in qps_t}  # type: ignore[list-item]
        if not hrs:
            return out
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_spec()

        from tqdm.auto import tqdm

        def store(i: int, lrs: dict[int, np.ndarray]) -> None:
            for qp, lr in lrs.items():
                out[qp][i] = lr

        with _single_threaded_blas(), tqdm(
            total=len(hrs), desc=f"LR images (degradation {self.spec.hash})", unit="img", file=sys.stderr,
            disable=not progress, dynamic_ncols=True,
        ) as bar:
            if workers == 1 or len(hrs) == 1:
                for i, hr in enumerate(hrs):
                    store(i, self._one(hr, qps_t))
                    bar.update(1)
                    bar.set_postfix(encoded=self.stats.encoded, cached=self.stats.hits, refresh=False)
            else:
                with ThreadPoolExecutor(max_workers=min(workers, len(hrs)), thread_name_prefix="lr-encode") as pool:
                    pending = {pool.submit(self._one, hr, qps_t): i for i, hr in enumerate(hrs)}
                    try:
                        while pending:
                            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                            for fut in done:
                                i = pending.pop(fut)
                                if fut.exception() is not None:
                                    raise fut.exception()  # type: ignore[misc]
                                store(i, fut.result())
                                bar.update(1)
                            bar.set_postfix(encoded=self.stats.encoded, cached=self.stats.hits, refresh=False)
                    except BaseException:
                        # A failure, or Ctrl-C: stop after the images being encoded now instead of encoding
                        # every queued one first (leaving the pool waits for them). Each file written so
                        # far is whole (atomic writes), so a rerun reuses it.
                        for other in pending:
                            other.cancel()
                        raise
        return out
