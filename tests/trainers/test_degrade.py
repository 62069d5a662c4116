"""trainers.degrade: the AVIF degradation, checked in the bitstream and against ffmpeg itself.

The frame quantizer is read back from the AV1 headers (conftest's parser, itself checked against
ffmpeg's ``trace_headers`` here), never taken from the options we passed. Quality/size numbers in
comments were measured on the 2-core development VM (ffmpeg 5.1.9 / SVT-AV1 1.4.1, pillow-avif-plugin
1.6.0 / libavif 1.4.2 / SVT-AV1 4.1.0).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from search_space.errors import UserError
from trainers import degrade as D
from trainers.degrade import QPS, DegradeSpec, decode_avif, degrade, downscale, encode_hr, encode_lr

CHALLENGE_QINDEX = {31: 33, 39: 62, 47: 106, 55: 143, 63: 181}  # measured, facts page section 2
SURVEY_VF = "scale=ceil(iw/4):ceil(ih/4):flags=lanczos+accurate_rnd+full_chroma_int:sws_dither=none:param0=5"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def survey_command(ffmpeg: str, hr: np.ndarray, qp: int, tmp_path) -> bytes:
    """The survey's command, verbatim, on a PNG of ``hr``."""
    from PIL import Image

    src, dst = tmp_path / "hr.png", tmp_path / f"lr_qp{qp}.avif"
    Image.fromarray(hr).save(src)
    subprocess.run(
        [ffmpeg, "-hide_banner", "-y", "-loglevel", "error", "-i", str(src), "-vf", SURVEY_VF,
         "-c:v", "libsvtav1", "-qp", str(qp), "-preset", "5", str(dst)],
        check=True, capture_output=True, env=dict(os.environ, SVT_LOG="1"),
    )
    return dst.read_bytes()


def trace_headers_base_q_idx(ffmpeg: str, obus: bytes) -> int:
    """base_q_idx as printed by ffmpeg's trace_headers bitstream filter (an independent AV1 parser)."""
    obus = b"\x12\x00" + obus  # a temporal delimiter first, as the obu demuxer expects
    run = subprocess.run(
        [ffmpeg, "-hide_banner", "-f", "obu", "-i", "-", "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        input=obus, capture_output=True, check=True,
    )
    lines = [ln for ln in run.stderr.decode().splitlines() if " base_q_idx " in ln]
    assert lines, run.stderr.decode()[-2000:]
    return int(lines[0].rsplit("=", 1)[1])


@pytest.fixture(scope="module")
def pillow_spec() -> DegradeSpec:
    return DegradeSpec()


@pytest.fixture(scope="module")
def ffmpeg_spec(ffmpeg) -> DegradeSpec:
    return DegradeSpec(backend="ffmpeg")


# -- the quantizer actually coded -------------------------------------------------------------------


def test_header_parser_agrees_with_ffmpeg_trace_headers(
    ffmpeg, textured_image, rng_image, avif_base_q_idx, avif_mdat, tmp_path
):
    still = encode_hr(textured_image, 47)  # libavif: reduced still-picture header
    video = survey_command(ffmpeg, rng_image(256, 256, seed=3), 39, tmp_path)  # ffmpeg: full sequence header
    for data in (still, video):
        assert avif_base_q_idx(data) == trace_headers_base_q_idx(ffmpeg, avif_mdat(data))


@pytest.mark.parametrize("qp", QPS)
def test_pillow_backend_codes_the_challenge_qindex(textured_image, avif_base_q_idx, qp):
    data = encode_hr(textured_image, qp)
    assert avif_base_q_idx(data) == CHALLENGE_QINDEX[qp]
    assert avif_base_q_idx(data) != 4 * qp  # the naive quantizer mapping would give 124..252


def test_svt_quantizer_options_hand_computed():
    # nearest 0..63 quantizer (qindex 4q, 249, 255), ties to the lower one, plus the offset
    assert D.svt_quantizer_options(33) == {
        "qp": "8", "use-fixed-qindex-offsets": "1", "key-frame-qindex-offset": "1", "aq-mode": "0"
    }
    for target, qp, offset in [(62, "15", "2"), (106, "26", "2"), (143, "36", "-1"), (181, "45", "1"), (250, "62", "1")]:
        options = D.svt_quantizer_options(target)
        assert (options["qp"], options["key-frame-qindex-offset"]) == (qp, offset)
    assert D.AV1_QUANTIZER_TO_QINDEX[:3] == (0, 4, 8) and D.AV1_QUANTIZER_TO_QINDEX[-3:] == (244, 249, 255)


def test_other_targets_are_coded_exactly(textured_image, avif_base_q_idx):
    spec = DegradeSpec(qindex={31: 10, 63: 250})
    lr = downscale(textured_image, spec)
    assert avif_base_q_idx(encode_lr(lr, 31, spec)) == 10
    assert avif_base_q_idx(encode_lr(lr, 63, spec)) == 250


def test_ffmpeg_backend_reproduces_measured_table(ffmpeg_spec, rng_image, avif_base_q_idx):
    hr = rng_image(256, 256, seed=5)
    for qp in (31, 55):
        assert avif_base_q_idx(encode_hr(hr, qp, ffmpeg_spec)) == CHALLENGE_QINDEX[qp]


# -- quality -------------------------------------------------------------------------------------


def test_quality_decreases_with_qp(rng_image):
    hr = rng_image(384, 512, seed=11)
    clean = downscale(hr)
    scores = [psnr(degrade(hr, qp), clean) for qp in QPS]
    # measured 38.3, 35.5, 31.9, 28.9, 26.3 dB on a similar image; strictly ordered with clear gaps
    assert all(a > b + 1.0 for a, b in zip(scores, scores[1:])), scores
    assert 33.0 < scores[0] < 45.0 and 20.0 < scores[-1] < 31.0, scores


def test_degrade_output_shape_and_sizes_not_divisible_by_4(rng_image):
    hr = rng_image(61, 50, seed=12)
    lr = degrade(hr, 31)
    assert lr.shape == (16, 13, 3) and lr.dtype == np.uint8
    assert psnr(lr, downscale(hr)) > 30.0


def test_pillow_and_ffmpeg_backends_are_statistically_close(ffmpeg_spec, rng_image):
    hr = rng_image(384, 512, seed=13)  # LR 96x128: no padding needed by SVT 1.4.1
    clean = downscale(hr)
    for qp in QPS:
        lp, lf = degrade(hr, qp), degrade(hr, qp, ffmpeg_spec)
        assert lf.shape == lp.shape == clean.shape
        # measured: Pillow 0.0-0.7 dB below ffmpeg vs the clean LR; the two decodes 32-39 dB apart
        assert abs(psnr(lp, clean) - psnr(lf, clean)) < 1.5, qp
        assert psnr(lp, lf) > 29.0, qp


def test_ffmpeg_backend_is_the_survey_command_byte_for_byte(ffmpeg, ffmpeg_spec, rng_image, tmp_path):
    hr = rng_image(264, 272, seed=14)  # LR 66x68: even and >= 64, SVT 1.4.1 takes it as it is
    for qp in (31, 63):
        assert encode_hr(hr, qp, ffmpeg_spec) == survey_command(ffmpeg, hr, qp, tmp_path)


@pytest.mark.parametrize(("h", "w"), [(268, 260), (100, 120)])
def test_ffmpeg_backend_pads_frames_svt141_rejects(ffmpeg, ffmpeg_spec, rng_image, tmp_path, h, w):
    hr = rng_image(h, w, seed=15)  # LR 67x65 (odd) and 25x30 (under 64): the survey's command fails on both
    from PIL import Image

    Image.fromarray(hr).save(tmp_path / "hr.png")
    literal = subprocess.run(
        [ffmpeg, "-hide_banner", "-y", "-loglevel", "error", "-i", str(tmp_path / "hr.png"), "-vf", SURVEY_VF,
         "-c:v", "libsvtav1", "-qp", "31", "-preset", "5", str(tmp_path / "o.avif")],
        capture_output=True, env=dict(os.environ, SVT_LOG="1"),
    )
    assert literal.returncode != 0
    clean = downscale(hr)
    lf = degrade(hr, 31, ffmpeg_spec)
    assert lf.shape == clean.shape
    assert abs(psnr(lf, clean) - psnr(degrade(hr, 31), clean)) < 1.5  # padding did not hurt the real pixels


# -- encode / decode ---------------------------------------------------------------------------------


def test_encode_lr_decode_roundtrip(textured_image):
    lr = downscale(textured_image)
    data = encode_lr(lr, 31)
    assert data[4:12] == b"ftypavif"
    out = decode_avif(data)
    assert out.shape == lr.shape and out.dtype == np.uint8 and psnr(out, lr) > 33.0
    assert data == encode_hr(textured_image, 31)  # same path, deterministic


def test_decode_rejects_damaged_data(textured_image):
    data = encode_hr(textured_image, 39)
    for bad in (data[: len(data) // 2], data[:-1], b"", b"not an image"):
        with pytest.raises(UserError, match="AVIF"):
            decode_avif(bad)


def test_svt_log_spam_is_silenced(textured_image, capfd):
    encode_hr(textured_image, 55)
    assert "Svt[info]" not in capfd.readouterr().err


def test_encoder_version_mismatch_warns(textured_image):
    spec = DegradeSpec(encoder_version="pillow-avif-plugin 0.0; svt-av1 0.0")
    with pytest.warns(D.EncoderVersionWarning, match="0.0"):
        encode_hr(textured_image, 63, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_hr(textured_image, 63)  # the installed version: no warning


# -- inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hr", "match"),
    [
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64), np.uint8), "RGB"),
        (np.zeros((64, 64, 4), np.uint8), "RGB"),
        (np.zeros((12, 64, 3), np.uint8), "too small"),
        ([[0, 0, 0]], "numpy"),
    ],
)
def test_bad_hr_images_raise_user_error(hr, match):
    with pytest.raises(UserError, match=match):
        degrade(hr, 31)


def test_bad_qp_raises_user_error(textured_image):
    with pytest.raises(UserError, match="QP 30 is not in"):
        degrade(textured_image, 30)
    with pytest.raises(UserError, match="not in"):
        encode_lr(downscale(textured_image), True)


def test_ffmpeg_backend_without_ffmpeg_is_a_user_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UserError, match="apt-get install ffmpeg"):
        DegradeSpec(backend="ffmpeg")


# -- the spec ------------------------------------------------------------------------------------


def test_spec_defaults_record_the_challenge_setup(pillow_spec):
    d = pillow_spec.to_dict()
    assert d["qindex"] == {"31": 33, "39": 62, "47": 106, "55": 143, "63": 181}
    assert (d["backend"], d["scale"], d["lanczos_a"], d["speed"], d["ffmpeg_preset"]) == ("pillow", 4, 5, 6, 5)
    assert (d["color_range"], d["subsampling"]) == ("limited", "4:2:0")
    assert "svt-av1" in d["encoder_version"] and "libavif" in d["encoder_version"]
    assert pillow_spec.qps == QPS


def test_spec_hash_is_sha256_of_canonical_json(pillow_spec):
    d = pillow_spec.to_dict()
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert pillow_spec.hash == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert len(pillow_spec.hash) == 12


def test_spec_roundtrip_equality_and_hashability(pillow_spec):
    again = DegradeSpec.from_dict(json.loads(json.dumps(pillow_spec.to_dict())))  # string QP keys
    assert again == pillow_spec and again.hash == pillow_spec.hash and hash(again) == hash(pillow_spec)
    assert DegradeSpec(qindex={63: 181, 31: 33, 39: 62, 47: 106, 55: 143}) == pillow_spec  # order-free
    assert len({pillow_spec, again}) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"scale": 2},
        {"lanczos_a": 3},
        {"qindex": {31: 34, 39: 62, 47: 106, 55: 143, 63: 181}},
        {"qindex": {31: 33}},
        {"speed": 5},
        {"ffmpeg_preset": 8},
        {"color_range": "full"},
        {"subsampling": "4:4:4"},
        {"encoder_version": "another encoder"},
    ],
)
def test_spec_hash_changes_with_every_field(pillow_spec, change):
    changed = DegradeSpec.from_dict({**pillow_spec.to_dict(), **change})
    assert changed.hash != pillow_spec.hash and changed != pillow_spec


def test_ffmpeg_spec_differs(pillow_spec, ffmpeg_spec):
    assert ffmpeg_spec.hash != pillow_spec.hash
    assert "svt-av1 " in ffmpeg_spec.encoder_version and ffmpeg_spec.encoder_version.startswith("ffmpeg ")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"backend": "aom"}, "backend"),
        ({"scale": 0}, "scale"),
        ({"scale": 4.0}, "scale"),
        ({"lanczos_a": True}, "lanczos_a"),
        ({"speed": 11}, "speed"),
        ({"qindex": {31: 300}}, "qindex"),
        ({"qindex": {"x": 33}}, "QP key"),
        ({"qindex": {}}, "empty"),
        ({"qindex": 5}, "map QP"),
        ({"color_range": "pc"}, "color_range"),
        ({"subsampling": "4:1:1"}, "subsampling"),
        ({"quality": 50}, r"DegradeSpec: unknown key\(s\) 'quality'; valid keys: .*backend"),
        ({"encoder_version": 3}, "encoder_version"),
    ],
)
def test_bad_spec_values_raise_user_error(data, match):
    with pytest.raises(UserError, match=match):
        DegradeSpec.from_dict(data)


def test_ffmpeg_backend_requires_the_survey_colour_format(ffmpeg):
    with pytest.raises(UserError, match="limited-range 4:2:0"):
        DegradeSpec(backend="ffmpeg", color_range="full")


ENCODE_AND_REPORT_POLICY = """
import os
import numpy as np
from trainers.degrade import encode_lr
before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
encode_lr(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8), 31)
after = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
print(*before, *after)
"""


def test_an_encode_leaves_the_process_scheduling_policy_as_it_was():
    # SVT-AV1, when it may (as root, as CI runs), switches the encoding thread to SCHED_FIFO 99; the
    # processes started afterwards inherited it and a busy-waiting one starved the machine. In a
    # subprocess, so that a failure cannot leave this test process real-time.
    out = subprocess.run([sys.executable, "-c", ENCODE_AND_REPORT_POLICY], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    policy_before, priority_before, policy_after, priority_after = map(int, out.stdout.split()[-4:])
    assert (policy_after, priority_after) == (policy_before, priority_before), "SCHED_FIFO is 1: " + out.stdout


def test_the_policy_guard_restores_a_changed_policy():
    # SCHED_BATCH needs no privilege, so this checks the restoring on any machine.
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    with D._keep_scheduling_policy():
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == (policy, param)
