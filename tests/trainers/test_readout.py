"""trainers.readout: the closed-form refit of a deploy model's last conv (evaluation only)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from search_space.arch import ArchConfig
from search_space.network import build, deploy
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.readout import last_conv, refit_readout


def _teacher_pairs(teacher: torch.nn.Module, rng: np.random.Generator, n: int = 4, side: int = 48) -> PairedSet:
    """LR: random 48x48 images (one readout patch is one whole image, so patch borders are image borders);
    HR: the teacher's output, rounded to 8 bits."""
    lrs, hrs = [], []
    for _ in range(n):
        base = rng.integers(60, 196, (side // 4, side // 4, 3)).astype(np.float64)  # no clipping of HR
        lr = np.clip(np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8)
        x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).unsqueeze(0).double() / 255.0
        with torch.no_grad():
            hr = teacher(x)[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().numpy()
        lrs.append(lr)
        hrs.append(hr)
    return PairedSet(names=tuple(f"t{i}" for i in range(n)), hr=tuple(hrs), lr={31: tuple(lrs), 63: tuple(lrs)},
                     spec=DegradeSpec(), source="teacher", split="train")


@pytest.mark.parametrize(
    "arch",
    [
        ArchConfig(channels=6, blocks=1, block="rep", down_factor=2, global_residual="lanczos"),
        ArchConfig(channels=6, blocks=1, block="conv", down_factor=2, reconstruction="cascade", global_residual="bilinear"),
        ArchConfig(channels=6, blocks=1, block="conv", tail_kernel=1, bias=False, global_residual="nearest"),
    ],
    ids=lambda a: a.summary(),
)
def test_the_refit_recovers_a_teacher_whose_tail_was_zeroed(arch: ArchConfig) -> None:
    torch.manual_seed(0)
    teacher = deploy(build(arch)).double()
    conv, _ = last_conv(teacher)
    probe = torch.rand(1, 3, 48, 48, dtype=torch.float64) * 0.5 + 0.25
    with torch.no_grad():  # a tail far from zero (its output's std 0.03), so the zeroed student is visibly off
        conv.weight.normal_(0, 1.0)
        if conv.bias is not None:
            conv.bias.normal_(0, 0.01)
        captured = []
        hook = conv.register_forward_hook(lambda _m, _a, out: captured.append(out))
        teacher(probe)
        hook.remove()
        conv.weight.mul_(0.03 / float(captured[0].std()))
    train = _teacher_pairs(teacher, np.random.default_rng(1))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        last_conv(student)[0].weight.zero_()
        if last_conv(student)[0].bias is not None:
            last_conv(student)[0].bias.zero_()
    before = copy.deepcopy(student.state_dict())
    refit, fit = refit_readout(student, train, batches=4, augment=False)  # HR = teacher(LR) only unrotated
    assert fit is not None and fit.mse_refit < fit.mse_trained / 50
    for k, v in student.state_dict().items():  # the model passed in is not modified
        assert torch.equal(v, before[k])
    x = torch.from_numpy(train.lr[31][0].transpose(2, 0, 1).copy()).unsqueeze(0).double() / 255.0
    with torch.no_grad():
        gap = (refit.double()(x) - teacher(x)).abs().max().item()
        zeroed = (student(x) - teacher(x)).abs().max().item()
    # Every output pixel, borders included, is the teacher's up to its 8-bit rounding.
    assert zeroed > 0.1 and gap < 3e-3, (zeroed, gap)
    assert (last_conv(refit)[0].bias is None) == (not arch.bias)


def test_a_network_without_a_conv_readout_is_left_as_is() -> None:
    dual = deploy(build(ArchConfig(channels=4, blocks=1, residual_channels=3)))
    train = _teacher_pairs(deploy(build(ArchConfig(channels=4, blocks=0, global_residual="lanczos"))).double(), np.random.default_rng(0))
    assert last_conv(dual) is None
    model, fit = refit_readout(dual, train)
    assert model is dual and fit is None
