"""benchmarks/worker_scaling.py reads the scheduler's log: the two must agree on its lines."""

from __future__ import annotations

from benchmarks import worker_scaling as ws
from nas.driver import SearchDriver
from nas.runstate import load_run
from nas.study import load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output
from nas.trial_record import Key, TrialStatus


class _Counting(FakeExecutor):
    """A fake that remembers every latency batch it timed (how many networks)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[int] = []

    def submit_latency(self, *, archs, **kw) -> int:
        self.batches.append(len(archs))
        return super().submit_latency(archs=archs, **kw)


def test_the_log_parser_counts_what_the_scheduler_did(tmp_path, tiny_halving_study, tiny_data, capsys):
    study = load_study(tiny_halving_study(name="scaling-log", min_steps=4)).with_overrides(
        budget__trials=12, budget__workers=2, **tiny_data)
    fake = _Counting(train=lambda payload: fake_training_output(payload, payload["arch"]["channels"] / 10),
                     latency_ms=lambda arch: [float(arch["channels"])], device_name=FAKE_DEVICE)
    assert SearchDriver(study, run_dir=tmp_path / "run", device="cpu", progress=False, executor_factory=fake.factory).run() == 0
    parsed = ws.parse_search_log(capsys.readouterr().out)

    assert len(fake.batches) >= 2, "the run needed more than one latency batch"
    assert [n for n, _ in parsed["latency_batches"]] == fake.batches
    assert parsed["drain_fills"] >= 0
    rung0 = [p for p in fake.payloads if p["rung"]["rung_steps"] == 4]
    promoted_sources = {(p["arch"]["channels"], p["arch"]["blocks"], p["arch"]["global_residual"])
                        for p in fake.payloads if p["rung"]["rung_steps"] == 8}
    assert parsed["rung0_trained"] == len(rung0)
    assert parsed["rung_results"] == len(promoted_sources) >= 1
    rungs = load_run(tmp_path / "run").rungs
    assert parsed["trained"] == sorted(r.number for r in rungs[0] if r.status == TrialStatus.OK)
    assert parsed["promoted"] == sorted((k, r.attrs[Key.SOURCE_TRIAL]) for k in rungs if k > 0 for r in rungs[k])
    assert ws.same_work(parsed, parsed).startswith("yes")
    other = {**parsed, "promoted": parsed["promoted"][1:]}
    assert ws.same_work(parsed, other).startswith("**no**")
