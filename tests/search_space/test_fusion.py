"""Each fusion primitive against a direct computation of the map it claims to fold (float64)."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.fusion import (
    add_branches,
    centre_taps,
    depthwise_to_dense,
    fold_directional_difference,
    fold_pixel_difference,
    from_conv2d,
    fuse_1x1_then_3x3,
    fuse_3x3_then_1x1,
    identity_kernel,
    pad_to_3x3,
    pad_with_bias,
    to_conv2d,
)

F64 = torch.float64
EXACT = 1e-10


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _shift(x: Tensor, du: int, dv: int) -> Tensor:
    """`x(p + (du, dv))` at every pixel p, zero outside the image."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + du : 1 + du + height, 1 + dv : 1 + dv + width]


def _pixelwise(weight: Tensor, x: Tensor) -> Tensor:
    """Apply an (out, in) channel-mixing matrix at every pixel."""
    return torch.einsum("oi,nihw->nohw", weight, x)


def _conv3(x: Tensor, conv: tuple[Tensor, Tensor | None]) -> Tensor:
    return F.conv2d(x, conv[0], conv[1], padding=1)



@pytest.fixture
def x() -> Tensor:
    return _randn(2, 3, 7, 8, seed=0)


def test_pad_to_3x3_puts_the_1x1_at_the_centre(x: Tensor) -> None:
    w = _randn(4, 3, 1, 1, seed=1)
    padded = pad_to_3x3(w)
    assert padded.shape == (4, 3, 3, 3)
    assert torch.equal(padded[:, :, 1, 1], w[:, :, 0, 0])
    assert padded.abs().sum() == w.abs().sum()  # nothing off-centre
    assert torch.allclose(F.conv2d(x, padded, padding=1), F.conv2d(x, w), atol=EXACT, rtol=0)
    assert pad_to_3x3(padded) is padded
    with pytest.raises(ValueError, match="1x1 or 3x3"):
        pad_to_3x3(_randn(4, 3, 5, 5, seed=2))


def test_identity_kernel_is_the_identity_map() -> None:
    x = _randn(2, 5, 6, 7, seed=3)
    kernel = identity_kernel(5, dtype=F64)
    assert kernel.shape == (5, 5, 3, 3) and kernel.sum() == 5
    assert torch.equal(F.conv2d(x, kernel, padding=1), x)


def test_add_branches_sums_mixed_kernel_sizes(x: Tensor) -> None:
    w3, b3 = _randn(4, 3, 3, 3, seed=4), _randn(4, seed=5)
    w1, b1 = _randn(4, 3, 1, 1, seed=6), _randn(4, seed=7)
    w1b = _randn(4, 3, 1, 1, seed=8)
    direct = F.conv2d(x, w3, b3, padding=1) + F.conv2d(x, w1, b1) + F.conv2d(x, w1b)
    fused = add_branches((w3, b3), (w1, b1), (w1b, None))
    assert fused[1] is not None
    assert torch.allclose(_conv3(x, fused), direct, atol=EXACT, rtol=0)
    assert torch.allclose(fused[1], b3 + b1, atol=EXACT, rtol=0)


def test_add_branches_keeps_bias_free_branches_bias_free() -> None:
    kernel, bias = add_branches((_randn(2, 2, 3, 3, seed=9), None), (_randn(2, 2, 1, 1, seed=10), None))
    assert bias is None and kernel.shape == (2, 2, 3, 3)
    with pytest.raises(ValueError):
        add_branches()


def _one_three_reference(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    # SPAN's route, independent of pad_with_bias: the 1x1 runs on the zero-padded input, so its
    # output ring is b1; then an unpadded 3x3.
    return F.conv2d(F.conv2d(F.pad(x, (1, 1, 1, 1)), w1, b1), w2, b2)


@pytest.mark.parametrize("with_bias", [True, False])
def test_fuse_1x1_then_3x3_is_exact_on_the_whole_image(x: Tensor, with_bias: bool) -> None:
    w1, w2 = _randn(6, 3, 1, 1, seed=11), _randn(4, 6, 3, 3, seed=12)
    b1 = _randn(6, seed=13) if with_bias else None
    b2 = _randn(4, seed=14) if with_bias else None
    direct = _one_three_reference(x, w1, b1, w2, b2)
    fused = fuse_1x1_then_3x3((w1, b1), (w2, b2))
    assert fused[0].shape == (4, 3, 3, 3)
    assert (fused[1] is None) == (not with_bias)
    assert torch.allclose(_conv3(x, fused), direct, atol=EXACT, rtol=0)
    # The training helper computes the same thing as the zero-padded-input route.
    via_helper = F.conv2d(pad_with_bias(F.conv2d(x, w1, b1), b1), w2, b2)
    assert torch.allclose(via_helper, direct, atol=EXACT, rtol=0)


def test_fuse_1x1_then_3x3_bias_only_in_the_first_conv(x: Tensor) -> None:
    w1, b1, w2 = _randn(5, 3, 1, 1, seed=15), _randn(5, seed=16), _randn(2, 5, 3, 3, seed=17)
    fused = fuse_1x1_then_3x3((w1, b1), (w2, None))
    assert fused[1] is not None
    assert torch.allclose(_conv3(x, fused), _one_three_reference(x, w1, b1, w2, None), atol=EXACT, rtol=0)


def test_zero_padding_the_intermediate_breaks_only_the_border(x: Tensor) -> None:
    w1, b1 = _randn(6, 3, 1, 1, seed=18), _randn(6, seed=19)
    w2, b2 = _randn(4, 6, 3, 3, seed=20), _randn(4, seed=21)
    fused = _conv3(x, fuse_1x1_then_3x3((w1, b1), (w2, b2)))
    wrong = F.conv2d(F.conv2d(x, w1, b1), w2, b2, padding=1)  # the usual nn.Conv2d(padding=1)
    error = (fused - wrong).abs()
    assert error[..., 1:-1, 1:-1].max() < EXACT
    ring = error.clone()
    ring[..., 1:-1, 1:-1] = 0
    assert ring.amax(dim=(0, 2, 3)).min() > 1e-3  # every output channel is wrong on the border


def test_fuse_1x1_then_3x3_hand_computed() -> None:
    # 1 channel: 1x1 weight 2, bias 1; 3x3 all ones, no bias. On a zero image the intermediate is 1
    # everywhere (ring included), so every output is 9; the fused bias is sum(W2) * b1 = 9.
    kernel, bias = fuse_1x1_then_3x3(
        (torch.full((1, 1, 1, 1), 2.0, dtype=F64), torch.ones(1, dtype=F64)),
        (torch.ones(1, 1, 3, 3, dtype=F64), None),
    )
    assert torch.equal(kernel, torch.full((1, 1, 3, 3), 2.0, dtype=F64))
    assert bias is not None and bias.item() == 9.0
    zero = torch.zeros(1, 1, 3, 4, dtype=F64)
    assert torch.equal(F.conv2d(zero, kernel, bias, padding=1), torch.full((1, 1, 3, 4), 9.0, dtype=F64))
    # The zero-padded intermediate sees 4 ones in a corner and 6 on an edge instead of 9.
    wrong = F.conv2d(torch.ones(1, 1, 3, 4, dtype=F64), torch.ones(1, 1, 3, 3, dtype=F64), padding=1)
    assert wrong[0, 0, 0, 0] == 4.0 and wrong[0, 0, 0, 1] == 6.0 and wrong[0, 0, 1, 1] == 9.0


@pytest.mark.parametrize("with_bias", [True, False])
def test_fuse_3x3_then_1x1(x: Tensor, with_bias: bool) -> None:
    w1, w2 = _randn(7, 3, 3, 3, seed=22), _randn(4, 7, 1, 1, seed=23)
    b1 = _randn(7, seed=24) if with_bias else None
    b2 = _randn(4, seed=25) if with_bias else None
    direct = F.conv2d(F.conv2d(x, w1, b1, padding=1), w2, b2)
    fused = fuse_3x3_then_1x1((w1, b1), (w2, b2))
    assert (fused[1] is None) == (not with_bias)
    assert torch.allclose(_conv3(x, fused), direct, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match="1x1 second"):
        fuse_3x3_then_1x1((w1, b1), (_randn(4, 7, 3, 3, seed=26), b2))


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_fold_pixel_difference_matches_explicit_differences(x: Tensor, sign: float) -> None:
    w = _randn(4, 3, 3, 3, seed=27)
    direct = sum(
        _pixelwise(w[:, :, u, v], _shift(x, u - 1, v - 1) + sign * x) for u in range(3) for v in range(3)
    )
    folded = fold_pixel_difference(w, sign=sign)
    assert torch.allclose(F.conv2d(x, folded, padding=1), direct, atol=EXACT, rtol=0)


def test_central_difference_hand_computed() -> None:
    # All-ones weights on a constant image c: zero inside; at a corner 5 of the 8 neighbours are
    # outside the image (value 0), so the output is 5 * (0 - c); on an edge 3 * (0 - c).
    c = 2.5
    x = torch.full((1, 1, 4, 5), c, dtype=F64)
    y = F.conv2d(x, fold_pixel_difference(torch.ones(1, 1, 3, 3, dtype=F64), sign=-1.0), padding=1)
    assert y[0, 0, 1, 1] == 0.0 and y[0, 0, 0, 0] == -5 * c and y[0, 0, 0, 2] == -3 * c


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_fold_directional_difference_matches_explicit_differences(x: Tensor, direction: str) -> None:
    a = _randn(4, 3, 3, seed=28)
    if direction == "horizontal":
        terms = (_pixelwise(a[:, :, r], _shift(x, r - 1, -1) - _shift(x, r - 1, 1)) for r in range(3))
    else:
        terms = (_pixelwise(a[:, :, c], _shift(x, -1, c - 1) - _shift(x, 1, c - 1)) for c in range(3))
    direct = sum(terms)
    kernel = fold_directional_difference(a, direction=direction)
    assert torch.allclose(F.conv2d(x, kernel, padding=1), direct, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match="direction"):
        fold_directional_difference(a, direction="diagonal")


def _taps(x: Tensor, k: int, stride: int) -> dict[tuple[int, int], Tensor]:
    """Tap (u, v) of every k x k window (padding (k - stride) / 2, zeros outside), by slicing."""
    pad = (k - stride) // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    out_h, out_w = ((n + 2 * pad - k) // stride + 1 for n in x.shape[-2:])
    return {
        (u, v): padded[..., u : u + stride * (out_h - 1) + 1 : stride, v : v + stride * (out_w - 1) + 1 : stride]
        for u in range(k)
        for v in range(k)
    }


def test_centre_taps() -> None:
    assert [centre_taps(k) for k in (1, 3, 5)] == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert [centre_taps(k) for k in (2, 4, 6)] == [slice(0, 2), slice(1, 3), slice(2, 4)]


@pytest.mark.parametrize(("k", "stride"), [(4, 2), (5, 1), (2, 2)])
@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_fold_pixel_difference_any_kernel_and_stride(x: Tensor, k: int, stride: int, sign: float) -> None:
    """An even kernel's centre is the mean of its central 2x2 taps, an odd one's the central tap."""
    w = _randn(4, 3, k, k, seed=33)
    taps = _taps(x, k, stride)
    middle = range(k // 2 - 1, k // 2 + 1) if k % 2 == 0 else (k // 2,)
    centre = sum(taps[(u, v)] for u in middle for v in middle) / len(middle) ** 2
    direct = sum(_pixelwise(w[:, :, u, v], taps[(u, v)] + sign * centre) for u in range(k) for v in range(k))
    folded = fold_pixel_difference(w, sign=sign)
    fused = F.conv2d(x, folded, stride=stride, padding=(k - stride) // 2)
    assert fused.shape == direct.shape
    assert torch.allclose(fused, direct, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match="square"):
        fold_pixel_difference(_randn(4, 3, 3, 4, seed=34))


@pytest.mark.parametrize(("k", "stride"), [(4, 2), (5, 1), (2, 2)])
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_fold_directional_difference_any_kernel_and_stride(x: Tensor, k: int, stride: int, direction: str) -> None:
    """Left half minus right half of each row (top minus bottom of each column); odd k skips the middle."""
    a = _randn(4, 3, k, seed=35)
    taps = _taps(x, k, stride)
    half = k // 2
    if direction == "horizontal":
        terms = (
            _pixelwise(a[:, :, r], taps[(r, c)] - taps[(r, k - 1 - c)]) for r in range(k) for c in range(half)
        )
    else:
        terms = (
            _pixelwise(a[:, :, c], taps[(r, c)] - taps[(k - 1 - r, c)]) for c in range(k) for r in range(half)
        )
    direct = sum(terms)
    kernel = fold_directional_difference(a, direction=direction)
    assert kernel.shape == (4, 3, k, k)
    fused = F.conv2d(x, kernel, stride=stride, padding=(k - stride) // 2)
    assert torch.allclose(fused, direct, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match="k >= 2"):
        fold_directional_difference(_randn(4, 3, 1, seed=36), direction=direction)


def test_depthwise_to_dense(x: Tensor) -> None:
    dw = _randn(3, 1, 3, 3, seed=29)
    dense = depthwise_to_dense(dw)
    assert dense.shape == (3, 3, 3, 3)
    direct = F.conv2d(x, dw, padding=1, groups=3)
    assert torch.allclose(F.conv2d(x, dense, padding=1), direct, atol=EXACT, rtol=0)


def test_pad_with_bias_writes_the_bias_into_the_ring_only(x: Tensor) -> None:
    bias = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    padded = pad_with_bias(x, bias)
    assert padded.shape == (2, 3, 9, 10)
    assert torch.equal(padded[..., 1:-1, 1:-1], x)
    for channel, value in enumerate(bias.tolist()):
        ring = padded[:, channel]
        for edge in (ring[:, 0, :], ring[:, -1, :], ring[:, :, 0], ring[:, :, -1]):
            assert torch.all(edge == value)
    assert torch.equal(pad_with_bias(x, None), F.pad(x, (1, 1, 1, 1)))


@pytest.mark.parametrize("with_bias", [True, False])
def test_to_conv2d_is_an_independent_copy(x: Tensor, with_bias: bool) -> None:
    w = _randn(4, 3, 3, 3, seed=30)
    b = _randn(4, seed=31) if with_bias else None
    layer = to_conv2d((w, b))
    assert isinstance(layer, nn.Conv2d) and layer.padding == (1, 1) and layer.weight.dtype == F64
    assert (layer.bias is None) == (not with_bias)
    expected = F.conv2d(x, w, b, padding=1)
    w.add_(1.0)
    assert torch.allclose(layer(x), expected, atol=EXACT, rtol=0)
    assert to_conv2d((_randn(4, 3, 1, 1, seed=32), None)).weight.shape == (4, 3, 3, 3)


def test_from_conv2d_rejects_what_it_cannot_fuse() -> None:
    layer = nn.Conv2d(3, 4, 3, padding=1)
    weight, bias = from_conv2d(layer)
    assert weight is layer.weight and bias is layer.bias
    with pytest.raises(ValueError, match="dense stride-1"):
        from_conv2d(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    with pytest.raises(ValueError, match="dense stride-1"):
        from_conv2d(nn.Conv2d(4, 4, 3, padding=1, stride=2))
