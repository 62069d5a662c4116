"""Fixtures of the report tests: the session's smoke run and one headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from cdp_browser import CHROMIUM, Browser
from smokerun import smoke_run as _smoke_run


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _smoke_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def _browser_process():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed; run `apt-get install -y chromium` (scripts/setup.sh does)")
    with Browser(width=1400, height=1000) as b:
        yield b


@pytest.fixture()
def browser(_browser_process):
    """The session's headless Chromium, left on a blank page after each test: with a dashboard left open,
    two renderer processes kept near 100 % CPU each for the rest of the session."""
    yield _browser_process
    _browser_process.open("about:blank")


#: The hand-made run most tests use: trial -> (what it is), and the front worked out by hand.
#: Latency budget 100 ms. Front (max gain, min latency, feasible, trained): 8 (0.5 dB, 5 ms),
#: 0 (1.0 dB, 10 ms), 1 (2.0 dB, 20 ms). Trial 2 is dominated by 1; 3 is faster-than-nothing but
#: infeasible; 6 duplicates 1 and is not a point of its own.
FAKE_TRIALS = [
    {"gain": 1.0, "latency": 10.0, "preset": "urpnet", "arch": "urpnet", "qp_gains": {31: 1.5, 63: 0.5}, "weights": b"w0",
     "params": {"channels": 16, "blocks": 2}},
    {"gain": 2.0, "latency": 20.0, "arch": "casr", "qp_gains": {31: 2.5, 63: 1.5}, "weights": b"w1", "params": {"channels": 32, "blocks": 1}},
    {"gain": 1.5, "latency": 30.0, "arch": "c3", "weights": b"w2", "params": {"channels": 32, "blocks": 1}},
    {"gain": 3.0, "latency": 150.0, "feasible": False, "arch": "anunet", "weights": b"w3", "params": {"channels": 28, "blocks": 3}},
    {"status": "skipped", "latency": 200.0, "feasible": False, "arch": "pixelartai", "reason": "latency_ms over by 100",
     "params": {"channels": 32, "blocks": 2}},
    {"state": "FAIL", "status": "failed", "latency": 12.0, "arch": "cmvg", "reason": "training diverged at step 7",
     "params": {"channels": 12, "blocks": 2}},
    {"status": "duplicate", "gain": 2.0, "latency": 20.0, "arch": "casr", "duplicate_of": 1, "weights": b"w1",
     "params": {"channels": 32, "blocks": 1}},
    {"state": "RUNNING", "latency": None, "arch": "reptcn", "params": {"channels": 16, "blocks": 1}},
    {"gain": 0.5, "latency": 5.0, "preset": "lanczospp", "arch": "lanczospp", "weights": b"w8", "params": {"channels": 24, "blocks": 1}},
]
FAKE_FRONT = [8, 0, 1]


@pytest.fixture()
def fake_front() -> list[int]:
    """The Pareto trials of `fake_run`, in front order (a fixture: test modules must not import conftest,
    whose name other test folders share)."""
    return list(FAKE_FRONT)


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    from fakerun import make_run

    return make_run(tmp_path / "fake", FAKE_TRIALS, budget_trials=10, latency_budget_ms=100.0)
