"""`trainers.full` resumes cleanly: `validation.jsonl` lists each step once, and a `checkpoint.pt`
that is not ours is one clear error, not a `KeyError` from deep inside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from search_space.arch import ArchConfig
from search_space.errors import UserError
from trainers.full import run_full
from trainers.losses import LossSpec
from trainers.recipe import Recipe, Stage
from trainers.runconfig import RunConfig

STEPS = 40


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory, rng_image) -> Path:
    root = tmp_path_factory.mktemp("hr")
    for split, shape, count in (("train", (192, 192), 3), ("val", (96, 144), 2)):
        (root / split).mkdir()
        for i in range(count):
            Image.fromarray(rng_image(*shape, seed=300 + 10 * (split == "val") + i)).save(root / split / f"{i}.png")
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "cache"))


def _config(hr_folder: Path) -> RunConfig:
    recipe = Recipe(name="tiny", stages=(Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, share=1.0, patch=16, batch=2),))
    arch = ArchConfig(channels=8, blocks=1, block="conv", down_factor=2, global_residual="nearest")
    return RunConfig(arch=arch, recipe=recipe, steps=STEPS, seed=3, data=str(hr_folder), qps=(31,), provenance={})


class Killed(Exception):
    """Stands in for SIGKILL: raised right after a validation line was written, before the next checkpoint."""


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_validation_log_lists_each_step_once_after_a_kill_and_resume(tmp_path, hr_folder, cache):
    config = _config(hr_folder)
    out = tmp_path / "killed"

    def kill_after_step_30(line: str) -> None:
        if line.startswith("[full] step 30: val"):
            raise Killed

    with pytest.raises(Killed):
        run_full(config, out, threads=1, checkpoint_every=20, validate_every=10, progress=False, log=kill_after_step_30)
    assert _steps(out / "validation.jsonl") == [10, 20, 30]  # 30 was validated, but the checkpoint is at 20

    lines: list[str] = []
    run_full(config, out, threads=1, checkpoint_every=20, validate_every=10, progress=False, log=lines.append)
    assert any("resuming from step 20/" in line for line in lines)
    steps = _steps(out / "validation.jsonl")
    assert steps == sorted(set(steps)) == [10, 20, 30]

    # The resumed log is the log of the run that was never killed, number for number.
    straight = tmp_path / "straight"
    run_full(config, straight, threads=1, checkpoint_every=20, validate_every=10, progress=False, log=lambda _: None)
    assert (out / "validation.jsonl").read_text() == (straight / "validation.jsonl").read_text()
    assert json.loads((out / "metrics.json").read_text())["history"] == [json.loads(l) for l in (out / "validation.jsonl").read_text().splitlines()]


def test_a_fresh_start_drops_validation_lines_of_a_run_killed_before_its_first_checkpoint(tmp_path, hr_folder, cache):
    out = tmp_path / "run"
    out.mkdir()
    (out / "validation.jsonl").write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "lo')  # the last line half-written
    run_full(_config(hr_folder), out, threads=1, checkpoint_every=0, validate_every=20, progress=False, log=lambda _: None)
    assert _steps(out / "validation.jsonl") == [20]


@pytest.mark.parametrize(
    "foreign",
    [{"x": 1}, torch.zeros(3), {"trainer": {"step": 5}, "history": []}],
    ids=["other-dict", "a-tensor", "partial-trainer"],
)
def test_a_loadable_but_foreign_checkpoint_is_one_clear_error(tmp_path, hr_folder, cache, foreign):
    out = tmp_path / "run"
    out.mkdir()
    torch.save(foreign, out / "checkpoint.pt")
    with pytest.raises(UserError) as caught:
        run_full(_config(hr_folder), out, threads=1, progress=False, log=lambda _: None)
    message = str(caught.value)
    assert str(out / "checkpoint.pt") in message and "not a trainers.full checkpoint" in message
    assert "--out" in message and "move that file away" in message
    assert not (out / "deploy.pt").exists()


def test_a_checkpoint_of_another_network_is_one_clear_error(tmp_path, hr_folder, cache):
    out = tmp_path / "run"
    config = _config(hr_folder)
    run_full(config, out, threads=1, checkpoint_every=20, progress=False, log=lambda _: None)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    state["trainer"]["model"] = {"head.weight": torch.zeros(1)}  # right keys around, wrong weights inside
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(UserError, match=r"checkpoint\.pt does not fit this run \(RuntimeError: .*--out"):
        run_full(config, out, threads=1, progress=False, log=lambda _: None)


def test_the_command_prints_a_foreign_checkpoint_as_one_line(tmp_path, hr_folder, cache, capsys):
    from rtsr.train import main
    from trainers.runconfig import save_run_config

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"x": 1}, out / "checkpoint.pt")
    path = save_run_config(_config(hr_folder), tmp_path / "c.toml")
    assert main(["--config", str(path), "--out", str(out), "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainers.full: error: ") and "not a trainers.full checkpoint" in err[0]
