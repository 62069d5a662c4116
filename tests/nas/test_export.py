"""`python -m nas.export`: Pareto/trial exports of a real smoke run that `trainers.full` runs unchanged,
and one clear error for each wrong choice (on hand-made runs with known trials).

The smoke run is the session's shared one (tests/reports/smokerun.py); the expected Pareto set is
recomputed here from the journal with Optuna and a plain dominance loop.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rtsr.export import main
from search_space.arch import ArchConfig
from rtsr.train import main as full_main
from trainers.recipe import load_recipe
from trainers.runconfig import load_run_config

REPO = Path(__file__).resolve().parents[2]
_HELPERS = REPO / "tests" / "reports"


def _helper(name: str):
    """A helper module of tests/reports, loaded by path (shared smoke run and hand-made runs)."""
    if name in sys.modules and Path(getattr(sys.modules[name], "__file__", "")).parent == _HELPERS:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HELPERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _helper("smokerun").smoke_run(tmp_path_factory.getbasetemp())


FAKE = [
    {"gain": 1.0, "latency": 10.0, "preset": "urpnet", "arch": "urpnet", "weights": b"weights-of-0"},  # 0 front
    {"gain": 2.0, "latency": 20.0, "arch": "casr", "weights": b"weights-of-1"},  # 1 front
    {"gain": 0.5, "latency": 30.0, "arch": "c3"},  # 2 dominated, kept no weights
    {"status": "skipped", "latency": 500.0, "feasible": False, "reason": "latency_ms over by 400"},  # 3
    {"state": "FAIL", "status": "failed", "latency": 12.0, "reason": "training diverged at step 7"},  # 4
    {"state": "RUNNING", "latency": None},  # 5
    {"status": "duplicate", "gain": 2.0, "latency": 20.0, "arch": "casr", "duplicate_of": 1, "weights": b"weights-of-1"},  # 6
]


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    return _helper("fakerun").make_run(tmp_path / "fake", FAKE, budget_trials=10)


def _journal(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(run_dir / "journal.log"))))


def _front(study) -> list:
    pool = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "ok" and t.user_attrs["feasible"]]
    return [t for t in pool if not any(
        o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and (o.values[0] > t.values[0] or o.values[1] < t.values[1]) for o in pool)]


def _images(folder: Path, n: int = 2) -> Path:
    """Smooth synthetic HR photos large enough for the full recipe's 96 px LR patches (384 px HR)."""
    from PIL import Image

    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:448, 0:512].astype(np.float32)
    for i in range(n):
        r = 128 + 100 * np.sin(xx / (17 + 5 * i)) * np.cos(yy / 23)
        g = 128 + 90 * np.sin((xx + yy) / (29 + 3 * i))
        b = 128 + 80 * np.cos(np.hypot(xx - 200, yy - 180) / (13 + i))
        Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.slow
def test_pareto_export_of_a_smoke_run_trains_with_trainers_full(smoke_run, tmp_path, monkeypatch, capsys):
    study = _journal(smoke_run)
    front = _front(study)
    assert front, "the smoke run should have at least one feasible trained trial"
    full = load_recipe("full")  # the default export recipe: every patch a multiple of 12, so u=3 designs train
    assert all(s.patch % 12 == 0 for s in full.stages)
    assert main(["--run", str(smoke_run), "--pareto"]) == 0  # `python -m nas.export ...`
    export = smoke_run / "export"
    assert sorted(p.name for p in export.glob("*.toml")) == sorted(f"trial-{t.number:05d}.toml" for t in front)
    for t in front:
        a = t.user_attrs
        cfg = load_run_config(export / f"trial-{t.number:05d}.toml")
        assert cfg.arch == ArchConfig.from_dict(a["arch"])  # the proxy recipe keeps biases as searched
        assert cfg.recipe == full and len(cfg.recipe.stages) == 2
        assert cfg.qps == (31, 63) and cfg.data == "builtin" and cfg.seed == 0
        p = cfg.provenance
        assert p["study"] == "smoke" and p["trial"] == t.number and p["arch_hash"] == a["arch_hash"]
        assert p["pareto"] is True and p["feasible"] is True
        assert p["macs"] == a["macs"] and p["params"] == a["params"]
        assert p["latency"]["value_ms"] == t.values[1] == a["latency"]["mean_ms"]
        assert p["latency"]["device"] == a["latency_device"] and p["latency"]["device_kind"] == "cpu"
        assert p["proxy_metrics"]["gain_db"] == t.values[0]
        for qp, m in a["per_qp"].items():
            assert p["proxy_metrics"]["per_qp_gain_db"][qp] == pytest.approx(m["psnr_y"] - m["lanczos_psnr_y"], abs=1e-9)
        # the held-out test numbers and the gains over the linear baseline travel with the export
        assert p["proxy_metrics"]["gain_linear_y"] == a["gain_linear_y"] and p["proxy_metrics"]["test"] == a["test"]
        assert set(p["proxy_metrics"]["test"]["per_qp"]) == {"31", "63"}
        assert p["proxy"]["steps"] == 20 and p["proxy"]["recipe"] == "proxy"
        # the proxy-trained fused weights, byte for byte, and they fit the exported arch's deploy form
        weights = export / p["weights"]
        assert weights.read_bytes() == (smoke_run / a["weights"]).read_bytes()
        import torch

        from search_space.network import build, deploy

        deploy(build(cfg.arch)).load_state_dict(torch.load(weights, weights_only=True), strict=True)

    # --format onnx: the trial's fused proxy weights as ONNX, computing in ONNX Runtime what torch does
    import onnxruntime

    t = front[0]
    assert main(["--run", str(smoke_run), "--trial", str(t.number), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert f"trial-{t.number:05d}.onnx" in capsys.readouterr().out
    cfg = load_run_config(tmp_path / "onnx" / f"trial-{t.number:05d}.toml")
    net = deploy(build(ArchConfig.from_dict(cfg.provenance["weights_arch"])))
    net.load_state_dict(torch.load(tmp_path / "onnx" / cfg.provenance["weights"], weights_only=True))
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / f"trial-{t.number:05d}.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 24, 36)  # divisible by every down factor
    with torch.no_grad():
        assert abs(session.run(None, {"lr": x.numpy()})[0] - net.eval()(x).numpy()).max() * 255 <= 0.01

    # trainers.full accepts an export unchanged; only the budget and data come from flags
    first = export / f"trial-{front[0].number:05d}.toml"
    data = _images(tmp_path / "hr", n=3)  # a flat folder: val and test are carved from it (1 image each)
    monkeypatch.setenv("RTSR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "full"
    argv = ["--config", str(first), "--steps", "4", "--data", str(data), "--out", str(out), "--threads", "1", "--no-progress"]
    assert full_main(argv) == 0, capsys.readouterr().err  # `python -m trainers.full ...`, in-process
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["config_hash"]["recipe"] == full.hash
    assert all((out / name).is_file() for name in ("deploy.pt", "deploy.pt2", "deploy.onnx"))
    ran = load_run_config(out / "config.toml")
    assert ran.arch == load_run_config(first).arch and ran.provenance["trial"] == front[0].number


def test_export_chosen_trials_with_recipe_and_steps(fake_run, capsys):
    assert main(["--run", str(fake_run), "--trial", "0", "--trial", "6", "--trial", "2", "--recipe", "l1_then_l2", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "trial    0 -> " in out and "trainers.full --config" in out
    export = fake_run / "export"
    assert sorted(p.name for p in export.iterdir()) == ["trial-00000.pt", "trial-00000.toml", "trial-00002.toml", "trial-00006.pt", "trial-00006.toml"]
    c0 = load_run_config(export / "trial-00000.toml")
    assert c0.recipe == load_recipe("l1_then_l2") and c0.steps == 1000
    assert c0.provenance["preset"] == "urpnet" and c0.provenance["pareto"] is True
    assert (export / "trial-00000.pt").read_bytes() == b"weights-of-0"
    c6 = load_run_config(export / "trial-00006.toml")
    assert c6.provenance["duplicate_of"] == 1 and c6.provenance["status"] == "duplicate"
    assert (export / "trial-00006.pt").read_bytes() == b"weights-of-1"
    c2 = load_run_config(export / "trial-00002.toml")
    assert c2.provenance["pareto"] is False and "weights" not in c2.provenance  # trial 2 kept no weights
    assert "no proxy weights kept" in out


def test_default_recipe_is_the_shipped_full_recipe(fake_run):
    assert main(["--run", str(fake_run), "--trial", "0"]) == 0  # URPNet: u = 2 divides every patch of full.toml
    cfg = load_run_config(fake_run / "export" / "trial-00000.toml")
    assert cfg.recipe == load_recipe("full") and cfg.steps == 20000  # RunConfig's default budget


def test_patch_must_fit_the_down_factor(fake_run, tmp_path, capsys):
    """Trial 1 is CASR (u = 3): a 50 px patch cannot be pixel-unshuffled by 3, so export refuses."""
    recipe = tmp_path / "p50.toml"
    recipe.write_text('name = "p50"\n[[stages]]\nloss = { l1 = 1.0 }\nlr = 1e-3\npatch = 50\n')
    assert main(["--run", str(fake_run), "--trial", "1", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "recipe 'p50' trains on LR patches (stage 1: 50 px) that trial 1's down factor 3 does not divide" in err
    assert main(["--run", str(fake_run), "--trial", "0", "--recipe", str(recipe)]) == 0  # u = 2 divides 50


def test_pareto_export_of_a_hand_made_run(fake_run, tmp_path):
    assert main(["--run", str(fake_run), "--pareto", "--out", str(tmp_path / "x"), "--recipe", "l1_then_l2"]) == 0
    assert sorted(p.name for p in (tmp_path / "x").glob("*.toml")) == ["trial-00000.toml", "trial-00001.toml"]
    assert not (fake_run / "export").exists()


def test_exported_arch_is_the_one_that_was_timed(tmp_path):
    """A proxy recipe that removed biases deployed (and timed) a bias-free net: export that, unless
    the full-training recipe removes the biases itself."""
    from search_space.presets import get_preset

    trained = get_preset("urpnet").arch  # u = 2: fits full.toml's and casr.toml's patches
    biased = trained.__class__.from_dict({**trained.to_dict(), "bias": True})
    # trained with biases, deployed (and timed) without
    run = _helper("fakerun").make_run(tmp_path / "r", [
        {"gain": 1.0, "latency": 5.0, "arch": "urpnet", "attrs": {"arch": biased.to_dict(), "deploy_arch": trained.to_dict()}}])
    assert main(["--run", str(run), "--trial", "0"]) == 0
    assert load_run_config(run / "export" / "trial-00000.toml").arch == trained  # full.toml keeps biases
    assert main(["--run", str(run), "--trial", "0", "--recipe", "casr", "--out", str(tmp_path / "casr")]) == 0
    assert load_run_config(tmp_path / "casr" / "trial-00000.toml").arch == biased  # casr.toml removes them


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trial", "42"], r"trial 42 is not in run .*\(trials 0\.\.6\)"),
        (["--trial", "4"], r"trial 4 of run .* failed \(training diverged at step 7\); there is nothing to export"),
        (["--trial", "3"], r"trial 3 of run .* was not trained \(it broke a constraint: latency_ms over by 400\)"),
        (["--trial", "5"], r"trial 5 of run .* has not finished yet \(running\)"),
        (["--trial", "0", "--trial", "4"], r"trial 4 of run .* failed"),  # all checked before anything is written
        (["--trial", "0", "--recipe", "nope"], r"unknown recipe 'nope'"),
        (["--trial", "0", "--steps", "0"], r"--steps must be a positive integer"),
    ],
)
def test_wrong_choices_are_one_clear_error(fake_run, capsys, args, message):
    import re

    assert main(["--run", str(fake_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas.export: error: ") and re.search(message, err), err
    assert "Pareto trials: 0, 1" in err or "trial 42" in err or "recipe" in err or "--steps" in err
    assert not (fake_run / "export").exists()


def test_no_run_dir_and_empty_front(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "missing"), "--pareto"]) == 2
    assert "run directory" in capsys.readouterr().err
    run = _helper("fakerun").make_run(tmp_path / "empty", [
        {"state": "FAIL", "status": "failed", "latency": 3.0, "reason": "boom"},
        {"gain": 4.0, "latency": 300.0, "feasible": False},  # trained but infeasible: not on the front
    ])
    assert main(["--run", str(run), "--pareto"]) == 2
    err = capsys.readouterr().err
    assert "has no feasible trained trial yet, so its Pareto set is empty (1 failed, 1 ok)" in err and "--trial N" in err
    assert not (run / "export").exists()
