"""search_space.shuffle: the training-mode pixel (un)shuffle is the library's permutation, bit for bit,
forward and backward; eval mode (deploy models) uses the library op itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_space.arch import ArchConfig
from search_space.network import build, deploy
from search_space.shuffle import PixelShuffle, PixelUnshuffle


@pytest.mark.parametrize(("shape", "r"), [((2, 48, 5, 7), 4), ((1, 27, 6, 4), 3), ((3, 12, 1, 1), 2), ((2, 8, 3, 5), 1)])
def test_training_shuffle_is_the_library_permutation(shape: tuple[int, ...], r: int) -> None:
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, ref = PixelShuffle(r).train(), torch.nn.PixelShuffle(r)
    out = ours(x)
    assert torch.equal(out, ref(x))
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    (grad_ref,) = torch.autograd.grad(F.pixel_shuffle(x, r), x, g)
    assert torch.equal(grad, grad_ref)
    y = F.pixel_shuffle(x.detach(), r).requires_grad_(True)
    back = PixelUnshuffle(r).train()(y)
    assert torch.equal(back, F.pixel_unshuffle(y, r)) and torch.equal(back, x.detach())
    (grad_u,) = torch.autograd.grad(back, y, x.detach())
    assert torch.equal(grad_u, F.pixel_shuffle(x.detach(), r))


def test_eval_mode_calls_the_library_op(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.nn.PixelShuffle.forward
    monkeypatch.setattr(torch.nn.PixelShuffle, "forward", lambda self, x: calls.append(1) or real(self, x))
    x = torch.randn(1, 48, 4, 4)
    PixelShuffle(4).train()(x)
    assert calls == []
    PixelShuffle(4).eval()(x)
    assert calls == [1]


def test_a_network_trains_and_deploys_the_same_with_either_shuffle() -> None:
    arch = ArchConfig(channels=6, blocks=1, block="rep", down_factor=2, global_residual="lanczos")
    torch.manual_seed(0)
    model = build(arch).double()
    x = torch.rand(2, 3, 8, 12, dtype=torch.float64)
    train_out = model.train()(x)
    assert torch.equal(train_out, model.eval()(x))
    assert torch.allclose(deploy(model)(x), train_out, rtol=0, atol=1e-12)
