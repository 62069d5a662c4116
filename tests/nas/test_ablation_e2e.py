"""Ablation studies: the `[ablation]` table, the driver's fixed (arm, seed) trials, and every shipped
ablation end to end through the real driver and a real Ray runtime, at smoke size.

The first part is fast: study validation, and the driver with an in-process fake executor (no Ray)
for arm/seed/recipe routing, eval-time arms, retries and resume.

Each study in `nas/studies/ablations/` is copied with two seeds and a tiny latency protocol and run
with `--steps 8`-sized training (the gains are meaningless; the plumbing is what is checked): every
(arm, seed) pair becomes exactly one trained trial with the arm's architecture, recipe and seed, and
the ablation report has one row per arm and one verdict per claim. All studies share one Ray session
(started once for the module) to keep the whole file within a few minutes on a 2-core CPU.

Results are read back through Optuna from each run's journal, independently of the report code, and
the report's numbers are recomputed here from those trials.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import pytest

from search_space.configio import parse_toml

STEPS = 8



# --------------------------------------------------------------------------------------------------
# The [ablation] table
# --------------------------------------------------------------------------------------------------

BASE = """
name = "abl"
[proxy]
steps = 4
[latency]
cpu = { input_hw = [48, 96], runs = 1, warmup = 0 }
[ablation]
reference = "ref"
seeds = 2
[[ablation.arms]]
name = "ref"
preset = "urpnet"
[[ablation.arms]]
name = "wide"
overrides = { channels = 24 }
[[ablation.arms]]
name = "l1"
recipe = "l1_only"
[[ablation.arms]]
name = "half"
eval_dtype = "float16"
[[ablation.claims]]
arm = "wide"
metric = "delta_y"
expect = "increase"
"""


def _study(text: str = BASE, **replace: str):
    from nas.study import Study

    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return Study.from_dict(parse_toml(text))


def test_ablation_table_resolves_arms_and_fixes_the_budget():
    from search_space.presets import get_preset

    study = _study()
    ab = study.ablation
    assert ab.seeds == (0, 1) and study.budget.trials == 8 == ab.n_trials
    urpnet = get_preset("urpnet").arch
    assert ab.arch_of("ref") == urpnet and ab.arch_of("l1") == urpnet and ab.arch_of("half") == urpnet
    assert ab.arch_of("wide").channels == 24 and ab.arch_of("wide").block == urpnet.block
    assert ab.recipe_of("l1", "proxy") == "l1_only" and ab.recipe_of("wide", "proxy") == "proxy"
    # seed by seed, the reference first, eval-time arms after their weights' arm
    assert ab.trial_order()[:4] == [("ref", 0), ("wide", 0), ("l1", 0), ("half", 0)]
    assert ab.claims[0].low == 0 and ab.claims[0].high == math.inf and ab.claims[0].unit == "dB"
    # round trip and identity: a search study's dict has no ablation key at all
    from nas.study import Study

    assert Study.from_dict(study.to_dict()) == study
    strict = json.dumps(study.to_dict(), allow_nan=False)  # run.json and hashes stay strict JSON (no inf)
    assert Study.from_dict(json.loads(strict)) == study and '"high": "inf"' in strict
    assert study.with_overrides(proxy__steps=9).budget.trials == 8
    assert _study(**{"seeds = 2": "seeds = 3"}).identity_hash != study.identity_hash


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ('reference = "ref"', 'reference = "nope"', r"reference is 'nope'; it must name an arm: ref, wide, l1, half"),
        ('seeds = 2', 'seeds = [0, 0]', r"seeds repeat"),
        ('seeds = 2', 'seeds = 0', r"seeds must be a count >= 1"),
        ('[ablation]', '[budget]\ntrials = 3\n[ablation]', r"trials = 3 does not apply to an ablation.*4 x 2 = 8"),
        ('[ablation]', '[warm_start]\npresets = ["casr"]\n[ablation]', r"\[warm_start\] does not apply to an ablation"),
        ('[ablation]', '[constraints]\nmacs_g = 3.0\n[ablation]', r"\[constraints\] do not apply to an ablation"),
        ('overrides = { channels = 24 }', 'overrides = { chanels = 24 }', r"'wide': overrides: unknown key\(s\) 'chanels'; valid keys: .*channels"),
        ('overrides = { channels = 24 }', 'overrides = { channels = 0 }', r"'wide': ArchConfig.channels: must be an integer >= 1"),
        ('overrides = { channels = 24 }', 'overrides = { channels = 16 }', r"'wide' is identical to the reference arm"),
        ('preset = "urpnet"', 'preset = "urpnet2"', r"unknown preset 'urpnet2'"),
        ('preset = "urpnet"', 'recipe = "proxy"', r"the reference arm 'ref' must give preset or arch"),
        ('eval_dtype = "float16"', 'eval_dtype = "float16"\nrecipe = "l1_only"', r"'half': an eval_dtype arm re-evaluates .* cannot also set"),
        ('eval_dtype = "float16"', 'eval_dtype = "bfloat16"', r"eval_dtype is 'bfloat16'; choose one of 'float32', 'float16'"),
        ('name = "half"', 'name = "ref"', r"arm names repeat: 'ref'"),
        ('name = "half"', 'name = "a b"', r"name must be a non-empty name"),
        ('name = "half"', 'nom = "half"', r"\[\[ablation.arms\]\]: unknown key\(s\) 'nom'"),
        ('metric = "delta_y"', 'metric = "psnr"', r"metric is 'psnr'; choose one of gain_y, delta_y, .* or gain_qpNN"),
        ('metric = "delta_y"', 'metric = "gain_qp47"', r"metric 'gain_qp47': QP 47 is not evaluated"),
        ('arm = "wide"', 'arm = "ref"', r"arm is 'ref'; it must name a non-reference arm"),
        ('arm = "wide"', '', r"about delta_y: name its arm \(one of wide, l1, half\)"),
        ('expect = "increase"', 'expect = "increase"\nlow = -0.1', r"expect = 'increase' needs low >= 0"),
        ('expect = "increase"', 'expect = "decrease"\nhigh = 0.2', r"expect = 'decrease' needs high <= 0"),
        ('expect = "increase"', 'expect = "equal"\nlow = 0.1\nhigh = 0.2', r"'equal' needs a band that contains 0"),
        ('expect = "increase"', 'expect = "same"', r"expect is 'same'; choose one of 'increase', 'decrease', 'equal'"),
    ],
)
def test_bad_ablation_tables_give_one_clear_error(old, new, pattern):
    from search_space.errors import UserError

    with pytest.raises(UserError, match=pattern):
        _study(**{old: new.replace("\\n", "\n")})


def test_flags_that_do_not_apply_to_an_ablation_are_refused(tmp_path):
    import argparse

    from rtsr.search import run_from_args
    from search_space.errors import UserError

    path = tmp_path / "abl.toml"
    path.write_text(BASE, encoding="utf-8")
    for flag, pattern in (("trials", r"--trials does not apply to an ablation.*4 x 2 = 8"), ("seed", r"--seed does not apply")):
        args = argparse.Namespace(study=str(path), out=str(tmp_path / "run"), **{flag: 3})
        with pytest.raises(UserError, match=pattern):
            run_from_args(args)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# The driver with a fake executor (no Ray): routing, eval-time arms, retries, resume
# --------------------------------------------------------------------------------------------------


def _fake_latency_ms(arch: dict) -> list[float]:
    ms = float(arch["channels"]) + (1.0 if arch["bias"] else 0.0)
    return [ms, ms + 0.5]


def _fake_train(payload: dict) -> dict:
    """Seed-dependent fake metrics and real fused weights of the arch (so an eval-time arm can
    re-evaluate them)."""
    import io

    import torch

    from nas.testing import fake_training_output
    from search_space.arch import ArchConfig
    from search_space.network import build, deploy

    torch.manual_seed(payload["seed"])
    fused = deploy(build(ArchConfig.from_dict(payload["arch"])))
    buf = io.BytesIO()
    torch.save(fused.state_dict(), buf)
    g = payload["seed"] / 10 + payload["arch"]["channels"] / 100 + (0.5 if payload["recipe"]["name"] == "l1_only" else 0.0)
    return fake_training_output(payload, g, weights=buf.getvalue())


@pytest.fixture()
def fake():
    """The shared in-process executor; `crash_once` makes the first attempt of some (recipe, seed) die."""
    from nas.testing import FakeExecutor

    crash_once: set[tuple[str, int]] = set()

    def crash(payload: dict) -> bool:
        key = (payload["recipe"]["name"], payload["seed"])
        if key in crash_once:
            crash_once.discard(key)
            return True
        return False

    executor = FakeExecutor(train=_fake_train, latency_ms=_fake_latency_ms, crash=crash, device_name="cpu: fake (1 thread)")
    executor.crash_once = crash_once  # type: ignore[attr-defined]
    return executor


def _drive(study, run_dir: Path, executor) -> int:
    from nas.driver import SearchDriver
    from rtsr.search import run_and_report

    return run_and_report(SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=executor.factory))


def test_driver_runs_each_arm_and_seed_once_with_its_own_settings(tmp_path, fake, tiny_data, capsys):
    from optuna.trial import TrialState

    from trainers.recipe import load_recipe

    study = _study(**{'name = "l1"\nrecipe = "l1_only"': 'name = "l1"\nrecipe = "l1_only"\noverrides = { bias = true }'})
    study = study.with_overrides(**tiny_data)  # the fp16 arm's evaluations are real: on tiny images they take milliseconds
    fake.crash_once.add(("proxy", 1))  # the first seed-1 training of the proxy recipe dies once
    assert _drive(study, tmp_path / "run", fake) == 0
    trials = _load(tmp_path / "run").get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted((t.params["arm"], t.params["seed"]) for t in done) == sorted((a, s) for a in ("ref", "wide", "l1", "half") for s in (0, 1))
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["requeued"] is True and failed[0].user_attrs["arm"] == "ref"
    retry = next(t for t in done if t.user_attrs.get("retry_of") == failed[0].number)
    assert (retry.params, retry.user_attrs["arm"], retry.user_attrs["seed"]) == (failed[0].params, "ref", 1)

    # each training got its arm's recipe and its seed; the eval-time arm trained nothing itself
    trained = sorted((load_recipe_name(p), p["seed"], p["arch"]["channels"]) for p in fake.payloads)
    assert trained == sorted([("proxy", 0, 16), ("proxy", 1, 16), ("proxy", 1, 16), ("proxy", 0, 24), ("proxy", 1, 24),
                              ("l1_only", 0, 16), ("l1_only", 1, 16)])
    by = {(t.user_attrs["arm"], t.user_attrs["seed"]): t for t in done}
    assert by[("l1", 0)].user_attrs["recipe_hash"] == load_recipe("l1_only").hash
    assert by[("wide", 1)].values[0] == pytest.approx(0.1 + 0.24)
    assert by[("l1", 1)].user_attrs["latency_ms"] == 17.25 and by[("ref", 1)].user_attrs["latency_ms"] == 16.25  # bias costs 1 ms here

    # the fp16 arm: the reference's weights of the same seed, evaluated for real in float16. Seed 0:
    # the reference trained them. Seed 1: the reference's training crashed, so the waiting fp16 arm
    # trained the same (arch, recipe, seed) itself, and the reference's retry re-evaluated those weights.
    assert by[("half", 0)].user_attrs["weights_of"] == by[("ref", 0)].number and "weights_of" not in by[("ref", 0)].user_attrs
    assert by[("half", 1)].user_attrs["weights_of"] == by[("half", 1)].number == by[("ref", 1)].user_attrs["weights_of"]
    assert by[("ref", 1)].user_attrs["eval_dtype_used"] == "float32"
    for seed in (0, 1):
        half, ref = by[("half", seed)], by[("ref", seed)]
        assert half.user_attrs["weights"] == ref.user_attrs["weights"]
        assert half.user_attrs["eval_dtype_used"] == "float16" and half.user_attrs["eval_device"] == "cpu"
        assert half.user_attrs["latency_ms"] == ref.user_attrs["latency_ms"]
        gains = [m["gain_y"] for m in half.user_attrs["per_qp"].values()]
        assert len(gains) == 2 and all(math.isfinite(g) for g in gains)
        assert half.values[0] == pytest.approx(sum(gains) / 2)
    out = capsys.readouterr().out
    assert "arm half seed 0 (float16)" in out and "trials done: 8 of 8" in out

    # resume: nothing left to do, nothing re-trained
    n_payloads = len(fake.payloads)
    assert _drive(study, tmp_path / "run", fake) == 0
    assert len(fake.payloads) == n_payloads and len(_load(tmp_path / "run").trials) == len(trials)


def load_recipe_name(payload: dict) -> str:
    return payload["recipe"]["name"]


def test_an_orphaned_trial_is_requeued_with_its_arm_and_seed(tmp_path, fake, tiny_data):
    from optuna.trial import TrialState

    study = _study().with_overrides(**tiny_data)  # the fp16 arm's evaluations are real: on tiny images they take milliseconds
    run_dir = tmp_path / "run"
    assert _drive(study.with_overrides(), run_dir, fake) == 0
    # simulate a driver killed mid-trial: a RUNNING trial with ablation params in the journal
    s = _load(run_dir)
    s.enqueue_trial({"arm": "wide", "seed": 1}, user_attrs={"arm": "wide", "seed": 1})
    orphan = s.ask()
    assert orphan.suggest_categorical("arm", ["ref", "wide", "l1", "half"]) == "wide"
    assert _drive(study, run_dir, fake) == 0
    t = _load(run_dir).trials[orphan.number]
    assert t.state == TrialState.FAIL and t.user_attrs["requeued"] is True
    again = _load(run_dir).trials[-1]
    assert again.user_attrs["retry_of"] == orphan.number and again.user_attrs["arm"] == "wide"


def test_deployed_arch_follows_bias_removal():
    from nas.deployment import deployed_arch
    from search_space.presets import get_preset
    from trainers.recipe import load_recipe

    casr_bias = get_preset("casr").arch.__class__.from_dict({**get_preset("casr").arch.to_dict(), "bias": True})
    assert deployed_arch(casr_bias, load_recipe("ablation_casr_nobias")) == get_preset("casr").arch
    assert deployed_arch(casr_bias, load_recipe("ablation_casr_bias")) == casr_bias


@pytest.mark.parametrize("preset", ["reptcn", "basicvision", "casr", "anunet", "xiaomimm"])
def test_plain_equivalent_is_the_same_deployed_network(preset):
    import dataclasses

    import torch

    from nas.deployment import plain_equivalent
    from search_space.network import build, deploy
    from search_space.presets import get_preset

    arch = get_preset(preset).arch
    twin = plain_equivalent(arch)
    if preset == "xiaomimm":  # SPAB's attention is no plain conv: no twin
        assert twin == arch and plain_equivalent(dataclasses.replace(arch, block="spab_noatt")).block == "spab_noatt"
        return
    assert (twin.block, twin.end_block) == ("conv" if arch.blocks else arch.block, "conv")
    assert dataclasses.replace(twin, block=arch.block, end_block=arch.end_block) == arch  # nothing else changed
    # independent check: the twin's deployed network loads the original's fused weights strictly and
    # computes the same output
    torch.manual_seed(0)
    a = deploy(build(arch))
    b = deploy(build(twin))
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 24, 36)
    assert torch.equal(a(x), b(x))


# --------------------------------------------------------------------------------------------------
# Every shipped ablation through Ray
# --------------------------------------------------------------------------------------------------


def _shipped() -> list[Path]:
    from nas.study import STUDIES_DIR

    found = sorted((STUDIES_DIR / "ablations").glob("*.toml"))
    assert found, f"no shipped ablation studies under {STUDIES_DIR / 'ablations'}"  # never parametrize over nothing
    return found


class _SharedExecutor:
    """The module's Ray executor, handed to each driver; starting/stopping it is the fixture's job."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def start(self):
        return self

    def shutdown(self) -> None:
        pass


@pytest.fixture(scope="module")
def ray_executor():
    from nas.executor import RayExecutor

    ray_tmp = tempfile.mkdtemp(prefix="rtsr-ab-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("RTSR_RAY_TEMP_DIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RTSR_RAY_TEMP_DIR=ray_tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    executor = RayExecutor(num_cpus=2).start()
    try:
        yield executor
    finally:
        executor.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _smoke_copy(src: Path, dst: Path, *, data_dir: Path) -> Path:
    """The study with seeds [0, 1], STEPS proxy steps, every split from the tiny images under `data_dir`
    (`tiny_dataset`: train/, val/, test/) and a latency protocol that takes milliseconds."""
    import tomli_w

    data = parse_toml(src.read_text(encoding="utf-8"), source=str(src))
    data["ablation"]["seeds"] = [0, 1]
    data["proxy"]["steps"] = STEPS
    data["data"].update(train=str(data_dir / "train"), val=str(data_dir / "val"), test=str(data_dir / "test"))
    data["latency"] = {"cpu_threads": 1, "cpu": {"warmup": 0, "runs": 3, "time_budget_s": 2.0, "input_hw": [48, 96]}}
    dst.write_text(tomli_w.dumps(data), encoding="utf-8")
    return dst


def _load(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.parametrize("path", _shipped(), ids=[p.stem for p in _shipped()])
@pytest.mark.slow
def test_ablation_runs_end_to_end(path, tmp_path, ray_executor, tiny_dataset, capsys):
    from optuna.trial import TrialState

    from nas.driver import SearchDriver
    from rtsr.search import run_and_report
    from nas.study import load_study
    from reports.ablation import ablation_figures, ablation_markdown, is_ablation_run
    from search_space.arch import ArchConfig
    from search_space.cost import cost
    from trainers.recipe import load_recipe

    study_file = _smoke_copy(path, tmp_path / path.name, data_dir=tiny_dataset)
    study = load_study(study_file)
    ab = study.ablation
    assert ab is not None and len(ab.seeds) == 2 and study.budget.trials == 2 * len(ab.arms)
    run_dir = tmp_path / "run"
    driver = SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, study_file=study_file,
                          executor_factory=lambda address=None: _SharedExecutor(ray_executor))
    assert run_and_report(driver) == 0
    out = capsys.readouterr().out

    trials = _load(run_dir).get_trials(deepcopy=False)
    assert len(trials) == study.budget.trials and all(t.state == TrialState.COMPLETE for t in trials), [
        (t.number, t.state, t.user_attrs.get("failure_reason")) for t in trials
    ]
    # exactly one trial per (arm, seed), enqueued as fixed params, with the arm's own settings
    pairs = sorted((t.params["arm"], t.params["seed"]) for t in trials)
    assert pairs == sorted((a.name, s) for a in ab.arms for s in ab.seeds)
    for t in trials:
        arm = ab.arm(t.params["arm"])
        attrs = t.user_attrs
        assert (attrs["arm"], attrs["seed"], attrs["eval_dtype"]) == (arm.name, t.params["seed"], arm.eval_dtype)
        assert attrs["arch"] == ab.arch_of(arm.name).to_dict()
        recipe = load_recipe(ab.recipe_of(arm.name, study.proxy.recipe))
        assert attrs["recipe_hash"] == recipe.hash and attrs["steps"] == STEPS
        deployed = dict(attrs.get("deploy_arch") or attrs["arch"])
        if any(s.remove_bias for s in recipe.stages):
            assert deployed["bias"] is False  # cost and latency of the bias-free deployed network
        assert attrs["macs"] == cost(ArchConfig.from_dict(deployed)).macs
        assert attrs["status"] == "ok" and set(attrs["per_qp"]) == {str(q) for q in study.data.qps}
        assert t.values[0] == pytest.approx(attrs[study.objectives.gain])
        if arm.eval_dtype == "float32":
            assert (run_dir / attrs["weights"]).is_file()
        else:  # re-evaluated weights of the reference arm's trial with the same seed
            src = trials[attrs["weights_of"]]
            assert src.user_attrs["arm"] == ab.reference and src.user_attrs["seed"] == attrs["seed"]
            assert attrs["weights"] == src.user_attrs["weights"] and attrs["eval_dtype_used"] == arm.eval_dtype
    assert sum(1 for line in out.splitlines() if line.startswith("trial ")) == study.budget.trials
    # one latency per deployed network; arms that only train differently (RepBlock/ECB vs conv) share it
    latency_by_network: dict[str, set] = {}
    for t in trials:
        network = t.user_attrs.get("deploy_arch_hash") or t.user_attrs["arch_hash"]
        latency_by_network.setdefault(network, set()).add(t.user_attrs["latency_ms"])
    assert all(len(v) == 1 for v in latency_by_network.values())
    expected_networks = {"reparam_rep": 1, "ecb": 1, "fp16_inference": 1, "fft_grad_losses": 1, "l2_finetune": 1,
                         "qp_curriculum": 1, "bias_removal": 2, "spab_attention": 2, "unshuffle_factor": 3}
    assert len(latency_by_network) == expected_networks[path.stem]

    # the report: written after the run by the search command, one row per arm, one verdict per claim
    assert is_ablation_run(run_dir)
    md = ablation_markdown(run_dir)
    assert (run_dir / "ablation.md").read_text() == md
    assert f"trials done: {study.budget.trials} of {study.budget.trials}" in md
    arm_table = md.split("### Arms")[1].split("Architectures:")[0]
    rows = [line for line in arm_table.splitlines() if line.startswith("| ") and not line.startswith("| arm ")]
    assert [r.split("|")[1].strip().removesuffix(" (reference)") for r in rows] == [a.name for a in
                                                                                    sorted(ab.arms, key=lambda a: a.name != ab.reference)]
    if ab.claims:
        claims_table = md.split("### Published claims")[1].split("Verdicts compare")[0]
        cells = [line.strip().strip("|").split("|") for line in claims_table.splitlines() if line.startswith("| ") and not line.startswith("| arm ")]
        verdicts = [c[-2].strip().removesuffix(" (budget not calibrated)") for c in cells]
        assert len(verdicts) == len(ab.claims) and set(verdicts) <= {"consistent", "inconclusive", "contradicts"}
        assert all(c[-1].strip() == "not calibrated" or c[-1].strip().startswith("Spearman ") for c in cells)  # budget fidelity

    # the reference arm's mean Delta in the table is the mean over its two trials (recomputed here)
    metric = "delta_y" if {31, 63} <= set(study.data.qps) else "gain_y"
    ref_values = [t.user_attrs[metric] for t in trials if t.user_attrs["arm"] == ab.reference]
    from reports.ablation import load_ablation

    res = load_ablation(run_dir)
    assert res.reference.summary(metric).estimate == pytest.approx(statistics.mean(ref_values))
    assert math.isfinite(res.reference.summary(metric).low)
    figs = ablation_figures(run_dir)
    assert len(figs) >= 3 and all(f.layout.title.text for f in figs)
