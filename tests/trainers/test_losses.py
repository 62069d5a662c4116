"""Losses against hand arithmetic on tiny tensors, combinations, registry and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from search_space.errors import UserError
from trainers import losses
from trainers.losses import (
    CombinedLoss,
    LossSpec,
    build_loss,
    charbonnier_loss,
    distillation_loss,
    fft_l1_loss,
    gradient_loss,
    l1_loss,
    list_losses,
    mse_loss,
    register_loss,
)


def img(rows: list[list[float]], *, requires_grad: bool = False) -> torch.Tensor:
    """A 1 x 1 x H x W float64 tensor from nested rows."""
    t = torch.tensor(rows, dtype=torch.float64)[None, None]
    return t.requires_grad_(requires_grad)


# o - t = [[-1, 0], [2, 4]]
O = [[1.0, 2.0], [3.0, 4.0]]
T = [[2.0, 2.0], [1.0, 0.0]]


def test_l1_by_hand() -> None:
    # |-1| + 0 + 2 + 4 = 7 over 4 pixels
    assert l1_loss(img(O), img(T)).item() == pytest.approx(7 / 4)


def test_mse_by_hand() -> None:
    # 1 + 0 + 4 + 16 = 21 over 4 pixels
    assert mse_loss(img(O), img(T)).item() == pytest.approx(21 / 4)


def test_charbonnier_by_hand() -> None:
    # differences 0, 1.2, -1.2, 0 with eps 0.5: sqrt(0.25) = 0.5, sqrt(1.44 + 0.25) = 1.3
    o = img([[0.0, 1.2], [-1.2, 0.0]])
    zero = img([[0.0, 0.0], [0.0, 0.0]])
    assert charbonnier_loss(o, zero, eps=0.5).item() == pytest.approx((0.5 + 1.3 + 1.3 + 0.5) / 4)
    # default eps 1e-3: identical images cost exactly eps
    assert charbonnier_loss(zero, zero).item() == pytest.approx(1e-3)


def test_fft_by_hand_2x2() -> None:
    # o - t = [[1, 2], [3, 4]]. Ortho 2x2 DFT: X[k,l] = 1/2 * sum x[m,n] (-1)^(km + ln);
    # rfft2 keeps l = 0, 1 (W//2 + 1 = 2): X00 = 10/2 = 5, X01 = (1-2+3-4)/2 = -1,
    # X10 = (1+2-3-4)/2 = -2, X11 = (1-2-3+4)/2 = 0; all imaginary parts 0.
    # Mean over 4 real + 4 imaginary components: (5 + 1 + 2 + 0) / 8 = 1.
    o = img([[1.5, 2.5], [3.5, 4.5]])
    t = img([[0.5, 0.5], [0.5, 0.5]])
    assert fft_l1_loss(o, t).item() == pytest.approx(1.0)


def test_fft_by_hand_with_imaginary_parts() -> None:
    # One row x = [1, 2, 3, 4] (H = 1, W = 4), ortho factor 1/sqrt(4) = 1/2, half spectrum l = 0, 1, 2:
    # X0 = 10/2 = 5; X1 = (1 - 2i - 3 + 4i)/2 = -1 + i; X2 = (1 - 2 + 3 - 4)/2 = -1.
    # Components |5|, |0|, |-1|, |1|, |-1|, |0| -> 8 over 6.
    o = img([[1.0, 2.0, 3.0, 4.0]])
    t = img([[0.0, 0.0, 0.0, 0.0]])
    assert fft_l1_loss(o, t).item() == pytest.approx(8 / 6)


def test_fft_averages_over_channels_and_batch() -> None:
    # Channel 2 = 3 x channel 1 (linear), so the per-channel losses are 1 and 3; mean 2.
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    o = torch.stack([d, 3 * d])[None].repeat(2, 1, 1, 1)  # 2 x 2 x 2 x 2
    assert fft_l1_loss(o, torch.zeros_like(o)).item() == pytest.approx(2.0)


def test_gradient_by_hand() -> None:
    o = img([[1.0, 2.0], [3.0, 5.0]])
    zero = img([[0.0, 0.0], [0.0, 0.0]])
    # horizontal differences [1, 2] -> mean 1.5; vertical [2, 3] -> mean 2.5; average 2.0
    assert gradient_loss(o, zero).item() == pytest.approx(2.0)
    t = img([[0.0, 0.0], [0.0, 1.0]])
    # target: horizontal [0, 1], vertical [0, 1]; |[1,2]-[0,1]| -> 1, |[2,3]-[0,1]| -> 2; average 1.5
    assert gradient_loss(o, t).item() == pytest.approx(1.5)
    # a constant offset has no gradient
    assert gradient_loss(o + 7.0, o).item() == pytest.approx(0.0)


def test_builtin_losses_are_symmetric() -> None:
    # distillation computes L(teacher, student) with the same functions, so the order must not matter
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 6, 5, generator=g, dtype=torch.float64)
    b = torch.rand(2, 3, 6, 5, generator=g, dtype=torch.float64)
    for name in ["l1", "mse", "charbonnier", "fft", "gradient"]:
        fn = build_loss({name: 1.0})
        assert fn(a, b).item() == pytest.approx(fn(b, a).item(), rel=1e-12), name


def test_combination_weights() -> None:
    # l1 = 7/4, mse = 21/4 -> 1.75 + 0.5 * 5.25 = 4.375
    combined = build_loss(LossSpec.from_dict({"l1": 1.0, "mse": 0.5}))
    assert combined(img(O), img(T)).item() == pytest.approx(4.375)
    # o - t = [[1,2],[3,4]]: l1 = 2.5, fft = 1.0 (see test_fft_by_hand_2x2) -> 2.5 + 0.05
    o, zero = img([[1.0, 2.0], [3.0, 4.0]]), img([[0.0, 0.0], [0.0, 0.0]])
    assert build_loss({"l1": 1.0, "fft": 0.05})(o, zero).item() == pytest.approx(2.55)
    terms = build_loss({"l1": 1.0, "fft": 0.05}).terms(o, zero)
    assert {k: v.item() for k, v in terms.items()} == pytest.approx({"fft": 1.0, "l1": 2.5})


def test_spec_charbonnier_eps_reaches_the_loss() -> None:
    o = img([[0.0, 1.2], [-1.2, 0.0]])
    zero = img([[0.0, 0.0], [0.0, 0.0]])
    spec = LossSpec.from_dict({"charbonnier": 2.0, "charbonnier_eps": 0.5})
    assert build_loss(spec)(o, zero).item() == pytest.approx(2.0 * 0.9)
    assert spec.to_dict() == {"charbonnier": 2.0, "charbonnier_eps": 0.5}
    assert LossSpec.from_dict({"charbonnier": 1}).to_dict() == {"charbonnier": 1.0, "charbonnier_eps": 1e-3}


def test_spec_is_canonical_and_hashable() -> None:
    a = LossSpec.from_dict({"l1": 1.0, "fft": 0.05})
    b = LossSpec.from_dict({"fft": 0.05, "l1": 1})
    assert a == b and hash(a) == hash(b)
    assert a.weights == (("fft", 0.05), ("l1", 1.0))
    assert LossSpec.from_dict(a.to_dict()) == a
    # "l2" is an alias of "mse": one loss, one spelling
    assert LossSpec.from_dict({"l2": 1.0}) == LossSpec.from_dict({"mse": 1.0})
    assert LossSpec(weights={"l1": 1.0}) == LossSpec(weights=(("l1", 1.0),))


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(UserError, match=r"unknown loss 'l3'; valid losses: charbonnier, fft, gradient, l1, mse"):
        LossSpec.from_dict({"l3": 1.0})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({}, "empty"),
        ({"l1": 0.0}, "weight must be a finite number > 0"),
        ({"l1": -1.0}, "weight must be a finite number > 0"),
        ({"l1": math.inf}, "weight must be a finite number > 0"),
        ({"l1": True}, "weight must be a number"),
        ({"l1": "1"}, "weight must be a number"),
        ({"l2": 1.0, "mse": 1.0}, "given twice"),
        ({"l1": 1.0, "charbonnier_eps": 1e-6}, "no 'charbonnier' term"),
        ({"charbonnier": 1.0, "charbonnier_eps": 0}, "charbonnier_eps must be a finite number > 0"),
    ],
)
def test_bad_specs(mapping: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        LossSpec.from_dict(mapping)


def test_spec_must_be_a_mapping() -> None:
    with pytest.raises(UserError, match="table of name = weight"):
        LossSpec.from_dict("l1")  # type: ignore[arg-type]


def test_register_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "_LOSSES", dict(losses._LOSSES))

    @register_loss("max_abs")
    def max_abs(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).abs().max()

    assert "max_abs" in list_losses()
    # |o - t| max = 4; plus 0.5 * l1 (7/4)
    assert build_loss({"max_abs": 1.0, "l1": 0.5})(img(O), img(T)).item() == pytest.approx(4 + 7 / 8)
    with pytest.raises(RuntimeError, match="registered twice"):
        register_loss("max_abs")(max_abs)
    for bad in ["Max", "two words", "charbonnier_eps", "l2"]:
        with pytest.raises(ValueError, match="lowercase identifier"):
            register_loss(bad)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="H, W >= 2"):
        gradient_loss(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))


@pytest.mark.parametrize("name", ["l1", "mse", "charbonnier", "fft", "gradient", "all"])
def test_gradients_are_finite(name: str) -> None:
    mapping = {n: 1.0 for n in ["l1", "mse", "charbonnier", "fft", "gradient"]} if name == "all" else {name: 1.0}
    fn = build_loss(mapping)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 8, 8, generator=g)
    out = torch.rand(2, 3, 8, 8, generator=g).requires_grad_(True)
    fn(out, target).backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()
    assert out.grad.abs().sum() > 0
    # also where the loss is at its minimum (zero difference: |x| and sqrt have kinks there)
    same = target.clone().requires_grad_(True)
    fn(same, target).backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()


def test_distillation_by_hand() -> None:
    student = img([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    teacher = img([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    # mse = (0 + 1 + 4 + 9) / 4 = 3.5, times 0.1
    loss = distillation_loss(student, teacher, spec=LossSpec.from_dict({"mse": 1.0}), weight=0.1)
    assert loss.item() == pytest.approx(0.35)
    loss.backward()
    # d/ds 0.1 * mean((s - t)^2) = 0.1 * 2 (s - t) / 4 = 0.05 (s - t); the teacher gets nothing
    assert student.grad is not None
    assert student.grad.flatten().tolist() == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert teacher.grad is None


def test_casr_objective() -> None:
    # CASR: L(sr, hr) + 0.1 L(sr_teacher, sr) with L = MSE
    sr, hr, sr_t = img([[1.0, 2.0], [3.0, 4.0]]), img([[1.0, 2.0], [3.0, 2.0]]), img([[0.0, 2.0], [3.0, 4.0]])
    spec = LossSpec.from_dict({"mse": 1.0})
    total = build_loss(spec)(sr, hr) + distillation_loss(sr, sr_t, spec=build_loss(spec), weight=0.1)
    # mse(sr, hr) = 4/4 = 1; mse(sr, sr_t) = 1/4; total = 1 + 0.025
    assert total.item() == pytest.approx(1.025)
    assert isinstance(build_loss(spec), CombinedLoss)
