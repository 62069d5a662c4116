"""Warmup-stable-decay training continued rung by rung (trainers.continuation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from search_space.arch import ArchConfig
from search_space.errors import UserError
from search_space.network import build, deploy
from trainers.continuation import RungOutcome, WSDPlan, check_continuable, train_rung
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.lanczos import lanczos_downscale
from trainers.loop import Trainer
from trainers.losses import LossSpec
from trainers.proxy import ProxyData
from trainers.recipe import Distill, Recipe, Stage, load_recipe

QPS = (31, 63)
ARCH = ArchConfig(channels=8, blocks=1, block="rep", down_factor=2, global_residual="none")


def _pairs(images: list[np.ndarray], split: str) -> PairedSet:
    """LR = Lanczos-5 downscale plus QP-dependent noise: no AVIF encoder needed, deterministic."""
    rng = np.random.default_rng(2)
    lr = {}
    for qp in QPS:
        lr[qp] = tuple(
            np.clip(lanczos_downscale(hr) + rng.normal(0, (qp - 30) / 8, (hr.shape[0] // 4, hr.shape[1] // 4, 3)), 0, 255)
            .round()
            .astype(np.uint8)
            for hr in images
        )
    return PairedSet(names=tuple(f"{split}{i}" for i in range(len(images))), hr=tuple(images), lr=lr,
                     spec=DegradeSpec(), source="synthetic", split=split)


@pytest.fixture(scope="module")
def data(request) -> ProxyData:
    image = request.getfixturevalue("rng_image")
    train = [image(96, 96, seed=s) for s in range(3)]
    val = [image(48, 72, seed=20)]
    return ProxyData(train=_pairs(train, "train"), val=_pairs(val, "val"))


def _recipe(**kw) -> Recipe:
    # Curriculum QP sampling reads the stage length the sampler is given, so continuation is only
    # exact if that length does not depend on the rung.
    stage = dict(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, min_lr=1e-4, warmup=0.2, patch=12, batch=2,
                 qp_sampling="curriculum", grad_clip=1.0, schedule="wsd")
    stage.update(kw)
    return Recipe(name="tiny_wsd", stages=(Stage(**stage),))


def _state(checkpoint: bytes) -> dict:
    return torch.load(io.BytesIO(checkpoint), weights_only=True)


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_continuing_from_a_rung_matches_training_straight_to_the_next(data):
    recipe, plan = _recipe(), WSDPlan(warmup_steps=2, horizon=12, decay=0.25)
    first = train_rung(ARCH, recipe, data, rung_steps=4, plan=plan, seed=3)
    continued = train_rung(ARCH, recipe, data, rung_steps=12, plan=plan, seed=3, checkpoint=first.checkpoint)
    straight = train_rung(ARCH, recipe, data, rung_steps=12, plan=plan, seed=3)
    assert first.result.ok and continued.result.ok and straight.result.ok
    assert (first.resumed_from, continued.resumed_from, straight.resumed_from) == (0, 4, 0)

    a, b = _state(continued.checkpoint), _state(straight.checkpoint)
    assert a["step"] == b["step"] == 12
    _assert_same_tensors(a["model"], b["model"])
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
    # the rung-0 decay branch (1 step at a lower lr) left no trace in what the next rung continued from,
    # and the continuation really trained 8 more steps
    assert a["model"].keys() == _state(first.checkpoint)["model"].keys()
    assert any(not torch.equal(v, _state(first.checkpoint)["model"][k]) for k, v in a["model"].items())
    assert continued.result.eval.to_dict() == straight.result.eval.to_dict()
    _assert_same_tensors(continued.result.deploy_state, straight.result.deploy_state)


def test_learning_rates_warm_up_stay_constant_then_decay_to_min_lr(data, monkeypatch):
    recipe = _recipe(lr=4e-3, min_lr=1e-3)
    plan = WSDPlan(warmup_steps=4, horizon=10, decay=0.5)
    used: list[tuple[int, float]] = []
    original = Trainer.train_step

    def recording(self: Trainer) -> float:
        step = self.step
        loss = original(self)
        used.append((step, self._optimizer.param_groups[0]["lr"]))
        return loss

    monkeypatch.setattr(Trainer, "train_step", recording)
    outcome = train_rung(ARCH, recipe, data, rung_steps=8, plan=plan, seed=0)
    assert outcome.result.ok, outcome.result.reason
    assert [s for s, _ in used] == list(range(12))  # 8 stable + ceil(0.5 * 8) = 4 decay steps
    expected = [1e-3, 2e-3, 3e-3, 4e-3, 4e-3, 4e-3, 4e-3, 4e-3, 3.25e-3, 2.5e-3, 1.75e-3, 1e-3]
    assert [lr for _, lr in used] == pytest.approx(expected, rel=1e-12)


def test_the_stable_lr_does_not_depend_on_the_rung():
    stage = _recipe(lr=4e-3, min_lr=0.0).stages[0]
    plan = WSDPlan(warmup_steps=3, horizon=90, decay=0.2)
    for step in range(10):
        assert plan.lr_at(stage, step=step, rung_steps=10) == plan.lr_at(stage, step=step, rung_steps=90)
    assert plan.decay_steps(10) == 2 and plan.decay_steps(1) == 1 and plan.total_steps == 90 + 18
    assert plan.lr_at(stage, step=11, rung_steps=10) == 0.0  # the branch ends at min_lr
    with pytest.raises(ValueError, match="outside"):
        plan.lr_at(stage, step=12, rung_steps=10)


def test_the_decay_branch_trains_and_its_model_is_the_one_evaluated(data):
    previous = torch.get_num_threads()
    outcome = train_rung(ARCH, _recipe(), data, rung_steps=6, plan=WSDPlan(warmup_steps=1, horizon=8, decay=0.25),
                         seed=1, threads=2)
    assert torch.get_num_threads() == previous
    assert isinstance(outcome, RungOutcome) and outcome.result.ok, outcome.result.reason
    assert (outcome.result.steps, outcome.decay_steps, outcome.resumed_from) == (6, 2, 0)
    state = _state(outcome.checkpoint)
    assert state["step"] == 6  # the checkpoint is the stable state, saved before the branch
    stable = build(ARCH)
    stable.load_state_dict(state["model"])
    stable_deploy = deploy(stable).state_dict()
    assert stable_deploy.keys() == outcome.result.deploy_state.keys()
    assert any(not torch.equal(stable_deploy[k], outcome.result.deploy_state[k]) for k in stable_deploy)


def test_for_rungs_takes_warmup_from_rung_0_and_horizon_from_the_top_rung():
    plan = WSDPlan.for_rungs(load_recipe("proxy_wsd"), min_steps=100, top_steps=900, decay=0.2)
    assert plan == WSDPlan(warmup_steps=5, horizon=900, decay=0.2)
    assert plan.total_steps == 1080


def test_check_continuable_names_the_one_stage_recipe():
    check_continuable(load_recipe("proxy_wsd"))
    with pytest.raises(UserError, match=r"'proxy' has 2 stages.*'proxy_wsd'"):
        check_continuable(load_recipe("proxy"))


@pytest.mark.parametrize("change", [
    {"remove_bias": True},
    {"init": "scratch"},
    {"distill": Distill(teacher="casr", weight=0.1)},
], ids=["remove_bias", "scratch", "distill"])
def test_check_continuable_refuses_stage_actions(change, data):
    recipe = _recipe(**change)
    with pytest.raises(UserError, match="proxy_wsd"):
        check_continuable(recipe)
    with pytest.raises(UserError):  # before any training
        train_rung(ARCH, recipe, data, rung_steps=2, plan=WSDPlan(warmup_steps=0, horizon=4, decay=0.5), seed=0)


def test_a_diverging_run_fails_with_a_reason_and_no_checkpoint(data):
    outcome = train_rung(ARCH, _recipe(lr=1e6, min_lr=0.0, warmup=0.0, grad_clip=None), data, rung_steps=6,
                         plan=WSDPlan(warmup_steps=0, horizon=6, decay=0.5), seed=0)
    assert outcome.result.status == "failed"
    assert outcome.result.reason.startswith("Diverged")
    assert outcome.checkpoint is None and outcome.result.steps == 6


def test_a_checkpoint_at_the_rung_or_from_another_plan_is_refused(data):
    recipe, plan = _recipe(), WSDPlan(warmup_steps=1, horizon=6, decay=0.5)
    first = train_rung(ARCH, recipe, data, rung_steps=3, plan=plan, seed=0)
    assert first.result.ok, first.result.reason
    with pytest.raises(ValueError, match="step 3"):
        train_rung(ARCH, recipe, data, rung_steps=3, plan=plan, seed=0, checkpoint=first.checkpoint)
    with pytest.raises(UserError, match="total_steps"):
        train_rung(ARCH, recipe, data, rung_steps=6, plan=WSDPlan(warmup_steps=1, horizon=8, decay=0.5), seed=0,
                   checkpoint=first.checkpoint)
    with pytest.raises(ValueError, match="rung_steps"):
        train_rung(ARCH, recipe, data, rung_steps=7, plan=plan, seed=0)


def test_check_continuable_refuses_a_fixed_budget_schedule():
    with pytest.raises(UserError, match="schedule = 'wsd'"):
        check_continuable(_recipe(schedule="cosine", min_lr=0.0))
