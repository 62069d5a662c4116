"""`python -m trainers.full`: run configs, kill-and-resume, and the artefacts it writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from search_space.arch import ArchConfig
from search_space.errors import UserError
from trainers.full import load_deploy, run_full
from trainers.losses import LossSpec
from trainers.recipe import Recipe, Stage
from trainers.runconfig import RunConfig, load_run_config, save_run_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 60  # 42 steps of the first stage, 18 of the second (bias removal)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory, request) -> Path:
    """A DIV2K-style folder with train/ and val/ subfolders of small natural-looking PNGs."""
    factory = request.getfixturevalue("rng_image")
    root = tmp_path_factory.mktemp("hr")
    for split, shape, count in (("train", (192, 192), 3), ("val", (96, 144), 2)):
        (root / split).mkdir()
        for i in range(count):
            Image.fromarray(factory(*shape, seed=100 * (split == "val") + i)).save(root / split / f"{i:04d}.png")
    return root


def _config(hr_folder: Path, steps: int = STEPS) -> RunConfig:
    stage = dict(patch=24, batch=2, grad_clip=1.0)
    recipe = Recipe(
        name="tiny",
        stages=(
            Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, share=0.7, **stage),
            Stage(loss=LossSpec.from_dict({"mse": 1.0}), lr=2e-4, share=0.3, remove_bias=True, **stage),
        ),
    )
    arch = ArchConfig(channels=8, blocks=1, block="ecb", down_factor=2, global_residual="nearest")
    return RunConfig(arch=arch, recipe=recipe, steps=steps, seed=7, data=str(hr_folder), qps=(31, 63), provenance={"test": True})


@pytest.fixture()
def cache_env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RTSR_CACHE_DIR", str(cache))
    return {**os.environ, "RTSR_CACHE_DIR": str(cache)}


def test_run_config_round_trips_through_toml(tmp_path, hr_folder):
    config = _config(hr_folder)
    path = save_run_config(config, tmp_path / "c.toml")
    again = load_run_config(path)
    assert again == config
    assert again.arch.arch_hash == config.arch.arch_hash and again.recipe.hash == config.recipe.hash
    assert dict(again.provenance) == {"test": True}


@pytest.mark.slow  # a trainers.full launch
def test_bad_config_gives_one_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[run]\nsteps = 10\n[arch]\nchannels = 8\nblocks = 1\n[recipe]\nname = "x"\n[extra]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.full", "--config", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "unknown section" in proc.stderr and "extra" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_kill_and_resume_continues_from_the_checkpoint(tmp_path, hr_folder, cache_env, stall_inside):
    config = _config(hr_folder)
    config_path = save_run_config(config, tmp_path / "tiny.toml")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "trainers.full", "--config", str(config_path), "--out", str(out),
           "--threads", "1", "--checkpoint-every", "20", "--no-progress"]
    hook, held = stall_inside("trainers.full:_save_torch", after=True)  # held once the first checkpoint is written
    proc = subprocess.Popen(cmd, cwd=REPO, env={**cache_env, **hook}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not held.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint written within 240 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert (out / "checkpoint.pt").exists() and not (out / "deploy.pt").exists()

    resumed = subprocess.run(cmd, cwd=REPO, env=cache_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    line = next(l for l in resumed.stdout.splitlines() if "resuming from step" in l)
    step = int(line.split("resuming from step ")[1].split("/")[0])
    assert 0 < step < STEPS

    # The same config run without interruption ends with bit-identical weights.
    straight = tmp_path / "straight"
    run_full(config, straight, threads=1, checkpoint_every=0, progress=False, log=lambda _: None)
    a, b = load_deploy(out), load_deploy(straight)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not [k for k in a.state_dict() if k.endswith("bias")]  # the last stage removed biases

    # Artefacts: the torch.export program and the ONNX file equal the state-dict model at a size
    # they were not checked at; no TorchScript is written any more; metrics are complete.
    assert not (out / "deploy.ts").exists()
    program = torch.export.load(str(out / "deploy.pt2")).module()
    x = torch.rand(1, 3, 24, 36)
    with torch.no_grad():
        expected = a(x)
        assert torch.allclose(program(x), expected, atol=1e-6)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "deploy.onnx"), providers=["CPUExecutionProvider"])
    assert abs(session.run(None, {"lr": x.numpy()})[0] - expected.numpy()).max() * 255 <= 0.01
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == STEPS
    assert set(metrics["final"]["per_qp"]) == {"31", "63"}
    # Final numbers are on the test split (here carved from train/: 1 of 3 images), val stays val.
    assert metrics["final_split"] == "test" and metrics["test"] == metrics["final"]
    assert metrics["data"]["carved"] == ["test"] and metrics["data"]["test"]["images"] == metrics["test"]["images"] == 1
    assert metrics["data"]["train"]["images"] == 2 and metrics["val"]["images"] == 2
    for m in metrics["test"]["per_qp"].values():
        assert m["gain_linear_y"] == m["psnr_y"] - m["linear_psnr_y"] and m["gain_y"] == m["psnr_y"] - m["lanczos_psnr_y"]
    assert metrics["test"]["delta_linear_y"] is not None and metrics["test"]["delta_y"] is not None
    assert load_run_config(out / "config.toml") == config


def test_resuming_into_a_folder_of_another_config_is_refused(tmp_path, hr_folder, cache_env):
    out = tmp_path / "run"
    run_full(_config(hr_folder, steps=4), out, threads=1, checkpoint_every=2, progress=False, log=lambda _: None)
    other = _config(hr_folder, steps=8)
    with pytest.raises(UserError, match="different config"):
        run_full(other, out, threads=1, progress=False, log=lambda _: None)


def test_final_metrics_use_the_given_test_folder_and_resuming_needs_the_same_training_images(tmp_path, hr_folder, cache_env, rng_image):
    test_folder = tmp_path / "test_images"
    test_folder.mkdir()
    Image.fromarray(rng_image(96, 144, seed=77)).save(test_folder / "t.png")
    out = tmp_path / "run"
    config = _config(hr_folder, steps=4)
    metrics = run_full(config, out, threads=1, checkpoint_every=2, progress=False, log=lambda _: None, test_data=str(test_folder))
    assert metrics["data"]["carved"] == [] and metrics["data"]["test"] == {"images": 1, "source": str(test_folder)}
    assert metrics["data"]["train"]["images"] == 3  # nothing carved out of train/
    assert metrics["final"]["gain_linear_y"] is not None and metrics["history"] == []
    # Without --test-data the test image would be carved out of train/: another training set.
    with pytest.raises(UserError, match="other training images"):
        run_full(config, out, threads=1, progress=False, log=lambda _: None)


def test_the_cli_has_a_test_data_flag():
    from rtsr.train import build_parser

    args = build_parser().parse_args(["--config", "c.toml", "--test-data", "/x"])
    assert args.test_data == "/x"
