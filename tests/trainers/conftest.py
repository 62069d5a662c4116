"""Shared fixtures for the trainers tests: deterministic natural-looking RGB images.

No photo dataset is installed (and none may be downloaded in CI), so tests use synthetic images with
the statistics that matter for resampling and compression: a 1/f amplitude spectrum (the power law
of natural photos), channels that are strongly correlated (luma-dominated, weaker chroma), a few
anti-aliased object boundaries (sharp but not aliased edges, where Lanczos rings and AV1 spends
bits), and a patch of fine texture. Values are clipped to 0..255 like a real photo's highlights.

Fixtures (generic names, usable by any trainers test):

* ``rng_image(height, width, seed=0)``: factory returning a fresh uint8 HxWx3 image (cached).
* ``textured_image``: one 256x192 (h x w) image, the default HR test image.
* ``ffmpeg``: path of the ``ffmpeg`` executable (the independent Lanczos / AVIF reference). A missing
  ffmpeg FAILS the test that needs it, with instructions: CI installs it, and skipping would hide
  that the reference checks did not run.
* ``avif_base_q_idx(avif_bytes)``: the coded frame's base_q_idx, parsed from the AV1 headers.
"""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest


def _one_over_f(rng: np.random.Generator, h: int, w: int, alpha: float) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f**alpha
    spec[0, 0] = 0.0
    field = np.fft.irfft2(spec, s=(h, w))
    return field / field.std()


@functools.lru_cache(maxsize=32)
def _natural_image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = height, width
    luma = 30.0 * _one_over_f(rng, h, w, 1.3)
    cb = 10.0 * _one_over_f(rng, h, w, 1.8)
    cr = 10.0 * _one_over_f(rng, h, w, 1.8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Objects: ellipses and half-planes with a constant colour offset and a ~1 px soft boundary.
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.08, 0.35) * h, rng.uniform(0.08, 0.35) * w
        dist = (np.hypot((yy - cy) / ry, (xx - cx) / rx) - 1.0) * min(ry, rx)  # ~ pixels from the boundary
        mask = np.clip(0.5 - dist, 0.0, 1.0)
        offset = rng.uniform(-50, 50, size=3)
        luma += mask * offset[0]
        cb += mask * offset[1] * 0.5
        cr += mask * offset[2] * 0.5
    theta = rng.uniform(0, np.pi)
    dist = (yy - h / 2) * np.cos(theta) + (xx - w / 2) * np.sin(theta)
    luma += np.clip(0.5 - dist, 0.0, 1.0) * 35.0
    # Fine texture (fabric/foliage-like) in one quadrant.
    texture = rng.standard_normal((h, w)) * 14.0
    texture[: h // 2, : w // 2] = 0.0
    luma += texture
    rgb = np.stack([118 + luma + 1.40 * cr, 118 + luma - 0.34 * cb - 0.71 * cr, 118 + luma + 1.77 * cb], axis=-1)
    img = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory):
    """A cache root holding the builtin dataset's three splits, generated once for the session.

    Why: generating them takes a second and a half; the tests that only read them share this root
    (tests of the generation itself work on copies or folders of their own)."""
    from trainers.builtin import SPLITS, builtin_images

    root = tmp_path_factory.mktemp("builtin")
    for split in SPLITS:
        builtin_images(split, cache_dir=root, progress=False)
    return root


@pytest.fixture(scope="session")
def rng_image():
    """Factory: ``rng_image(height, width, seed=0)`` -> deterministic natural-looking uint8 HxWx3 image (a copy)."""

    def make(height: int, width: int, seed: int = 0) -> np.ndarray:
        return _natural_image(int(height), int(width), int(seed)).copy()

    return make


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of ffmpeg; fails (never skips) when it is missing."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail(
            "ffmpeg is not on PATH, but this test compares against it as an independent reference. "
            "Install it (Debian/Ubuntu: apt-get install ffmpeg, which includes libsvtav1) and rerun."
        )
    return path


@pytest.fixture(scope="session")
def textured_image(rng_image) -> np.ndarray:
    """A 256x192 (h x w) natural-looking RGB uint8 image; 4x LR is 64x48."""
    return rng_image(256, 192, seed=1)


# --------------------------------------------------------------------------------------------------
# AV1-in-AVIF header probe: the frame's base_q_idx, read from the bitstream itself.
#
# Written from the AV1 specification (sections 5.3 OBU header, 5.5 sequence header, 5.9 uncompressed
# header, 5.9.15 tile info) for still images: intra frames only. It is an independent check of what
# the encoder really did, so the degradation tests never trust the encoder options they passed.
# --------------------------------------------------------------------------------------------------


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # in bits

    def f(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def uvlc(self) -> int:
        zeros = 0
        while self.f(1) == 0:
            zeros += 1
        return 0 if zeros >= 32 else self.f(zeros) + (1 << zeros) - 1

    def ns(self, n: int) -> int:
        w = n.bit_length()  # FloorLog2(n) + 1
        m = (1 << w) - n
        v = self.f(w - 1)
        return v if v < m else (v << 1) - m + self.f(1)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("leb128 longer than 8 bytes")


def avif_mdat_payload(data: bytes) -> bytes:
    """The payload of the top-level ISOBMFF ``mdat`` box (for a one-image AVIF: the AV1 OBUs)."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = len(data) - pos
        if kind == b"mdat":
            return data[pos + header : pos + size]
        pos += size
    raise ValueError("no mdat box")


def split_obus(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Low-overhead AV1 OBUs as (obu_type, temporal_id, spatial_id, payload)."""
    obus = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        obu_type = (header >> 3) & 0xF
        has_ext = (header >> 2) & 1
        has_size = (header >> 1) & 1
        pos += 1
        tid = sid = 0
        if has_ext:
            tid, sid = data[pos] >> 5, (data[pos] >> 3) & 3
            pos += 1
        if has_size:
            size, pos = _leb128(data, pos)
        else:
            size = len(data) - pos
        obus.append((obu_type, tid, sid, data[pos : pos + size]))
        pos += size
    return obus


def _sequence_header(payload: bytes) -> dict:
    b = _Bits(payload)
    s: dict = {"profile": b.f(3), "still_picture": b.f(1), "reduced": b.f(1)}
    s.update(timing=0, equal_picture_interval=0, decoder_model=0, op_idc=[0], op_decoder_model=[0])
    if s["reduced"]:
        b.f(5)  # seq_level_idx[0]
    else:
        s["timing"] = b.f(1)
        if s["timing"]:
            b.f(32), b.f(32)
            s["equal_picture_interval"] = b.f(1)
            if s["equal_picture_interval"]:
                b.uvlc()
            s["decoder_model"] = b.f(1)
            if s["decoder_model"]:
                s["buffer_delay_len"] = b.f(5) + 1
                b.f(32)
                s["removal_time_len"] = b.f(5) + 1
                s["presentation_time_len"] = b.f(5) + 1
        initial_display_delay = b.f(1)
        s["op_idc"], s["op_decoder_model"] = [], []
        for _ in range(b.f(5) + 1):
            s["op_idc"].append(b.f(12))
            if b.f(5) > 7:
                b.f(1)  # seq_tier
            present = 0
            if s["decoder_model"]:
                present = b.f(1)
                if present:
                    n = s["buffer_delay_len"]
                    b.f(n), b.f(n), b.f(1)
            s["op_decoder_model"].append(present)
            if initial_display_delay and b.f(1):
                b.f(4)
    wbits, hbits = b.f(4) + 1, b.f(4) + 1
    s["wbits"], s["hbits"] = wbits, hbits
    s["max_w"], s["max_h"] = b.f(wbits) + 1, b.f(hbits) + 1
    s["frame_id"] = 0 if s["reduced"] else b.f(1)
    if s["frame_id"]:
        s["frame_id_len"] = b.f(4) + 2 + b.f(3) + 1
    s["sb128"] = b.f(1)
    b.f(1), b.f(1)  # enable_filter_intra, enable_intra_edge_filter
    s["order_hint_bits"] = 0
    s["screen_content"] = 2
    s["integer_mv"] = 2
    if not s["reduced"]:
        b.f(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = b.f(1)
        if order_hint:
            b.f(2)  # jnt_comp, ref_frame_mvs
        s["screen_content"] = 2 if b.f(1) else b.f(1)
        if s["screen_content"] > 0:
            s["integer_mv"] = 2 if b.f(1) else b.f(1)
        if order_hint:
            s["order_hint_bits"] = b.f(3) + 1
    s["superres"] = b.f(1)
    return s


def _tile_log2(blk: int, target: int) -> int:
    k = 0
    while (blk << k) < target:
        k += 1
    return k


def _frame_base_q_idx(payload: bytes, seq: dict, tid: int, sid: int) -> int:
    b = _Bits(payload)
    if seq["reduced"]:
        frame_type, show_frame = 0, 1
    else:
        if b.f(1):
            raise ValueError("show_existing_frame: no quantizer in this header")
        frame_type = b.f(2)
        if frame_type not in (0, 2):
            raise ValueError("inter frame: this probe reads intra frames only")
        show_frame = b.f(1)
        if show_frame and seq["decoder_model"] and not seq["equal_picture_interval"]:
            b.f(seq["presentation_time_len"])
        if not show_frame:
            b.f(1)  # showable_frame
        if not (frame_type == 0 and show_frame):
            b.f(1)  # error_resilient_mode
    disable_cdf_update = b.f(1)
    allow_sct = b.f(1) if seq["screen_content"] == 2 else seq["screen_content"]
    if allow_sct and seq["integer_mv"] == 2:
        b.f(1)  # force_integer_mv
    if seq["frame_id"]:
        b.f(seq["frame_id_len"])  # current_frame_id
    override = 0 if seq["reduced"] else b.f(1)
    b.f(seq["order_hint_bits"])
    # primary_ref_frame is absent: intra frames use PRIMARY_REF_NONE.
    if seq["decoder_model"] and b.f(1):  # buffer_removal_time_present_flag
        for idc, present in zip(seq["op_idc"], seq["op_decoder_model"]):
            if present and (idc == 0 or ((idc >> tid) & 1 and (idc >> (sid + 8)) & 1)):
                b.f(seq["removal_time_len"])
    if not (frame_type == 0 and show_frame) and b.f(8) != 0xFF:
        raise ValueError("intra-only frame that keeps references: unsupported")
    width, height = seq["max_w"], seq["max_h"]
    if override:
        width, height = b.f(seq["wbits"]) + 1, b.f(seq["hbits"]) + 1
    upscaled = width
    if seq["superres"] and b.f(1):
        denom = b.f(3) + 9
        width = (upscaled * 8 + denom // 2) // denom
    if b.f(1):  # render_and_frame_size_different
        b.f(16), b.f(16)
    if allow_sct and upscaled == width:
        b.f(1)  # allow_intrabc
    if not (seq["reduced"] or disable_cdf_update):
        b.f(1)  # disable_frame_end_update_cdf
    # tile_info()
    mi_cols, mi_rows = 2 * ((width + 7) >> 3), 2 * ((height + 7) >> 3)
    sb_shift = 5 if seq["sb128"] else 4
    sb_cols = (mi_cols + (1 << sb_shift) - 1) >> sb_shift
    sb_rows = (mi_rows + (1 << sb_shift) - 1) >> sb_shift
    sb_size = sb_shift + 2
    max_tile_width_sb = 4096 >> sb_size
    max_tile_area_sb = (4096 * 2304) >> (2 * sb_size)
    min_log2_cols = _tile_log2(max_tile_width_sb, sb_cols)
    max_log2_cols = _tile_log2(1, min(sb_cols, 64))
    max_log2_rows = _tile_log2(1, min(sb_rows, 64))
    min_log2_tiles = max(min_log2_cols, _tile_log2(max_tile_area_sb, sb_rows * sb_cols))
    if b.f(1):  # uniform_tile_spacing_flag
        cols_log2 = min_log2_cols
        while cols_log2 < max_log2_cols and b.f(1):
            cols_log2 += 1
        rows_log2 = max(min_log2_tiles - cols_log2, 0)
        while rows_log2 < max_log2_rows and b.f(1):
            rows_log2 += 1
    else:
        widest, start, n_cols = 0, 0, 0
        while start < sb_cols:
            size = b.ns(min(sb_cols - start, max_tile_width_sb)) + 1
            widest, start, n_cols = max(widest, size), start + size, n_cols + 1
        area = (sb_rows * sb_cols) >> (min_log2_tiles + 1) if min_log2_tiles else sb_rows * sb_cols
        max_height = max(area // widest, 1)
        start, n_rows = 0, 0
        while start < sb_rows:
            start += b.ns(min(sb_rows - start, max_height)) + 1
            n_rows += 1
        cols_log2, rows_log2 = _tile_log2(1, n_cols), _tile_log2(1, n_rows)
    if cols_log2 or rows_log2:
        b.f(cols_log2 + rows_log2)  # context_update_tile_id
        b.f(2)  # tile_size_bytes_minus_1
    return b.f(8)  # quantization_params(): base_q_idx


def av1_base_q_idx_from_avif(data: bytes) -> int:
    """base_q_idx of the first frame in an AVIF file (0..255)."""
    seq = None
    for obu_type, tid, sid, payload in split_obus(avif_mdat_payload(data)):
        if obu_type == 1:
            seq = _sequence_header(payload)
        elif obu_type in (3, 6):
            if seq is None:
                raise ValueError("frame before sequence header")
            return _frame_base_q_idx(payload, seq, tid, sid)
    raise ValueError("no frame header OBU")


@pytest.fixture(scope="session")
def avif_base_q_idx():
    """Function ``avif_base_q_idx(avif_bytes) -> int``: the coded frame's base_q_idx, parsed from the AV1 headers."""
    return av1_base_q_idx_from_avif


@pytest.fixture(scope="session")
def avif_mdat():
    """Function ``avif_mdat(avif_bytes) -> bytes``: the top-level mdat payload (the AV1 OBUs of a one-image AVIF)."""
    return avif_mdat_payload
