"""`DecoupledStridedConv` (USTC Noah's kernel-4, stride-2 DConv): exact fusion, size, parameters, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks import get_block
from search_space.blocks.dconv import DecoupledStridedConv
from search_space.errors import UserError

F64 = torch.float64
F64_ABS_TOL = 1e-9
SIZES = ((8, 10), (6, 14))


def _conv(in_ch: int, out_ch: int, *, bias: bool, act: str, seed: int = 0, **kwargs: int) -> DecoupledStridedConv:
    """Every parameter N(0, 0.5), so that every branch (biases and PReLU slopes included) contributes."""
    module = DecoupledStridedConv(in_ch, out_ch, bias=bias, act=act, **kwargs).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=F64) * 0.5)
    return module


def _x(channels: int, size: tuple[int, int], seed: int = 1) -> Tensor:
    return torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("act", ["none", "relu", "prelu", "gelu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_fuse_is_exact_on_the_whole_image_at_half_size(size: tuple[int, int], bias: bool, act: str) -> None:
    module = _conv(3, 5, bias=bias, act=act)
    x = _x(3, size)
    with torch.no_grad():
        train, deploy = module(x), module.fuse()(x)
    height, width = size
    assert train.shape == deploy.shape == (2, 5, height // 2, width // 2)
    error = (train - deploy).abs().max().item()
    assert error <= F64_ABS_TOL, f"max abs error {error:.3g}"


def test_fuse_in_float32_is_close() -> None:
    module = _conv(3, 5, bias=True, act="prelu").float()
    x = _x(3, (8, 10)).float()
    with torch.no_grad():
        train, deploy = module(x), module.fuse()(x)
    assert ((train - deploy).abs().max() / train.abs().max()).item() <= 1e-4


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_deploy_form_is_one_4x4_stride_2_conv(bias: bool) -> None:
    module = _conv(3, 6, bias=bias, act="prelu")
    fused = module.fuse()
    assert isinstance(fused, nn.Sequential) and len(fused) == 2
    conv, act = fused
    assert type(conv) is nn.Conv2d and isinstance(act, nn.PReLU)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 6, (4, 4))
    assert conv.stride == (2, 2) and conv.padding == (1, 1) and conv.groups == 1
    assert (conv.bias is not None) == bias
    assert sum(p.numel() for p in fused.parameters()) == 16 * 3 * 6 + (6 if bias else 0) + 6  # + PReLU slopes
    assert list(fused.buffers()) == []
    assert torch.equal(act.weight, module.act.weight)
    if not bias:
        assert not [name for name, _ in module.named_parameters() if name.endswith("bias")]


def test_fused_module_is_independent() -> None:
    module = _conv(3, 4, bias=True, act="prelu")
    x = _x(3, (8, 10))
    fused = module.fuse()
    with torch.no_grad():
        before = fused(x)
        assert not {p.data_ptr() for p in module.parameters()} & {p.data_ptr() for p in fused.parameters()}
        for param in module.parameters():
            param.add_(1.0)
        assert torch.equal(fused(x), before)


def test_every_parameter_reaches_the_deploy_form() -> None:
    module = _conv(3, 4, bias=True, act="none")
    x = _x(3, (8, 10))
    with torch.no_grad():
        reference = module.fuse()(x)
        for name, param in module.named_parameters():
            param.add_(0.3)
            changed = (module.fuse()(x) - reference).abs().max().item()
            param.sub_(0.3)
            assert changed > 1e-6, f"parameter {name} has no effect on the deploy output"


def test_gradients_flow_to_every_parameter_and_the_input() -> None:
    module = _conv(3, 4, bias=True, act="gelu")
    x = _x(3, (6, 14)).requires_grad_(True)
    module(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {name}"


def _only(module: DecoupledStridedConv, name: str) -> None:
    """Silence every branch, then give branch `name` unit weights and bias 0.5."""
    module.zero_output_()
    with torch.no_grad():
        getattr(module, f"{name}_weight").fill_(1.0)
        getattr(module, f"{name}_bias").fill_(0.5)


def test_horizontal_difference_hand_computed() -> None:
    """Row weights (1, 2, 3, 4), bias 0.5, on x[r, c] = 4r + c (4x4): left half minus right half per row.

    Output (0, 0) sees rows -1..2 and columns -1..2 (row -1 and column -1 are padding, 0):
    row -1: 0; row 0: (0 + 0) - (1 + 2) = -3; row 1: (0 + 4) - (5 + 6) = -7; row 2: 8 - 19 = -11,
    so 1*0 + 2*(-3) + 3*(-7) + 4*(-11) + 0.5 = -70.5. Likewise (0, 1): rows -1..2, columns 1..4:
    0, (1 + 2) - (3 + 0) = 0, 11 - 7 = 4, 19 - 11 = 8 -> 3*4 + 4*8 + 0.5 = 44.5; (1, 0): rows 1..4:
    -7, -11, 12 - 27 = -15, 0 -> -7 - 22 - 45 + 0.5 = -73.5; (1, 1): 4, 8, 12, 0 -> 4 + 16 + 36 + 0.5 = 56.5.
    """
    module = DecoupledStridedConv(1, 1, bias=True, act="none").double()
    _only(module, "horizontal")
    with torch.no_grad():
        module.horizontal_weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64).view(1, 1, 4))
    x = torch.arange(16.0, dtype=F64).view(1, 1, 4, 4)
    expected = torch.tensor([[-70.5, 44.5], [-73.5, 56.5]], dtype=F64).view(1, 1, 2, 2)
    with torch.no_grad():
        assert torch.equal(module(x), expected)
        assert torch.allclose(module.fuse()(x), expected, atol=F64_ABS_TOL, rtol=0)


def test_vertical_difference_is_the_transposed_horizontal_one() -> None:
    module = DecoupledStridedConv(1, 1, bias=True, act="none").double()
    _only(module, "vertical")
    with torch.no_grad():
        module.vertical_weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64).view(1, 1, 4))
    x = torch.arange(16.0, dtype=F64).view(1, 1, 4, 4)
    expected = torch.tensor([[-70.5, 44.5], [-73.5, 56.5]], dtype=F64).view(1, 1, 2, 2).transpose(-1, -2)
    with torch.no_grad():
        assert torch.equal(module(x.transpose(-1, -2)), expected)


def test_centre_is_the_2x2_block_the_output_pixel_replaces() -> None:
    """Unit central-difference weights: y = (sum of the 16 taps) - 16 * mean(2x2 centre) + 0.5."""
    module = DecoupledStridedConv(1, 1, bias=True, act="none").double()
    _only(module, "central")
    x = _x(1, (6, 8))
    window_sums = F.conv2d(x, torch.ones(1, 1, 4, 4, dtype=F64), stride=2, padding=1)
    expected = window_sums - 16 * F.avg_pool2d(x, 2) + 0.5
    with torch.no_grad():
        assert torch.allclose(module(x), expected, atol=1e-12, rtol=0)
    # A constant image: zero inside (+ bias), and at the border -c per tap outside the image.
    c = 2.0
    with torch.no_grad():
        y = module(torch.full((1, 1, 6, 8), c, dtype=F64)) - 0.5
    assert y[0, 0, 1, 1] == 0.0 and y[0, 0, 0, 0] == -7 * c and y[0, 0, 0, 1] == -4 * c


def test_kernel_3_stride_1_is_the_dconv_block() -> None:
    """The 3x3 `dconv` rule (left column minus right column, the centre tap) is the k = 3 case."""
    block = get_block("dconv")(3, 4, bias=True, act="none").double()
    module = _conv(3, 4, bias=True, act="none", kernel=3, stride=1)
    block.load_state_dict(module.state_dict())
    x = _x(3, (7, 9))
    with torch.no_grad():
        assert torch.allclose(module(x), block(x), atol=1e-12, rtol=0)
        assert module.fuse()[0].padding == (1, 1)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_zero_output_makes_both_forms_exactly_zero(bias: bool) -> None:
    for dtype in (F64, torch.float32):
        module = _conv(3, 4, bias=bias, act="prelu").to(dtype)
        rng = torch.random.get_rng_state()
        module.zero_output_()
        assert torch.equal(torch.random.get_rng_state(), rng)
        x = _x(3, (8, 10)).to(dtype) * 10
        with torch.no_grad():
            assert torch.equal(module(x), torch.zeros(2, 4, 4, 5, dtype=dtype))
            assert torch.equal(module.fuse()(x), torch.zeros(2, 4, 4, 5, dtype=dtype))


def test_head_macs_are_48_c_per_output_pixel() -> None:
    """3 -> C, 4x4 at H/2 x W/2: 3 * 16 * C = 48 C MACs per output pixel (thop, the project's counter)."""
    from search_space.cost import profile_macs  # thop is imported lazily there

    channels = 16
    fused = DecoupledStridedConv(3, channels).fuse()
    assert profile_macs(fused, hw=(540, 960)) == 48 * channels * 270 * 480  # 99,532,800


@pytest.mark.parametrize(("kernel", "stride"), [(4, 1), (3, 2), (1, 1), (2, 4)])
def test_geometries_without_a_same_fraction_padding_are_user_errors(kernel: int, stride: int) -> None:
    with pytest.raises(UserError, match="kernel"):
        DecoupledStridedConv(3, 4, kernel=kernel, stride=stride)
