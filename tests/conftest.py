"""Suite-wide settings (one torch thread, so tests are fast and deterministic on a busy 2-core machine) and shared fixtures."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_HALVING_STUDY = """
name = "{name}"
seed = 0
[search]
down_factor = [2]
downsample = "unshuffle"
channels = {{ low = 8, high = 16, step = 4 }}
blocks = {{ low = 0, high = 2 }}
block = ["rep"]
activation = "relu"
reconstruction = "direct"
tail_kernel = 1
global_residual = ["lanczos", "linear"]
bias = false
end_block = "conv"
[data]
train = "builtin"
qps = [31, 63]
[proxy]
recipe = "proxy_wsd"
threads = 1
[halving]
min_steps = {min_steps}
eta = 2
rungs = 2
decay = 0.5
top_seeds = 2
[constraints]
latency_ms = {{ cuda = 10.0, cpu = 60000.0 }}
[latency]
cpu_threads = 1
cpu = {{ warmup = 1, runs = 2, time_budget_s = 5.0, input_hw = [144, 288] }}
[sampler]
name = "random"
[budget]
trials = 4
workers = 2
max_retries = 0
"""


@pytest.fixture()
def tiny_halving_study(tmp_path):
    """Write a tiny successive-halving study (rungs min_steps and 2 x min_steps) and return its path."""

    def write(*, name: str, min_steps: int):
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY_HALVING_STUDY.format(name=name, min_steps=min_steps))
        return path

    return write


def _run_in_own_session(cmd: list[str], *, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` that, on timeout, kills the command's whole
    process group (its worker processes too) and fails the test with what the command printed.

    Why: a command that starts a process pool leaves workers holding its output pipes; killing only
    the command can leave a test waiting on them."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen_kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{' '.join(map(str, cmd[:6]))} ... ran over {timeout:g} s and was killed\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture()
def run_cli():
    """Run a command like `subprocess.run(..., capture_output=True, text=True, timeout=...)`; on timeout its
    whole process group is killed and the test fails with the command's output."""
    return _run_in_own_session


_SIGINT_HOOK = '''
"""Test hook (tests/conftest.py `sigint_inside`): Ctrl-C exactly inside one function of the command."""
import os, signal, sys, time, importlib

def _install():
    target, mark = os.environ["RTSR_TEST_SIGINT_AT"], os.environ["RTSR_TEST_SIGINT_MARK"]
    module_name, _, qualname = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def interrupted(*args, **kwargs):
        try:
            fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # once, in one process
        except FileExistsError:
            return original(*args, **kwargs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGINT)  # what a terminal sends on Ctrl-C, to the whole process
        time.sleep(0.5)  # the signal arrives while this work is under way
        return original(*args, **kwargs)

    setattr(owner, name, interrupted)

if os.environ.get("RTSR_TEST_SIGINT_AT"):
    _install()
'''


@pytest.fixture()
def sigint_inside(tmp_path_factory):
    """`sigint_inside("trainers.cache:LRCache._one")` -> (environment, marker): run a command with that
    environment and it sends itself SIGINT (as Ctrl-C does) the first time the named function is
    called, then lets the function run on; the marker file exists once that happened.

    Why: sending SIGINT from the test when a folder appears hits whatever the command does at that
    moment; this hits the same moment every time (a `sitecustomize` on PYTHONPATH wraps the function)."""
    from pathlib import Path

    hook = tmp_path_factory.mktemp("sigint-hook")
    (hook / "sitecustomize.py").write_text(_SIGINT_HOOK)
    repo = Path(__file__).resolve().parents[1]

    def make(target: str) -> tuple[dict[str, str], Path]:
        mark = hook / f"fired-{target.replace(':', '-')}"
        mark.unlink(missing_ok=True)
        paths = [str(hook), str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(paths), "RTSR_TEST_SIGINT_AT": target, "RTSR_TEST_SIGINT_MARK": str(mark)}, mark

    return make
