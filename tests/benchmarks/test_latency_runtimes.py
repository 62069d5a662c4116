"""benchmarks/latency_runtimes.py: the report's table and rank correlations from a `nas.latency --out` document."""

from __future__ import annotations

from benchmarks import latency_runtimes as lr


def _doc() -> dict:
    nets = [("a", 10.0, 30.0, 1.0), ("b", 20.0, 20.0, 2.0), ("c", 40.0, 10.0, 3.0), ("d", 50.0, 5.0, None)]
    return {
        "generated": "2099-01-01T00:00:00+00:00", "device_name": "cpu: Test CPU (1 thread)", "software": {"torch": "x"},
        "protocol_description": "tiny",
        "results": [{"name": n, "table1_runtime_ms": t} for n, _, _, t in nets],
        "runtime_comparison": {"runtime": "onnxruntime", "networks": [
            {"name": n, "eager_torch_ms": e, "onnxruntime_ms": o} for n, e, o, _ in nets]},
    }


def test_the_report_ranks_the_runtimes_against_each_other_and_table1():
    md = lr.render(_doc())
    assert "| a | 10.0 | 30.0 | 3.00 | 1.000 |" in md
    assert "| d | 50.0 | 5.0 | 0.10 | - |" in md, "a preset without a Table 1 runtime is listed, not ranked against it"
    # ORT's order is eager torch's reversed: rho = -1 over all 4; vs Table 1 (a, b, c only) eager +1, ORT -1.
    assert "eager torch vs onnxruntime **-1.000**" in md
    assert "vs Table 1 (n = 3): eager torch +1.000, onnxruntime -1.000" in md
