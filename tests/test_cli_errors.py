"""The long-running commands (`nas.run`, `trainers.full`) end in one line, never a traceback.

An unusable --out, Ctrl-C before the trial loop (data preparation), and data warnings: each is one
line on stderr, and what a command writes into a log (stderr not a terminal) has no progress-bar
frames.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_space.arch import ArchConfig
from trainers.losses import LossSpec
from trainers.recipe import Recipe, Stage
from trainers.runconfig import RunConfig, save_run_config

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted; nothing was lost: rerun the same command to resume"


def _config(tmp_path: Path, *, data: str, steps: int = 4) -> Path:
    stage = dict(patch=16, batch=2, grad_clip=1.0)
    recipe = Recipe(name="tiny", stages=(Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, share=1.0, **stage),))
    arch = ArchConfig(channels=8, blocks=1, block="conv", down_factor=2, global_residual="nearest")
    config = RunConfig(arch=arch, recipe=recipe, steps=steps, seed=7, data=data, qps=(31, 63), provenance={})
    return save_run_config(config, tmp_path / "tiny.toml")


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "RTSR_CACHE_DIR": str(cache), "PYTHONWARNINGS": ""}


# -- an unusable --out --------------------------------------------------------------------------------


def _unusable(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An --out that cannot be used, and the words the error must say about it."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    if kind == "file":
        return a_file, "is a file"
    if kind == "under_a_file":
        return a_file / "run", f"{a_file} is a file"
    if kind == "proc":
        return Path("/proc/rtsr-nas-out"), "cannot be created"
    assert kind == "read_only"
    return Path("/sys"), "read-only"


@pytest.mark.parametrize("kind", ["file", "under_a_file", "proc", "read_only"])
@pytest.mark.parametrize("command", ["nas.run", "trainers.full"])
def test_an_unusable_out_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, command, kind):
    if kind in ("proc", "read_only") and not sys.platform.startswith("linux"):
        pytest.skip("/proc and /sys are Linux folders")
    out, reason = _unusable(tmp_path, kind)
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    if command == "nas.run":
        from rtsr.search import main

        code = main(["--study", "smoke", "--executor", "local", "--no-progress", "--out", str(out)])
    else:
        from rtsr.train import main

        code = main(["--config", str(_config(tmp_path, data="builtin")), "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: --out {out} "), err
    assert reason in lines[0] and "pass --out a folder you can write to" in lines[0]
    assert not (tmp_path / "cache").exists(), "the check must come before any data is prepared"
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_read_only_file_system_is_named(tmp_path, monkeypatch):
    from rtsr._session import check_out_dir
    from search_space.errors import UserError

    def refuse(self, data):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(UserError, match=r"^--out .*/ro is not writable \(read-only file system\); pass --out a folder"):
        check_out_dir(tmp_path / "ro")


def test_a_usable_out_is_created_and_left_without_the_probe(tmp_path):
    from rtsr._session import check_out_dir

    check_out_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


# -- Ctrl-C during data preparation, then the same command again ----------------------------------------
#
# The moment is hit exactly (`sigint_inside`, tests/conftest.py: the command sends itself SIGINT the
# first time the named function runs), not by polling for a folder and hoping: that version once sent
# SIGINT, saw nas.run ignore it and finish the whole run with exit 0.

#: Each stage of nas.run's data preparation, in order: the builtin images are drawn (main thread), the
#: LR images encoded (a thread pool: the main thread waits), the linear baseline fitted (BLAS).
DATA_STAGES = ("trainers.builtin:_plan", "trainers.cache:LRCache._one", "trainers.linear_baseline:fit_filter")


def _ctrl_c_as_at_a_terminal() -> None:
    """In the child, before exec: SIGINT back to its default action.

    Why: a process started in the background by a non-interactive shell (`pytest ... &`, CI scripts)
    inherits SIGINT *ignored*, and so does every command it starts; Python then installs no
    KeyboardInterrupt handler and a command rightly ignores Ctrl-C, as a background job should. That,
    not the command, is what once made this test see `nas.run` finish with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted(cmd: list[str], env: dict[str, str], marker: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, start_new_session=True,
                          preexec_fn=_ctrl_c_as_at_a_terminal)
    assert marker.is_file(), f"the command never reached the hooked function:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def _check_one_line_130(stopped: subprocess.CompletedProcess, command: str) -> None:
    assert stopped.returncode == 130, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == f"{command}: {INTERRUPTED}"
    assert not any(line.startswith("data:") for line in stopped.stdout.splitlines()), "data was ready: moment missed"


def _complete_trials(run_dir: Path) -> int:
    import json

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(run_dir / "journal.log"))))
    return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_ctrl_c_at_every_stage_of_data_preparation_is_one_line_and_the_rerun_completes(tmp_path, sigint_inside, tiny_eval_flags):
    """nas.run interrupted in each stage of data preparation in turn (each rerun gets one stage further):
    exit 130 with one line, nothing half-written; then the same command completes its budget.
    (This was also test_fault_injection.py's Ctrl-C case: one run now asserts both.) The builtin
    training set is prepared for real (its stages are the ones interrupted); val and test are tiny."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    cache.mkdir()
    cmd = [sys.executable, "-m", "nas.run", "--study", "smoke", "--executor", "local", "--device", "cpu",
           "--trials", "2", "--steps", "4", *tiny_eval_flags, "--out", str(out)]
    for stage in DATA_STAGES:
        hook, marker = sigint_inside(stage)
        stopped = _interrupted(cmd, {**_env(cache), **hook}, marker)
        _check_one_line_130(stopped, "nas.run")
        assert _half_written(cache, out) == [], stage
        assert not (out / "journal.log").exists() or _complete_trials(out) == 0

    # The same command again (stderr is a pipe, as in `cmd > log 2>&1`): it completes, and neither
    # stream holds a progress bar's carriage-return frames.
    again = subprocess.run(cmd, cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "\r" not in again.stderr and "\r" not in again.stdout
    assert "Traceback" not in again.stderr
    assert "trial " in again.stdout and (out / "run.json").is_file()
    assert _complete_trials(out) == 2


def _half_written(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_trainers_full_ctrl_c_while_encoding_is_one_line_and_the_rerun_completes(tmp_path, sigint_inside, tiny_dataset):
    cache, out = tmp_path / "cache", tmp_path / "out"
    cache.mkdir()
    cmd = [sys.executable, "-m", "trainers.full", "--config", str(_config(tmp_path, data=str(tiny_dataset))), "--threads", "1",
           "--checkpoint-every", "2", "--out", str(out)]
    hook, marker = sigint_inside("trainers.cache:LRCache._one")
    stopped = _interrupted(cmd, {**_env(cache), **hook}, marker)
    _check_one_line_130(stopped, "trainers.full")
    assert _half_written(cache, out) == []

    again = subprocess.run(cmd, cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "\r" not in again.stderr and "\r" not in again.stdout
    assert "Traceback" not in again.stderr
    assert (out / "deploy.pt").is_file()
    assert "[full] step 2/4: loss" in again.stdout  # plain lines where a bar would have been


# -- data warnings: one line each, once; the summary counts what was skipped ----------------------------


@pytest.mark.slow
def test_data_warnings_are_one_line_each_and_the_summary_counts_the_skipped(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, count in (("train", 3), ("val", 2)):
        (data / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (96, 144, 3), dtype=np.uint8)).save(data / split / f"{i}.png")
    (data / "train" / "broken.png").write_bytes(b"not an image")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / "train" / "tiny.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trainers.full", "--config", str(_config(tmp_path, data=str(data))), "--threads", "1",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("trainers.full: warning: ") for line in lines), proc.stderr
    assert len(set(lines)) == len(lines)
    assert sum("broken.png" in line for line in lines) == 1 and sum("tiny.png" in line for line in lines) == 1
    assert "DataWarning" not in proc.stderr and ".py:" not in proc.stderr  # no source file, line or echo
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("[full] data: "))
    assert "skipped 2 images (train: broken.png, tiny.png)" in summary

    import json

    record = json.loads((out / "metrics.json").read_text())["data"]
    assert record["skipped"] == {"train": ["broken.png", "tiny.png"], "val": [], "test": []}
    assert record["skipped_count"] == 2


def test_a_repeated_warning_is_shown_once_and_other_warnings_keep_their_display():
    from rtsr._session import one_line_warnings
    from trainers.cache import CacheWarning
    from trainers.imageio import DataWarning

    stream = io.StringIO()
    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        with one_line_warnings("nas.run", stream=stream):
            for _ in range(2):  # e.g. the same folder read for two splits
                warnings.warn("folder x: skipping a.png: corrupt", DataWarning, stacklevel=1)
            warnings.warn("folder x: skipping a.png: corrupt", DataWarning, stacklevel=1)  # another source line
            warnings.warn("LR cache entry y is damaged; encoding it again", CacheWarning, stacklevel=1)
            warnings.warn("something of torch's", UserWarning, stacklevel=1)
    assert stream.getvalue().splitlines() == [
        "nas.run: warning: folder x: skipping a.png: corrupt",
        "nas.run: warning: LR cache entry y is damaged; encoding it again",
    ]
    assert [str(w.message) for w in others] == ["something of torch's"]


def test_a_summary_with_nothing_skipped_says_zero(tmp_path):
    from trainers.proxy import ProxyData

    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    data = ProxyData.load(tmp_path, qps=(31,), cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert data.summary().endswith("; skipped 0 images")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_trial_bar_is_drawn_on_a_terminal_only():
    from nas.progress import TrialLog

    for stream, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        log = TrialLog(out=io.StringIO(), progress=True, bar_stream=stream)
        log.open_bar(done=0, total=3)
        log.close_bar()
        assert log.progress is drawn and ("trials" in stream.getvalue()) is drawn


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_command(capsys):
    """The Ctrl-C that `nas.run` once ignored (issue 22, item 4): a signal handled while an object's
    `__del__` runs raises KeyboardInterrupt there, where Python can only report it as "Exception
    ignored" and goes on. `run_command` must stop anyway: exit 130, one line, within moments."""
    from rtsr._session import INTERRUPTED, INTERRUPTED_CODE, run_command

    class Finalized:
        def __del__(self) -> None:
            raise KeyboardInterrupt  # what a SIGINT arriving during this finalizer does

    steps = []
    before = sys.unraisablehook

    def work() -> int:
        Finalized()  # dropped at once (reference count 0): its __del__ runs here and the interrupt is "ignored"
        end = time.monotonic() + 5.0
        while time.monotonic() < end:  # the rest of the work (5 s), which must not run to the end
            steps.append(1)
        steps.append("finished")
        return 0

    started = time.monotonic()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground process (see above)
    try:
        code = run_command("nas.run", work)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == INTERRUPTED_CODE
    assert "finished" not in steps and time.monotonic() - started < 2.0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"nas.run: {INTERRUPTED}"
    assert sys.unraisablehook is before  # restored for whatever runs next
