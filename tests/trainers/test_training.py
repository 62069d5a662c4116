"""Proxy training, the shared training loop and evaluation (trainers.loop / proxy / evaluate)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from search_space.arch import ArchConfig
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.evaluate import evaluate, lanczos_baseline
from trainers.lanczos import lanczos_downscale, lanczos_upscale
from trainers.loop import Trainer
from trainers.losses import LossSpec
from trainers.metrics import psnr
from trainers.proxy import ProxyData, proxy_train
from trainers.recipe import Recipe, Stage

QPS = (31, 63)


def _pairs(images: list[np.ndarray], split: str) -> PairedSet:
    """A PairedSet without AVIF: LR = Lanczos-5 downscale plus QP-dependent noise (fast, deterministic)."""
    rng = np.random.default_rng(1)
    lr = {}
    for qp in QPS:
        noisy = []
        for hr in images:
            clean = lanczos_downscale(hr).astype(np.float64)
            noisy.append(np.clip(clean + rng.normal(0, (qp - 30) / 8, clean.shape), 0, 255).round().astype(np.uint8))
        lr[qp] = tuple(noisy)
    return PairedSet(
        names=tuple(f"{split}{i}" for i in range(len(images))),
        hr=tuple(images),
        lr=lr,
        spec=DegradeSpec(),
        source="synthetic",
        split=split,
    )


@pytest.fixture(scope="module")
def data(request) -> ProxyData:
    factory = request.getfixturevalue("rng_image")
    train = [factory(192, 192, seed=s) for s in range(4)]
    val = [factory(96, 144, seed=10 + s) for s in range(2)]
    return ProxyData(train=_pairs(train, "train"), val=_pairs(val, "val"))


def _recipe(*stages: Stage) -> Recipe:
    return Recipe(name="test", stages=tuple(stages))


def _stage(**kw) -> Stage:
    base = dict(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, patch=24, batch=4, share=1.0)
    base.update(kw)
    return Stage(**base)


SMALL = ArchConfig(channels=8, blocks=1, block="rep", down_factor=2, global_residual="nearest")
#: No anchor: starts from a random network, so a few steps must measurably beat the start.
UNANCHORED = dataclasses.replace(SMALL, global_residual="none")


class LanczosModel(nn.Module):
    """Not a network: the Lanczos x4 upscale itself, so its gain over Lanczos must be exactly 0 dB."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lr = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        up = lanczos_upscale(lr)
        return torch.from_numpy(up.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def test_evaluate_lanczos_model_has_zero_gain(data):
    report = evaluate(LanczosModel(), data.val)
    assert [m.qp for m in report.per_qp] == list(QPS)
    for m in report.per_qp:
        assert m.gain_y == 0.0
        assert m.psnr_rgb == m.lanczos_psnr_rgb
    assert report.delta_y == 0.0


def test_lanczos_baseline_is_the_mean_of_per_image_psnr(data):
    base = lanczos_baseline(data.val)
    for qp in QPS:
        by_hand = np.mean([psnr(lanczos_upscale(lr), hr, y=True) for lr, hr in zip(data.val.lr[qp], data.val.hr)])
        assert base[qp][0] == pytest.approx(by_hand, abs=1e-12)


def test_evaluate_nearest_upscale_is_worse_than_lanczos(data):
    class Nearest(nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    report = evaluate(Nearest(), data.val)
    assert all(m.gain_y < -0.5 for m in report.per_qp)


def test_proxy_training_is_deterministic_and_learns(data):
    recipe = _recipe(_stage())
    a = proxy_train(UNANCHORED, recipe, data, steps=30, seed=3, threads=1)
    b = proxy_train(UNANCHORED, recipe, data, steps=30, seed=3, threads=1)
    assert a.ok and b.ok, (a.reason, b.reason)
    assert a.eval.to_dict() == b.eval.to_dict()
    for key in a.deploy_state:
        assert torch.equal(a.deploy_state[key], b.deploy_state[key])
    assert a.fuse_max_rel_err <= 1e-6  # float32 fused weights compared in float64
    untrained = evaluate(__import__("search_space.network", fromlist=["deploy"]).deploy(
        Trainer(UNANCHORED, recipe, data.train, total_steps=1, seed=3).model), data.val)
    assert a.gain_y > untrained.gain_y  # 30 steps beat the initialization
    assert a.to_dict()["eval"]["per_qp"]["31"]["gain_y"] == pytest.approx(a.eval.per_qp[0].gain_y)


def test_poisoned_run_fails_cleanly_with_a_reason(data):
    result = proxy_train(SMALL, _recipe(_stage(lr=1e6)), data, steps=20, seed=0, threads=1)
    assert result.status == "failed"
    assert "diverged" in result.reason
    assert result.eval is None


def test_bias_removal_stage_yields_a_bias_free_deploy_model(data):
    recipe = _recipe(_stage(share=0.5), _stage(share=0.5, loss=LossSpec.from_dict({"mse": 1.0}), remove_bias=True))
    result = proxy_train(SMALL, recipe, data, steps=10, seed=0, threads=1)
    assert result.ok, result.reason
    assert result.arch["bias"] is False
    assert not [k for k in result.deploy_state if k.endswith("bias")]
    assert SMALL.bias  # the input arch had biases


def test_bias_removal_keeps_the_trained_weights(data):
    recipe = _recipe(_stage(share=0.5), _stage(share=0.5, remove_bias=True, lr=1e-30))
    trainer = Trainer(SMALL, recipe, data.train, total_steps=4, seed=0)
    trainer.run(until=2)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.endswith("bias")}
    trainer.run()  # stage 2 at lr 1e-30: weights unchanged (below float32 resolution), biases gone
    after = trainer.model.state_dict()
    assert not [k for k in after if k.endswith("bias")]
    for key, value in after.items():  # weights that started at exactly 0 (the anchored tail) move by ~1e-30
        assert torch.allclose(value, before[key], rtol=0, atol=1e-20), key


def test_checkpoint_resume_continues_bit_for_bit(data):
    recipe = _recipe(_stage(share=0.5), _stage(share=0.5, loss=LossSpec.from_dict({"mse": 1.0}), lr=5e-4))
    straight = Trainer(SMALL, recipe, data.train, total_steps=12, seed=5)
    straight.run()
    first = Trainer(SMALL, recipe, data.train, total_steps=12, seed=5)
    first.run(until=4)
    state = first.state_dict()
    resumed = Trainer(SMALL, recipe, data.train, total_steps=12, seed=5)
    resumed.load_state_dict(state)
    assert resumed.step == 4
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_resume_with_another_seed_is_refused(data):
    recipe = _recipe(_stage())
    first = Trainer(SMALL, recipe, data.train, total_steps=4, seed=1)
    first.run(until=2)
    other = Trainer(SMALL, recipe, data.train, total_steps=4, seed=2)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(first.state_dict())


def test_proxy_uses_only_the_threads_it_is_given(data, monkeypatch):
    seen = []
    original = Trainer.train_step

    def spy(self):
        seen.append(torch.get_num_threads())
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", spy)
    before = torch.get_num_threads()
    proxy_train(SMALL, _recipe(_stage()), data, steps=2, seed=0, threads=2)
    assert set(seen) == {2}
    assert torch.get_num_threads() == before


def test_unknown_teacher_is_a_clear_error(data):
    from search_space.errors import UserError
    from trainers.recipe import Distill

    stage = _stage(distill=Distill(teacher="no_such_teacher", weight=0.1))
    with pytest.raises(UserError, match="no_such_teacher"):
        proxy_train(SMALL, _recipe(stage), data, steps=2, seed=0, threads=1)


@pytest.mark.parametrize("form", ["pt2-folder", "legacy-ts-file"])
def test_distillation_from_a_checkpoint_changes_the_result(data, tmp_path, form):
    from search_space.network import build, deploy
    from trainers.deploy_export import export_program
    from trainers.loop import load_teacher_checkpoint
    from trainers.recipe import Distill

    teacher = deploy(build(dataclasses.replace(SMALL, channels=12))).eval()
    if form == "pt2-folder":  # what trainers.full writes now
        checks = [torch.rand(1, 3, 24, 24), torch.rand(1, 3, 16, 40)]
        export_program(teacher, tmp_path / "deploy.pt2", down_factor=SMALL.down_factor, inputs=checks)
        path = tmp_path
    else:  # folders and files written before deploy.pt2 replaced deploy.ts still load
        path = tmp_path / "teacher.ts"
        torch.jit.save(torch.jit.trace(teacher, torch.rand(1, 3, 24, 24)), str(path))
    loaded = load_teacher_checkpoint(str(path))
    x = torch.rand(3, 3, 32, 20)  # a batch and a size the export never saw
    with torch.no_grad():
        assert torch.allclose(loaded(x), teacher(x), atol=1e-6)
    plain = proxy_train(SMALL, _recipe(_stage()), data, steps=6, seed=0, threads=1)
    distilled = proxy_train(SMALL, _recipe(_stage(distill=Distill(teacher=str(path), weight=0.5))), data, steps=6, seed=0, threads=1)
    assert plain.ok and distilled.ok, (plain.reason, distilled.reason)
    assert plain.eval.to_dict() != distilled.eval.to_dict()


def test_a_safmpp_teacher_folder_runs_at_training_patch_sizes(tmp_path):
    # trainers.full writes deploy.pt2 of a SAFM++ network for one input size (its adaptive pool's
    # windows depend on the size); the teacher comes from the folder's deploy.pt, which runs at any.
    from search_space.network import build, deploy
    from trainers.deploy_export import export_program
    from trainers.deploy_file import save_deploy
    from trainers.loop import load_teacher_checkpoint

    arch = dataclasses.replace(SMALL, block="safmpp", channels=8, down_factor=1)
    teacher = deploy(build(arch)).eval()
    export_program(teacher, tmp_path / "deploy.pt2", down_factor=1, input_size=(27, 45))
    save_deploy(teacher, arch, tmp_path)
    loaded = load_teacher_checkpoint(str(tmp_path))
    x = torch.rand(2, 3, 32, 20)  # a training patch, not the exported size
    with torch.no_grad():
        assert torch.allclose(loaded(x), teacher(x), atol=1e-6)


def test_a_corrupt_teacher_deploy_file_is_a_clear_error(tmp_path):
    from search_space.errors import UserError
    from trainers.loop import load_teacher_checkpoint

    (tmp_path / "deploy.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"cannot load distillation teacher .*deploy\.pt: .*folder written by trainers\.full"):
        load_teacher_checkpoint(str(tmp_path))


def test_a_wrong_fusion_is_caught_and_reported(data, monkeypatch):
    import trainers.proxy as proxy_module
    from search_space.network import deploy as real_deploy

    def broken_deploy(model):
        fused = real_deploy(model)
        with torch.no_grad():
            next(p for p in fused.parameters() if p.ndim == 4)[0, 0, 0, 0] += 1e-3
        return fused

    monkeypatch.setattr(proxy_module, "deploy", broken_deploy)
    result = proxy_train(SMALL, _recipe(_stage()), data, steps=2, seed=0, threads=1)
    assert result.status == "failed"
    assert "fused model differs" in result.reason


def test_a_patch_the_down_factor_does_not_divide_is_refused_up_front(data):
    from search_space.errors import UserError

    u3 = dataclasses.replace(SMALL, down_factor=3)
    with pytest.raises(UserError, match="stage 1: LR patch 32 is not divisible by the network's down_factor 3"):
        Trainer(u3, _recipe(_stage(patch=32)), data.train, total_steps=2, seed=0)


def _tails() -> list[dict]:
    """Every way the template ends: each zeroable block as the 3x3 tail, the plain 1x1 tail, and
    the cascade reconstruction (whose last conv is the end block)."""
    from search_space.blocks import get_block, list_blocks

    out = [dict(tail_kernel=1, end_block="conv")]
    for name in list_blocks():
        if get_block(name).can_zero_output and get_block(name).supports_channel_change:
            out += [dict(tail_kernel=3, end_block=name), dict(reconstruction="cascade", end_block=name)]
    return out


@pytest.mark.parametrize("tail", _tails(), ids=lambda t: "-".join(f"{v}" for v in t.values()))
def test_an_anchored_design_scores_exactly_its_anchor_at_step_0(data, tail):
    """The issue's contract: before any training an anchored design scores exactly what its anchor
    alone scores, whatever the tail; for the lanczos anchor that is 0 dB over Lanczos (up to a pixel
    whose float32 value lands on the other side of a rounding boundary: < 1e-4 dB)."""
    from search_space.network import build, deploy, make_anchor

    for anchor in ("lanczos", "nearest", "linear"):
        arch = ArchConfig(channels=8, blocks=1, block="rep", down_factor=2, global_residual=anchor, **tail)
        report = evaluate(deploy(build(arch)), data.val).to_dict()
        alone = evaluate(make_anchor(anchor, bias=True), data.val).to_dict()
        assert report["per_qp"] == alone["per_qp"], anchor
        if anchor == "lanczos":
            assert all(abs(m["gain_y"]) < 1e-4 for m in report["per_qp"].values())
