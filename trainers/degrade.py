"""The challenge's degradation: HR -> Lanczos-5 4x downscale -> AVIF (SVT-AV1, fixed QP) -> decoded LR.

The AIS 2024 LR images were made with (survey, "Compression and Downsampling")::

    ffmpeg -i HR.png -vf 'scale=ceil(iw/4):ceil(ih/4):flags=lanczos+accurate_rnd+full_chroma_int:
           sws_dither=none:param0=5' -c:v libsvtav1 -qp Q -preset 5 LR.avif      Q in 31, 39, 47, 55, 63

Two backends reproduce it (`DegradeSpec.backend`):

``"pillow"`` (default; needs only the pip packages): our `trainers.lanczos` Lanczos-5 in RGB, rounded
to uint8, then pillow-avif-plugin's SVT-AV1 encoder. ffmpeg's ``-qp Q`` is *not* libavif's quality or
quantizer Q: SVT 1.4.1 gives the single key frame a large qindex offset, so ``-qp 31`` codes the frame
at base_q_idx 33, not 4*31 = 124 (the naive mapping is 5-7 dB worse and is never used here). We
therefore pin the frame's base_q_idx directly: SVT's ``qp`` option picks the quantizer ``qn`` (0..63)
whose qindex (the AV1 quantizer-to-qindex table below, as in libaom and SVT-AV1) is nearest to the
target, and ``use-fixed-qindex-offsets=1`` with ``key-frame-qindex-offset = target - qindex(qn)``
moves the key frame onto the target exactly (tests parse the bitstream and check it). ``aq-mode=0``
matches ffmpeg's ``-qp`` (pure CQP; SVT's all-intra mode ignores AQ anyway). The targets default to
the measured ffmpeg 5.1.9 / SVT-AV1 1.4.1 table {31: 33, 39: 62, 47: 106, 55: 143, 63: 181}; they do
not depend on content or preset. At matched qindex the result is statistically close to ffmpeg's
(a few tenths of a dB) but not bit-exact: libavif codes a still picture (no filter-intra /
intra-edge tools, different loop-filter choices) and converts RGB -> YUV itself.

``"ffmpeg"``: runs the survey's command itself, when an ``ffmpeg`` with ``libsvtav1`` is on PATH
(Debian 12's is ffmpeg 5.1 with SVT-AV1 1.4.1). SVT 1.4.1 rejects odd frame sizes in 4:2:0 and
frames under 64x64. We run the survey's scaler (RGB -> 4:2:0 in one swscale pass) to raw yuv420p,
pad such frames on the right/bottom by repeating the last row/column (chroma likewise) to the next
even size (at least 64), encode, and crop back after decoding (`decode_lr`). The padding only
changes the coding of the blocks along those two edges; frames SVT accepts as they are come out
byte-identical to the survey's one-command output.

Sizes not divisible by 4: like the survey, the LR is ``ceil(h/4) x ceil(w/4)`` and the resampling
ratio is exactly in/out (nothing is cropped or padded before scaling). The LR must be at least 4x4
(SVT-AV1's minimum), i.e. the HR at least 13x13.

Decoding (`decode_avif`) is libavif + dav1d through Pillow for both backends, so the backends differ
only in how they encode. Which encoder produced an LR is part of the spec: `DegradeSpec.encoder_version`
is filled in from the installed encoder, so its hash (which keys the LR cache and is recorded with
every result) changes when the encoder does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import re
import shutil
import subprocess
import tempfile
import types
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_space.configio import content_hash, reject_unknown_keys
from search_space.errors import UserError
from trainers.lanczos import lanczos_downscale

# SVT-AV1 prints a banner and its configuration for every encode unless told otherwise, and it reads
# this variable once per process, at its first encode: set it before anything can encode.
os.environ.setdefault("SVT_LOG", "1")

__all__ = [
    "QPS",
    "AV1_QUANTIZER_TO_QINDEX",
    "FFMPEG_SVT141_QINDEX",
    "BACKENDS",
    "DegradeSpec",
    "EncoderVersionWarning",
    "installed_encoder_version",
    "svt_quantizer_options",
    "check_hr",
    "lr_size",
    "downscale",
    "encode_lr",
    "encode_hr",
    "decode_avif",
    "decode_lr",
    "degrade",
]

QPS: tuple[int, ...] = (31, 39, 47, 55, 63)
"""The challenge's QP values (ffmpeg ``libsvtav1 -qp``)."""

AV1_QUANTIZER_TO_QINDEX: tuple[int, ...] = tuple(4 * q for q in range(62)) + (249, 255)
"""The 0..63 "quantizer" scale -> AV1 qindex (0..255) table of libaom and SVT-AV1 (4*q, then 249, 255)."""

FFMPEG_SVT141_QINDEX: Mapping[int, int] = types.MappingProxyType({31: 33, 39: 62, 47: 106, 55: 143, 63: 181})
"""Frame base_q_idx that ffmpeg 5.1.9 + SVT-AV1 1.4.1 ``-qp Q`` produces (measured; content/preset independent)."""

BACKENDS = ("pillow", "ffmpeg")
_RANGES = ("limited", "full")
_SUBSAMPLINGS = ("4:2:0", "4:2:2", "4:4:4")
_SVT_MIN_SIDE = 4  # libavif/SVT-AV1 v4
_FFMPEG_SVT_MIN_SIDE = 64  # SVT-AV1 1.4.1 through ffmpeg


class EncoderVersionWarning(UserWarning):
    """A spec recorded with one encoder version is being encoded with another (results will differ slightly)."""


# -- encoder versions -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _pillow_version() -> str:
    try:
        import pillow_avif
        from pillow_avif import _avif
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise UserError(
            "the 'pillow' degradation backend needs pillow-avif-plugin (it has the SVT-AV1 encoder): "
            "pip install pillow-avif-plugin"
        ) from exc
    codecs = _avif.codec_versions()
    svt = re.search(r"svt \[enc\]:\s*v?([^\s,]+)", codecs)
    if svt is None:
        raise UserError(
            f"this pillow-avif-plugin has no SVT-AV1 encoder (codecs: {codecs}); install a wheel that bundles it"
        )
    return f"pillow-avif-plugin {pillow_avif.__version__}; libavif {_avif.libavif_version}; svt-av1 {svt.group(1)}"


def _ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise UserError(
            "the 'ffmpeg' degradation backend needs an ffmpeg with libsvtav1 on PATH "
            "(Debian/Ubuntu: apt-get install ffmpeg); or use backend='pillow'"
        )
    return path


@functools.lru_cache(maxsize=None)
def _ffmpeg_version(path: str) -> str:
    env = dict(os.environ, SVT_LOG="3")  # SVT's banner carries its version
    probe = subprocess.run(
        [path, "-hide_banner", "-f", "lavfi", "-i", "color=c=gray:s=64x64", "-frames:v", "1",
         "-c:v", "libsvtav1", "-qp", "40", "-preset", "12", "-f", "null", "-"],
        capture_output=True, text=True, env=env, check=False,
    )
    svt = re.search(r"SVT-AV1 Encoder Lib v?([^\s]+)", probe.stderr)
    if probe.returncode != 0 or svt is None:
        tail = probe.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(
            f"{path} cannot encode with libsvtav1 ({tail[0]}); install an ffmpeg built with --enable-libsvtav1 "
            "or use backend='pillow'"
        )
    first = subprocess.run([path, "-version"], capture_output=True, text=True, check=False).stdout.splitlines()
    ffmpeg = first[0].split()[2] if first and len(first[0].split()) > 2 else "unknown"
    return f"ffmpeg {ffmpeg}; svt-av1 {svt.group(1)}"


def installed_encoder_version(backend: str) -> str:
    """The encoder stack a backend would use here, e.g. ``"pillow-avif-plugin 1.6.0; libavif 1.4.2; svt-av1 4.1.0"``."""
    if backend == "pillow":
        return _pillow_version()
    if backend == "ffmpeg":
        return _ffmpeg_version(_ffmpeg_path())
    raise UserError(f"unknown degradation backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# -- the spec -------------------------------------------------------------------------------------


def _int_field(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise UserError(f"DegradeSpec.{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _qindex_table(value: object) -> tuple[tuple[int, int], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(k, v) for k, v in items]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UserError(
            f"DegradeSpec.qindex must map QP -> AV1 qindex, e.g. {{31: 33, 63: 181}}, got {value!r}"
        ) from None
    table: dict[int, int] = {}
    for qp, qidx in pairs:
        if isinstance(qp, str) and qp.strip().isdigit():
            qp = int(qp)  # TOML/JSON table keys are strings
        qp_int = _int_field("qindex (a QP key)", qp, 1, 63)
        table[qp_int] = _int_field(f"qindex[{qp_int}]", qidx, 1, 255)
    if not table:
        raise UserError("DegradeSpec.qindex is empty; give at least one QP -> qindex pair")
    return tuple(sorted(table.items()))


@dataclass(frozen=True)
class DegradeSpec:
    """Everything that decides the LR pixels; hashable, recorded with every result, keys the LR cache.

    Fields: ``backend`` ("pillow" | "ffmpeg"); ``scale`` (downscale factor, 4); ``lanczos_a`` (lobes,
    5 = ffmpeg ``param0=5``); ``qindex`` (QP -> target frame base_q_idx, sorted pairs; also the set of
    QPs this spec can produce); ``speed`` (Pillow/SVT speed preset, 0 slowest .. 10); ``ffmpeg_preset``
    (the ffmpeg backend's ``-preset``, 5 in the survey); ``color_range`` and ``subsampling`` of the
    coded YUV (the survey's ffmpeg gives limited range 4:2:0); ``encoder_version`` (filled in from the
    installed encoder when left empty, so a different encoder is a different spec).
    """

    backend: str = "pillow"
    scale: int = 4
    lanczos_a: int = 5
    qindex: tuple[tuple[int, int], ...] = tuple(sorted(FFMPEG_SVT141_QINDEX.items()))
    speed: int = 6
    ffmpeg_preset: int = 5
    color_range: str = "limited"
    subsampling: str = "4:2:0"
    encoder_version: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"DegradeSpec.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _int_field("scale", self.scale, 1, 16)
        _int_field("lanczos_a", self.lanczos_a, 1, 16)
        _int_field("speed", self.speed, 0, 10)
        _int_field("ffmpeg_preset", self.ffmpeg_preset, -2, 13)
        object.__setattr__(self, "qindex", _qindex_table(self.qindex))
        if self.color_range not in _RANGES:
            raise UserError(f"DegradeSpec.color_range must be one of {', '.join(_RANGES)}, got {self.color_range!r}")
        if self.subsampling not in _SUBSAMPLINGS:
            raise UserError(
                f"DegradeSpec.subsampling must be one of {', '.join(_SUBSAMPLINGS)}, got {self.subsampling!r}"
            )
        if self.backend == "ffmpeg" and (self.color_range, self.subsampling) != ("limited", "4:2:0"):
            raise UserError(
                "DegradeSpec: the 'ffmpeg' backend runs the survey's command, which codes limited-range 4:2:0; "
                "use color_range='limited', subsampling='4:2:0' (or the 'pillow' backend)"
            )
        if not isinstance(self.encoder_version, str):
            raise UserError(f"DegradeSpec.encoder_version must be a string, got {self.encoder_version!r}")
        if not self.encoder_version:
            object.__setattr__(self, "encoder_version", installed_encoder_version(self.backend))

    @property
    def qps(self) -> tuple[int, ...]:
        """The QPs this spec has a qindex for, ascending."""
        return tuple(qp for qp, _ in self.qindex)

    def target_qindex(self, qp: int) -> int:
        """The frame base_q_idx that QP ``qp`` is coded at."""
        table = dict(self.qindex)
        if isinstance(qp, bool) or not isinstance(qp, (int, np.integer)) or int(qp) not in table:
            raise UserError(
                f"QP {qp!r} is not in this degradation's table (QPs {list(table)}); "
                "add its target qindex to DegradeSpec.qindex to use it"
            )
        return table[int(qp)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML values; ``qindex`` as a {"QP": qindex} table."""
        data = dataclasses.asdict(self)
        data["qindex"] = {str(qp): qidx for qp, qidx in self.qindex}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradeSpec:
        """Inverse of `to_dict`; unknown keys are errors, missing keys take their defaults."""
        if not isinstance(data, Mapping):
            raise UserError(f"a degradation spec must be a table of settings, got {type(data).__name__}")
        reject_unknown_keys("DegradeSpec", data, (f.name for f in dataclasses.fields(cls)))
        return cls(**dict(data))

    @property
    def hash(self) -> str:
        """First 12 hex digits of sha256 over the canonical JSON of `to_dict()`."""
        return content_hash(self.to_dict())


# -- validation -----------------------------------------------------------------------------------


def check_hr(hr: np.ndarray, spec: DegradeSpec | None = None) -> np.ndarray:
    """Return ``hr`` if it is an RGB uint8 HxWx3 image large enough to degrade; UserError otherwise."""
    spec = spec or DegradeSpec()
    if not isinstance(hr, np.ndarray):
        raise UserError(f"degrade: the HR image must be a numpy array (HxWx3 uint8), got {type(hr).__name__}")
    if hr.ndim != 3 or hr.shape[2] != 3:
        raise UserError(
            f"degrade: the HR image must be RGB, shape HxWx3, got shape {hr.shape}; "
            "convert grayscale/RGBA images to RGB first"
        )
    if hr.dtype != np.uint8:
        raise UserError(f"degrade: the HR image must be uint8 (0-255), got dtype {hr.dtype}; convert it first")
    h, w = lr_size(hr.shape[:2], spec)
    if min(h, w) < _SVT_MIN_SIDE:
        need = spec.scale * (_SVT_MIN_SIDE - 1) + 1
        raise UserError(
            f"degrade: HR image {hr.shape[1]}x{hr.shape[0]} is too small: its LR would be {w}x{h}, and SVT-AV1 "
            f"needs at least {_SVT_MIN_SIDE}x{_SVT_MIN_SIDE}; use HR images of at least {need}x{need} pixels"
        )
    return hr


def lr_size(hr_size: tuple[int, int], spec: DegradeSpec | None = None) -> tuple[int, int]:
    """``(ceil(h / scale), ceil(w / scale))``: the LR size for an HR ``(h, w)``, as the survey's ffmpeg scale."""
    scale = (spec or DegradeSpec()).scale
    return -(-int(hr_size[0]) // scale), -(-int(hr_size[1]) // scale)


def _check_version(spec: DegradeSpec) -> None:
    installed = installed_encoder_version(spec.backend)
    if installed != spec.encoder_version:
        warnings.warn(
            f"degradation spec {spec.hash} was recorded with encoder '{spec.encoder_version}' but this machine "
            f"has '{installed}'; the LR images will differ slightly from the recorded run's",
            EncoderVersionWarning,
            stacklevel=3,
        )


# -- pillow backend ------------------------------------------------------------------------------


def svt_quantizer_options(target_qindex: int) -> dict[str, str]:
    """SVT-AV1 options (libavif ``advanced``) that code a key frame at exactly ``target_qindex``.

    ``qp`` picks the nearest quantizer on the 0..63 scale (ties to the lower one); the key-frame
    offset makes up the rest. Small offsets only: a large one made libavif fail ("Encoding of color
    planes failed"), and the nearest quantizer keeps it within +-3.
    """
    target = _int_field("target qindex", target_qindex, 1, 255)
    qn = min(range(64), key=lambda q: (abs(AV1_QUANTIZER_TO_QINDEX[q] - target), q))
    return {
        "qp": str(qn),
        "use-fixed-qindex-offsets": "1",
        "key-frame-qindex-offset": str(target - AV1_QUANTIZER_TO_QINDEX[qn]),
        "aq-mode": "0",
    }


def _check_lr(lr: np.ndarray) -> np.ndarray:
    if not isinstance(lr, np.ndarray) or lr.ndim != 3 or lr.shape[2] != 3 or lr.dtype != np.uint8:
        raise UserError(
            f"encode_lr: the LR image must be an RGB uint8 HxWx3 array, got "
            f"{getattr(lr, 'shape', type(lr).__name__)} {getattr(lr, 'dtype', '')}".rstrip()
        )
    if min(lr.shape[:2]) < _SVT_MIN_SIDE:
        raise UserError(f"encode_lr: LR image {lr.shape[1]}x{lr.shape[0]} is under SVT-AV1's minimum of 4x4")
    return lr


@contextlib.contextmanager
def _keep_scheduling_policy() -> Iterator[None]:
    """Undo what SVT-AV1 does to the calling thread's scheduling: when it may (as root), it switches
    the thread that encodes to real-time SCHED_FIFO priority 99.

    Measured with pillow-avif-plugin's SVT-AV1 4.1 as root: one encode left the process's main
    thread at SCHED_FIFO 99, and every process it started afterwards inherited it. A real-time
    process that busy-waits (OpenBLAS waiting for its threads, a browser renderer) then never yields
    its core: a test run starved for an hour and CI timed out. Lowering back to what the thread had
    needs no privilege."""
    if not hasattr(os, "sched_getscheduler"):  # not on Linux
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def _encode_pillow(lr: np.ndarray, qp: int, spec: DegradeSpec) -> bytes:
    import pillow_avif  # noqa: F401  (registers the plugin's AVIF writer, which has SVT-AV1)
    from PIL import Image

    buf = io.BytesIO()
    with _keep_scheduling_policy():
        Image.fromarray(np.ascontiguousarray(lr), "RGB").save(
            buf,
            format="AVIF",
            codec="svt",
            speed=spec.speed,
            range=spec.color_range,
            subsampling=spec.subsampling,
            max_threads=1,  # parallelism comes from encoding several images at once; output does not depend on it
            advanced=svt_quantizer_options(spec.target_qindex(qp)),
        )
    return buf.getvalue()


# -- ffmpeg backend ------------------------------------------------------------------------------


def _run_ffmpeg(args: list[str], data: bytes, what: str) -> bytes:
    cmd = [_ffmpeg_path(), "-hide_banner", "-y", "-loglevel", "error", *args]
    run = subprocess.run(cmd, input=data, capture_output=True, env=dict(os.environ, SVT_LOG="1"), check=False)
    if run.returncode != 0:
        err = run.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"ffmpeg failed to {what}: {' | '.join(err[-3:]) or 'no message'} (command: {' '.join(cmd)})")
    return run.stdout


def _ffmpeg_encode(
    rgb: np.ndarray, qp: int, spec: DegradeSpec, *, out_size: tuple[int, int], scale_flags: str
) -> bytes:
    """swscale RGB -> YUV 4:2:0 at ``out_size`` (one pass, as the survey), pad for SVT 1.4.1, encode.

    Two ffmpeg runs with the frame passed as raw yuv420p in between: ffmpeg's ``pad`` filter rounds
    odd 4:2:0 sizes *down* (it would drop the last row/column), so odd frames are padded here instead.
    For frames SVT accepts as they are, the bytes equal the survey's one-command output (tested).
    """
    h, w = out_size
    yuv = _run_ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{rgb.shape[1]}x{rgb.shape[0]}", "-i", "-",
         "-vf", f"scale={w}:{h}:flags={scale_flags}", "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"],
        np.ascontiguousarray(rgb).tobytes(), "scale the image",
    )
    ch, cw = (h + 1) // 2, (w + 1) // 2
    y = np.frombuffer(yuv, np.uint8, h * w).reshape(h, w)
    u = np.frombuffer(yuv, np.uint8, ch * cw, h * w).reshape(ch, cw)
    v = np.frombuffer(yuv, np.uint8, ch * cw, h * w + ch * cw).reshape(ch, cw)
    ph, pw = max(_FFMPEG_SVT_MIN_SIDE, h + h % 2), max(_FFMPEG_SVT_MIN_SIDE, w + w % 2)
    if (ph, pw) != (h, w):  # repeat the last row/column (edge padding), chroma likewise
        y = np.pad(y, ((0, ph - h), (0, pw - w)), mode="edge")
        u = np.pad(u, ((0, ph // 2 - ch), (0, pw // 2 - cw)), mode="edge")
        v = np.pad(v, ((0, ph // 2 - ch), (0, pw // 2 - cw)), mode="edge")
    with tempfile.TemporaryDirectory(prefix="rtsr-ffmpeg-") as tmp:
        out = os.path.join(tmp, "lr.avif")  # the avif muxer needs a seekable file
        _run_ffmpeg(
            ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{pw}x{ph}", "-i", "-",
             "-c:v", "libsvtav1", "-qp", str(int(qp)), "-preset", str(spec.ffmpeg_preset), out],
            y.tobytes() + u.tobytes() + v.tobytes(), f"encode QP {qp}",
        )
        with open(out, "rb") as f:
            return f.read()


def _survey_flags(spec: DegradeSpec) -> str:
    return f"lanczos+accurate_rnd+full_chroma_int:sws_dither=none:param0={spec.lanczos_a}"


# -- public API -----------------------------------------------------------------------------------


def downscale(hr: np.ndarray, spec: DegradeSpec | None = None) -> np.ndarray:
    """The clean (uncompressed) LR: Lanczos-``spec.lanczos_a`` by ``spec.scale``, uint8 RGB."""
    spec = spec or DegradeSpec()
    return lanczos_downscale(check_hr(hr, spec), spec.scale, a=spec.lanczos_a)


def encode_lr(lr: np.ndarray, qp: int, spec: DegradeSpec | None = None) -> bytes:
    """Encode an already downscaled RGB uint8 LR image as AVIF at ``qp``; returns the file's bytes.

    Pillow backend: the real pipeline's encode step. ffmpeg backend: ffmpeg converts the given RGB to
    YUV 4:2:0 (swscale ``accurate_rnd+full_chroma_int``, no resize) and encodes with ``-qp`` -- the
    survey's command scales and converts in one pass, which `encode_hr` does.
    """
    spec = spec or DegradeSpec()
    lr = _check_lr(lr)
    spec.target_qindex(qp)
    _check_version(spec)
    if spec.backend == "pillow":
        return _encode_pillow(lr, qp, spec)
    flags = "accurate_rnd+full_chroma_int:sws_dither=none"  # same size: RGB -> YUV 4:2:0 only
    return _ffmpeg_encode(lr, qp, spec, out_size=lr.shape[:2], scale_flags=flags)


def encode_hr(hr: np.ndarray, qp: int, spec: DegradeSpec | None = None, *, lr: np.ndarray | None = None) -> bytes:
    """The whole degradation of one HR image at ``qp``, as AVIF bytes.

    ``lr`` may pass the clean LR (`downscale`) when it is already known (the Pillow backend encodes
    it; several QPs of one image then share one resampling). The ffmpeg backend always starts from
    the HR, as the survey's command does.
    """
    spec = spec or DegradeSpec()
    hr = check_hr(hr, spec)
    spec.target_qindex(qp)
    if spec.backend == "ffmpeg":
        _check_version(spec)
        return _ffmpeg_encode(hr, qp, spec, out_size=lr_size(hr.shape[:2], spec), scale_flags=_survey_flags(spec))
    if lr is None:
        lr = downscale(hr, spec)
    elif lr.shape[:2] != lr_size(hr.shape[:2], spec):
        raise UserError(
            f"encode_hr: lr has shape {lr.shape}, expected {lr_size(hr.shape[:2], spec) + (3,)} for this HR; "
            "pass downscale(hr, spec) or leave lr out"
        )
    return encode_lr(lr, qp, spec)


def decode_avif(data: bytes) -> np.ndarray:
    """Decode AVIF bytes (libavif + dav1d via Pillow) to RGB uint8 HxWx3; UserError if they are not a valid AVIF."""
    import pillow_avif  # noqa: F401  (registers the plugin's AVIF reader)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "AVIF":
                raise UserError(f"decode_avif: the data is a {im.format} image, not AVIF")
            im.load()
            rgb = np.array(im.convert("RGB"))
    except UserError:
        raise
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError for damaged files
        raise UserError(f"decode_avif: not a valid AVIF file ({type(exc).__name__}: {exc}); re-create it") from None
    return rgb


def decode_lr(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode an LR made by `encode_hr` and return its ``size = (h, w)`` top-left part.

    The ffmpeg backend may have padded the frame (see the module docstring); the padding is cut off
    here. A decoded frame smaller than ``size``, or padded by more than SVT 1.4.1 ever needs, is
    reported as a UserError (the data belongs to another image).
    """
    lr = decode_avif(data)
    h, w = int(size[0]), int(size[1])
    ph, pw = max(_FFMPEG_SVT_MIN_SIDE, h + h % 2), max(_FFMPEG_SVT_MIN_SIDE, w + w % 2)
    if lr.shape[0] not in (h, ph) or lr.shape[1] not in (w, pw):
        raise UserError(f"decode_lr: the AVIF is {lr.shape[1]}x{lr.shape[0]}, expected an LR of {w}x{h}")
    return np.ascontiguousarray(lr[:h, :w])


def degrade(hr: np.ndarray, qp: int, spec: DegradeSpec | None = None) -> np.ndarray:
    """HR RGB uint8 -> decoded LR RGB uint8 (``ceil(h/4) x ceil(w/4)``) at challenge QP ``qp``."""
    spec = spec or DegradeSpec()
    return decode_lr(encode_hr(hr, qp, spec), lr_size(hr.shape[:2], spec))
