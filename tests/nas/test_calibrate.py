"""Calibration (`nas.calibrate`): the statistics against hand-computed cases, the MACs-stratified panel,
resume after a kill with the in-process fake executor, the refusal of a changed command, and one
tiny real run end to end on the local executor (then rerun: nothing left, the reports rebuilt)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.calibrate import CalibrationSpec, CalibrationStore, PanelArch, render_markdown, summarize
from nas.calibrate.panel import _candidates, sample_stratified
from nas.calibrate.runner import CalibrationRunner
from nas.calibrate.stats import (
    _kendall_rows,
    bootstrap_correlations,
    front_recovery,
    kendall,
    pairwise_accuracy,
    spearman,
)
from nas.study import load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_checkpoint, fake_training_output
from search_space.arch import ArchConfig
from search_space.errors import UserError
from search_space.ranges import arch_to_params
from trainers.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]

# -- statistics by hand ---------------------------------------------------------------------------------


def test_spearman_and_kendall_by_hand():
    x = [1, 2, 3, 4, 5]
    y = [2, 1, 4, 3, 5]
    # rank differences -1, 1, -1, 1, 0: rho = 1 - 6 * 4 / (5 * (25 - 1)) = 0.8
    assert spearman(x, y) == pytest.approx(0.8)
    # 10 pairs, discordant (1,2) and (3,4): tau = (8 - 2) / 10
    assert kendall(x, y) == pytest.approx(0.6)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(kendall([1, 2], [2, 1]))


def test_pairwise_accuracy_by_hand():
    long = [0.00, -0.02, 0.10, 0.06, 0.20]  # a b c d e
    proxy = [0.01, 0.02, 0.06, 0.02, 0.05]
    # pairs > 0.05 dB apart: ac ad ae bc bd be ce de (ab 0.02 and cd 0.04 are within noise) = 8;
    # wrong: ce (proxy puts c above e); tie: bd (0.5); the other six agree -> 6.5 / 8
    acc = pairwise_accuracy(proxy, long)
    assert acc.pairs == 8 and acc.accuracy == pytest.approx(6.5 / 8)
    assert np.isnan(pairwise_accuracy([1, 2], [0.0, 0.01]).accuracy)


def test_front_recovery_by_hand():
    cost = [1, 2, 3, 4, 5]
    long = [0.0, 0.1, 0.05, 0.3, 0.2]  # long front: 0, 1, 3 (2 is beaten by 1, 4 by 3)
    proxy = [0.0, 0.02, 0.2, 0.1, 0.3]  # proxy front: 0, 1, 2, 4
    fr = front_recovery(proxy, long, cost)
    assert set(fr.long_front) == {0, 1, 3} and set(fr.proxy_front) == {0, 1, 2, 4}
    assert fr.fraction == pytest.approx(2 / 3) and fr.precision == pytest.approx(2 / 4)
    # reference (gain 0.0, cost 5.5). Long front: (2, 0.1) -> 3.5 x 0.1, (4, 0.3) -> 1.5 x 0.2; total 0.65.
    # Proxy front at long gains: (2, 0.1) -> 0.35, (3, 0.05) adds nothing, (5, 0.2) -> 0.5 x 0.1; total 0.40.
    assert fr.hv_ratio == pytest.approx(0.40 / 0.65)


def test_vectorized_kendall_and_spearman_equal_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(20, 9)).astype(float)  # many ties
    y = x + rng.normal(size=(20, 9))
    want_tau = [kendall(a, b) for a, b in zip(x, y)]
    np.testing.assert_allclose(_kendall_rows(x, y), want_tau, atol=1e-12)
    np.testing.assert_allclose([spearman(a, b) for a, b in zip(x, y)], [spearmanr(a, b).statistic for a, b in zip(x, y)],
                               atol=1e-12)


def test_one_spearman_with_one_rule_for_too_few_points():
    """Latency, calibration and the reports' rung pairs call the same function (nas.ranks)."""
    import math

    import nas.calibrate.stats
    import nas.latency
    import nas.ranks
    import reports.halving_figures

    assert nas.latency.spearman is nas.calibrate.stats.spearman is reports.halving_figures.spearman is nas.ranks.spearman
    assert math.isnan(nas.ranks.spearman([1, 2], [2, 1])) and reports.halving_figures._spearman([1, 2], [2, 1]) is None
    assert nas.ranks.spearman([1, 2, 3], [1, 2, 3]) == 1.0


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    x = list(rng.normal(size=20))
    y = [v + 0.5 * e for v, e in zip(x, rng.normal(size=20))]
    rho, tau = bootstrap_correlations(x, y, seed=7)
    assert rho.low <= rho.estimate <= rho.high and tau.low <= tau.estimate <= tau.high
    assert rho.estimate == pytest.approx(spearman(x, y)) and rho.resamples == 2000 and rho.n == 20
    assert bootstrap_correlations(x, y, seed=7) == (rho, tau)
    assert bootstrap_correlations(x, y, seed=8)[0].low != rho.low


# -- the panel --------------------------------------------------------------------------------------------


def test_panel_is_stratified_by_macs_inside_the_space_and_deterministic():
    study = load_study("rtsr")
    picks = sample_stratified(study, n=4, seed=0, pool=16)
    assert picks == sample_stratified(study, n=4, seed=0, pool=16)
    pool = sorted(_candidates(study, pool=16, seed=0), key=lambda c: (c[0], c[1].arch_hash))
    assert len(pool) == 16
    hashes = [a.arch_hash for _, a in pool]
    bins = [hashes.index(a.arch_hash) * 4 // 16 for a in picks]
    assert bins == [0, 1, 2, 3]  # one arch from each quarter of the pool sorted by MACs
    for arch in picks:
        arch_to_params(arch, study.search)  # inside the space (raises otherwise)
    assert all(macs <= study.constraints.macs_g * 1e9 for macs, _ in pool)
    assert sample_stratified(study, n=4, seed=1, pool=16) != picks


# -- resume, with the fake executor ----------------------------------------------------------------------


class Killed(BaseException):
    """Stands for kill -9 of the calibration process in the middle of a training."""


def _panel() -> tuple[PanelArch, ...]:
    archs = []
    for i, channels in enumerate((8, 12, 16, 20, 24)):
        arch = ArchConfig(down_factor=2, channels=channels, blocks=1, block="rep", global_residual="lanczos")
        archs.append(PanelArch(name=f"s{i:02d}", arch=arch, source="sampled", macs=(i + 1) * 10**9, params=1000 * (i + 1)))
    return tuple(archs)


def _study():
    """The default study with the rungs these tests were written for (100/300/900 steps), on builtin."""
    return load_study("rtsr").with_overrides(halving__min_steps=100, halving__rungs=3, data__train="builtin")


def _spec(**changes) -> CalibrationSpec:
    spec = CalibrationSpec.build(_study(), panel=_panel(), long_steps=None, noise=2, device_kind="cpu", panel_seed=0)
    return CalibrationSpec(**{**spec.__dict__, **changes})


def _fake_gain(payload) -> float:
    """A deterministic gain that depends on the arch, the budget and the seed (rung 0 ranks badly)."""
    channels, steps, seed = payload["arch"]["channels"], payload["rung"]["rung_steps"], payload["seed"]
    noisy = {8: 3, 12: 1, 16: 4, 20: 2, 24: 5}[channels] * 0.01
    return round(channels / 1000 * min(steps, 1000) / 100 + (noisy if steps == 100 else 0.0) + seed * 1e-3, 6)


def _run(out: Path, spec: CalibrationSpec, *, kill_after: int | None = None) -> FakeExecutor:
    calls = []

    def train(payload):
        calls.append(payload)
        if kill_after is not None and len(calls) > kill_after:
            raise Killed()
        return fake_training_output(payload, _fake_gain(payload))

    fake = FakeExecutor(train=train, latency_ms=lambda arch: [1.0])
    store = CalibrationStore(out)
    store.open(spec, argv=["--test"])
    runner = CalibrationRunner(spec, store, executor=fake, data_ref=None, recipe=load_recipe("proxy_wsd"), workers=2,
                               log=lambda text: None, device_name=FAKE_DEVICE)
    runner.run()
    return fake


def _summary(out: Path, spec: CalibrationSpec) -> dict:
    from nas.calibrate.runner import load_records

    return summarize(spec, load_records(spec, CalibrationStore(out)), device_name=FAKE_DEVICE, command="calibrate --test")


def test_a_killed_calibration_resumes_without_retraining_and_reports_the_same(tmp_path):
    spec = _spec()
    assert len(spec.tasks()) == 5 * 4 + 2
    whole = _run(tmp_path / "whole", spec)
    assert len(whole.payloads) == 22

    with pytest.raises(Killed):
        _run(tmp_path / "killed", spec, kill_after=9)
    store = CalibrationStore(tmp_path / "killed")
    done = {t.key for t in spec.tasks() if store.load(t) is not None}
    assert 0 < len(done) < 9  # the trainings in flight at the kill are lost, nothing else

    again = _run(tmp_path / "killed", spec)
    names = {a.arch.channels: a.name for a in spec.panel}
    trained = {f"{names[p['arch']['channels']]}/s{p['seed']}-{p['rung']['rung_steps']}" for p in again.payloads}
    assert len(again.payloads) == len(trained) == 22 - len(done) and not trained & done
    for p in again.payloads:  # every continuation starts from the stored checkpoint of the budget before
        if p["checkpoint"] is not None:
            assert json.loads(p["checkpoint"])["steps"] < p["rung"]["rung_steps"]
        else:
            assert p["rung"]["rung_steps"] == spec.rungs[0] or p["seed"] == spec.seed + 1
    assert _summary(tmp_path / "killed", spec) == _summary(tmp_path / "whole", spec)


def test_the_fake_run_is_ranked_and_reported(tmp_path):
    spec = _spec()
    _run(tmp_path, spec)
    summary = _summary(tmp_path, spec)
    space = summary["groups"]["space"]
    assert [r["steps"] for r in space] == [100, 300, 900] and summary["budgets"]["long_steps"] == 3000  # 10 x rung 1
    assert space[1]["spearman"]["estimate"] == pytest.approx(1.0) and space[1]["n"] == 5
    assert space[0]["spearman"]["estimate"] < 1.0  # the noisy rung 0
    assert summary["primary"]["rung"] == 1 and summary["primary"]["met"] is True
    assert summary["noise_ceiling"]["n"] == 2 and summary["complete"]
    first = CalibrationStore(tmp_path).checkpoint(spec.tasks()[0])
    assert first == fake_checkpoint({"rung": {"rung_steps": 100}, "seed": 0})
    text = render_markdown(summary)
    assert "Spearman" in text and "rung 1 (300 steps)" in text and FAKE_DEVICE in text


def test_a_failed_budget_ends_its_chain_and_is_reported(tmp_path):
    spec = _spec(noise=())
    calls = []

    def train(payload):
        calls.append(payload)
        out = fake_training_output(payload, _fake_gain(payload))
        if payload["arch"]["channels"] == 12 and payload["rung"]["rung_steps"] == 300:
            out["result"].update(status="failed", reason="Diverged: loss is nan", eval=None, test_eval=None)
            out["checkpoint"] = None
        return out

    store = CalibrationStore(tmp_path)
    store.open(spec, argv=[])
    CalibrationRunner(spec, store, executor=FakeExecutor(train=train, latency_ms=lambda a: [1.0]), data_ref=None,
                      recipe=load_recipe("proxy_wsd"), workers=2, log=lambda t: None, device_name=FAKE_DEVICE).run()
    assert len(calls) == 5 * 4 - 2  # s01's 900 and 3000 never ran
    summary = _summary(tmp_path, spec)
    assert summary["groups"]["space"][0]["n"] == 4 and "Diverged" in summary["archs"][1]["failure"]


def test_a_changed_command_is_refused_with_the_differences(tmp_path):
    spec = _spec()
    store = CalibrationStore(tmp_path)
    assert store.open(spec, argv=["a"]) is False
    assert store.open(spec, argv=["a"]) is True
    with pytest.raises(UserError, match="long_steps"):
        store.open(_spec(long_steps=2000), argv=["b"])
    with pytest.raises(UserError, match=r"panel\[4\]"):
        store.open(_spec(panel=_panel()[:4] + (PanelArch(name="s04", arch=ArchConfig(channels=28, blocks=1), source="sampled",
                                                          macs=5, params=1),)), argv=["c"])


def test_bad_budgets_are_user_errors():
    with pytest.raises(UserError, match="long-steps"):
        _spec(long_steps=900)
    with pytest.raises(UserError, match="noise-subset"):
        CalibrationSpec.build(_study(), panel=_panel(), long_steps=None, noise=6, device_kind="cpu", panel_seed=0)


# -- end to end -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_real_calibration_end_to_end(tmp_path, tiny_halving_study, run_cli):
    study = tiny_halving_study(name="calibrate-e2e", min_steps=4)
    out = tmp_path / "cal"
    cmd = [sys.executable, "-m", "nas.calibrate", "--study", str(study), "--sampled", "3", "--presets", "none", "--noise-subset", "0",
           "--pool", "8", "--long-steps", "16", "--executor", "local", "--workers", "2", "--device", "cpu", "--out", str(out),
           "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = run_cli(cmd, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "calibration.json").read_text())
    assert summary["complete"] and summary["budgets"]["rungs"] == [4, 8] and summary["budgets"]["long_steps"] == 16
    assert summary["groups"]["space"][0]["n"] == 3 and summary["tasks"] == 9
    assert all(a["val_gain_db"]["16"] is not None and a["test_gain_db"]["16"] is not None for a in summary["archs"])
    assert "Spearman" in (out / "calibration.md").read_text() and "cpu:" in summary["device"]
    assert 'id="calibration-scatter"' in (out / "calibration.html").read_text()

    rerun = run_cli(cmd, cwd=tmp_path, env=env, timeout=600)
    assert rerun.returncode == 0 and "9 of 9 trainings done, 0 to go" in rerun.stdout, rerun.stdout + rerun.stderr


def test_rtsr_calibrate_takes_the_same_flags_as_python_m_nas_calibrate():
    from rtsr.calibrate import build_parser
    from rtsr.cli import COMMANDS

    assert COMMANDS["calibrate"][0] == "rtsr.calibrate"
    a, b = build_parser(prog="rtsr calibrate"), build_parser()
    assert [x.option_strings for x in a._actions] == [x.option_strings for x in b._actions]


def test_the_noise_subset_spreads_over_the_sampled_archs_by_macs():
    from nas.calibrate.spec import noise_subset
    from search_space.presets import get_preset

    panel = (PanelArch(name="casr", arch=get_preset("casr").arch, source="preset", macs=10**8, params=1), *_panel())
    assert noise_subset(panel, 3) == ("s00", "s02", "s04")  # cheapest, middle, dearest sampled arch
    assert noise_subset(panel, 6) == ("casr", "s00", "s01", "s02", "s03", "s04") and noise_subset(panel, 0) == ()
