"""Latency in ONNX Runtime: a runtime of the protocol (its hash, the cache key, labels, study files, CLI).

Tiny inputs and few runs: these check the plumbing and that the numbers are ORT's, not speed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nas.latency import LatencyCache, LatencyProtocol, SoftwareStack, measure_latency
from search_space.errors import UserError
from search_space.network import build, deploy
from search_space.presets import get_preset

pytest.importorskip("onnxruntime", reason='the deploy extra is not installed (pip install -e ".[deploy]")')

SMALL = LatencyProtocol.cpu(input_hw=(24, 40), warmup=0, runs=2, time_budget_s=None)
ORT = dataclasses.replace(SMALL, runtime="onnxruntime")


def test_runtime_is_part_of_the_protocol_hash_and_old_hashes_are_kept() -> None:
    assert "runtime" not in SMALL.to_dict()  # every protocol made before runtimes existed hashes as before
    assert LatencyProtocol.from_dict(SMALL.to_dict()) == SMALL
    assert ORT.to_dict()["runtime"] == "onnxruntime" and ORT.protocol_hash != SMALL.protocol_hash
    assert LatencyProtocol.from_dict(ORT.to_dict()) == ORT
    assert "ONNX Runtime" in ORT.describe() and "ONNX Runtime" not in SMALL.describe()
    with pytest.raises(UserError, match="runtime 'tensorrt' is not one of torch, onnxruntime"):
        dataclasses.replace(SMALL, runtime="tensorrt")
    with pytest.raises(UserError, match="on the cpu"):
        LatencyProtocol.challenge(runtime="onnxruntime")


def test_software_stack_names_onnxruntime_only_for_its_timings() -> None:
    torch_stack, ort_stack = SoftwareStack.current("cpu"), SoftwareStack.current("cpu", "onnxruntime")
    assert "onnxruntime" not in torch_stack.to_dict() and "onnxruntime" not in torch_stack.label()
    assert ort_stack.onnxruntime and f"onnxruntime {ort_stack.onnxruntime}" in ort_stack.label()
    assert ort_stack.key != torch_stack.key and SoftwareStack.from_dict(ort_stack.to_dict()) == ort_stack


def test_measured_in_onnxruntime_and_cached_apart_from_torch(tmp_path) -> None:
    arch = get_preset("reptcn").arch
    cache = LatencyCache(tmp_path / "latency.jsonl")
    ort_result = cache.get_or_measure(arch, device="cpu", protocol=ORT)
    assert ort_result.protocol.runtime == "onnxruntime" and ort_result.extra["runtime"] == "onnxruntime"
    assert len(ort_result.times_ms) == 2 and all(t > 0 for t in ort_result.times_ms)
    assert ort_result.params == sum(p.numel() for p in deploy(build(arch)).parameters())
    assert cache.get(arch.arch_hash, SMALL, ort_result.device_name) is None  # a torch timing is another entry
    def never(*args, **kwargs):
        raise AssertionError("a cached ORT timing must be reused")

    assert cache.get_or_measure(arch, device="cpu", protocol=ORT, measure=never) == ort_result
    torch_result = cache.get_or_measure(arch, device="cpu", protocol=SMALL)
    assert torch_result.protocol.runtime == "torch" and len(LatencyCache(tmp_path / "latency.jsonl")) == 2


def test_a_bare_module_is_timed_too() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.PixelShuffle(4))
    result = measure_latency(model, device="cpu", protocol=ORT)
    assert result.arch_hash is None and result.params == sum(p.numel() for p in model.parameters())


def test_study_files_choose_the_runtime() -> None:
    from nas.study import LatencySpec

    assert LatencySpec(cpu={"runtime": "onnxruntime"}).protocol("cpu").runtime == "onnxruntime"
    with pytest.raises(UserError, match="runtime"):
        LatencySpec(cpu={"runtime": "tvm"})


def test_cli_prints_eager_torch_beside_onnxruntime_with_spearman(capsys) -> None:
    from rtsr.latency import main

    argv = ["--preset", "reptcn", "--device", "cpu", "--runtime", "onnxruntime", "--hw", "24x40", "--runs", "2",
            "--warmup", "0", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "onnxruntime 1." in out.splitlines()[0]  # the device line names the runtime's version
    assert "eager torch ms" in out and "onnxruntime ms" in out
    assert "Spearman rank correlation, eager torch vs onnxruntime" in out


_ORT_STUDY = """
name = "ort-e2e"
seed = 0
[search]
down_factor = [2]
downsample = "unshuffle"
channels = {{ low = 8, high = 16, step = 8 }}
blocks = {{ low = 0, high = 1 }}
block = ["rep"]
activation = "relu"
reconstruction = "direct"
tail_kernel = 1
global_residual = "lanczos"
bias = false
end_block = "conv"
[data]
train = "{train}"
val = "{val}"
test = "{test}"
qps = [31, 63]
[proxy]
recipe = "proxy"
steps = 4
threads = 1
[constraints]
latency_ms = {{ cuda = 10.0, cpu = 60000.0 }}
[latency]
cpu_threads = 1
cpu = {{ warmup = 0, runs = 2, time_budget_s = 5.0, input_hw = [24, 48], runtime = "{runtime}" }}
[sampler]
name = "random"
[budget]
trials = {trials}
workers = 1
max_retries = 0
"""


@pytest.mark.slow  # two real nas.run searches (local executor, 4-step trainings, ORT exports)
def test_a_search_timed_in_onnxruntime_says_so_and_refuses_a_resume_in_torch(tmp_path, tiny_dataset, run_cli) -> None:
    import sys

    def write(runtime: str, trials: int):
        path = tmp_path / f"ort-{runtime}-{trials}.toml"
        path.write_text(_ORT_STUDY.format(runtime=runtime, trials=trials, **{s: tiny_dataset / s for s in ("train", "val", "test")}))
        return path

    run_dir = tmp_path / "run"

    def search(study):
        return run_cli([sys.executable, "-m", "nas.run", "--study", str(study), "--executor", "local", "--out", str(run_dir),
                        "--no-progress"], cwd=tmp_path, timeout=300)

    proc = search(write("onnxruntime", 2))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ONNX Runtime" in proc.stdout.split("latency:", 1)[1].splitlines()[0], "the protocol line names the runtime"
    assert "latency on cpu: " in (run_dir / "pareto.txt").read_text() and ", ONNX Runtime)" in (run_dir / "pareto.txt").read_text()
    assert "ONNX Runtime" in (run_dir / "dashboard.html").read_text()

    proc = search(write("torch", 3))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--fresh" in err[0], err
