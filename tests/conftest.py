"""Suite-wide settings (one torch thread, so tests are fast and deterministic on a busy 2-core machine) and shared fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

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
val = "{val}"
test = "{test}"
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
cpu = {{ warmup = 0, runs = 2, time_budget_s = 5.0, input_hw = [48, 96] }}
[sampler]
name = "random"
[budget]
trials = 4
workers = 2
max_retries = 0
"""


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A data folder of small HR images, every one different (splits must be disjoint): train/ (4 of
    192x288, LR 48x72: room for the proxy recipes' 48-pixel LR patches), val/ and test/ (2 of 96x192
    each, LR 24x48); both LR sizes are divisible by every down factor up to 4.

    Why: a run evaluates every trial on val and test; on the builtin splits (11 images each) that is
    a second or more per trial, on these a few milliseconds. A cold cache's preparation of the builtin
    training set (drawing, encoding, fitting the linear baselines) takes about 8 s, of these a fraction
    of a second. Tests of the pipeline's plumbing use them (`--data`, `--val-data` / `--test-data`, a
    study's [data] table, a training config's data)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny-data")
    i = 0
    for split, count, (h, w) in (("val", 2, (96, 192)), ("test", 2, (96, 192)), ("train", 4, (192, 288))):
        (root / split).mkdir()
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(count):
            rng = np.random.default_rng(7 + i)
            base = np.stack([(xx * (1 + i) + yy * 2) % 256, (yy * 3 + 40 * i) % 256, (xx + yy) % 256], axis=-1)
            base[20:60, 40:100] = rng.integers(0, 256, 3)  # a flat patch with hard edges
            noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / split / f"{split}{i}.png")
            i += 1
    return root


@pytest.fixture(scope="session")
def tiny_eval(tiny_dataset) -> tuple[Path, Path]:
    """(val, test): `tiny_dataset`'s two evaluation folders, to evaluate on instead of the builtin splits."""
    return tiny_dataset / "val", tiny_dataset / "test"


@pytest.fixture(scope="session")
def tiny_data(tiny_dataset) -> dict[str, str]:
    """`Study.with_overrides(**tiny_data)`: every split from `tiny_dataset`.

    Why: a driver run with the fake executor trains nothing, yet loads its study's data; the builtin
    splits (loading them from the cache, scoring the linear baseline on val and test) took about a
    second per run, most of such a test's time."""
    return {f"data__{split}": str(tiny_dataset / split) for split in ("train", "val", "test")}


@pytest.fixture(scope="session")
def tiny_eval_flags(tiny_eval) -> list[str]:
    """`nas.run` flags that evaluate on `tiny_eval`'s folders."""
    val, test = tiny_eval
    return ["--val-data", str(val), "--test-data", str(test)]


@pytest.fixture()
def tiny_halving_study(tmp_path, tiny_eval):
    """Write a tiny successive-halving study (rungs min_steps and 2 x min_steps, evaluated on
    `tiny_eval`'s folders) and return its path."""
    val, test = tiny_eval

    def write(*, name: str, min_steps: int):
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY_HALVING_STUDY.format(name=name, min_steps=min_steps, val=val, test=test))
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


_HOOK = '''
"""Test hook (tests/conftest.py `sigint_inside`, `stall_inside`): act exactly inside one function of
the command, the first time any of its processes calls it."""
import importlib.abc, os, signal, sys, time


def _stall(mark):
    """Until the test kills this process, or creates the release file."""
    release, deadline = mark + ".release", time.monotonic() + 3600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)


def _act(original, mark, action):
    def hooked(*args, **kwargs):
        try:
            fd = os.open(mark + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # once, in one process
        except FileExistsError:
            return original(*args, **kwargs)
        os.close(fd)
        result = original(*args, **kwargs) if action == "stall-after" else None
        with open(mark + ".tmp", "w") as handle:  # the marker appears whole, with the pid in it
            handle.write(str(os.getpid()))
        os.replace(mark + ".tmp", mark)
        if action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal sends on Ctrl-C, to the whole process
            time.sleep(0.5)  # the signal arrives while this work is under way
            return original(*args, **kwargs)
        _stall(mark)
        return result if action == "stall-after" else original(*args, **kwargs)

    return hooked


def _patch(module, qualname, mark, action):
    owner = module
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, _act(getattr(owner, name), mark, action))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps the function when its module is first imported (not at start-up: a process that never
    imports it, e.g. one of Ray's daemons, pays nothing)."""

    def __init__(self, module_name, patch):
        self.module_name, self.patch = module_name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module_name:
            return None
        # The real spec, from the other finders. This finder stays: runpy (`python -m`) asks for a
        # spec before the import that uses one.
        others = (finder.find_spec(fullname, path, target) for finder in sys.meta_path
                  if finder is not self and hasattr(finder, "find_spec"))
        spec = next((found for found in others if found is not None), None)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _install():
    target, mark, action = (os.environ[k] for k in ("RTSR_TEST_HOOK_AT", "RTSR_TEST_HOOK_MARK", "RTSR_TEST_HOOK_DO"))
    module_name, _, qualname = target.partition(":")
    patch = lambda module: _patch(module, qualname, mark, action)  # noqa: E731
    if module_name in sys.modules:
        patch(sys.modules[module_name])
    else:
        sys.meta_path.insert(0, _PatchOnImport(module_name, patch))


if os.environ.get("RTSR_TEST_HOOK_AT"):
    _install()
'''


def _hook_inside(tmp_path_factory, action: str):
    hook = tmp_path_factory.mktemp(f"{action}-hook")
    (hook / "sitecustomize.py").write_text(_HOOK)
    repo = Path(__file__).resolve().parents[1]

    def make(target: str, *, after: bool = False) -> tuple[dict[str, str], Path]:
        if after and action != "stall":
            raise TypeError(f"after=True is for stall_inside, not {action}_inside")
        mark = hook / f"fired-{target.replace(':', '-')}"
        for stale in (mark, *(mark.with_name(mark.name + suffix) for suffix in (".claim", ".tmp", ".release"))):
            stale.unlink(missing_ok=True)
        paths = [str(hook), str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(paths), "RTSR_TEST_HOOK_AT": target, "RTSR_TEST_HOOK_MARK": str(mark),
                "RTSR_TEST_HOOK_DO": f"{action}-after" if after else action}, mark

    return make


@pytest.fixture()
def sigint_inside(tmp_path_factory):
    """`sigint_inside("trainers.cache:LRCache._one")` -> (environment, marker): run a command with that
    environment and it sends itself SIGINT (as Ctrl-C does) the first time the named function is
    called, then lets the function run on; the marker file exists once that happened.

    Why: sending SIGINT from the test when a folder appears hits whatever the command does at that
    moment; this hits the same moment every time (a `sitecustomize` on PYTHONPATH wraps the function)."""
    return _hook_inside(tmp_path_factory, "sigint")


@pytest.fixture()
def stall_inside(tmp_path_factory):
    """`stall_inside("nas.latency:measure_latency_batch")` -> (environment, marker): the first call of the
    named function, in any process of a command run with that environment, writes its pid to the
    marker file and then blocks until the test kills it or creates `<marker>.release` (then the call
    runs on); later calls run normally. With `after=True` the first call runs to its end first (e.g.
    a checkpoint is written), then blocks.

    Why: a test that kills a command while some work is in flight used to wait for a log line and
    sleep, with that work made slow enough (a 1080p latency protocol, 20-step trainings) not to
    finish first; this holds the work in flight for as long as the test needs, and the work stays as
    small as the rest of the test allows."""
    return _hook_inside(tmp_path_factory, "stall")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything alive after collection (torch, the collected tests) out of the garbage
    collector's sight (`gc.freeze`).

    Why: every full collection traverses the whole heap, and the suite's is large; latency
    measurement calls `gc.collect()` before it times (as it should), which cost about 0.15 s per
    measurement here, and Python's own full collections cost the same. Frozen objects are only
    never collected, and they live to the end of the session anyway."""
    import gc

    gc.collect()
    gc.freeze()
