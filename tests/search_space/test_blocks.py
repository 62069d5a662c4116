"""Contract of every registered body block: exact fusion, deploy structure, independence, gradients.

The contract tests are parametrized over `list_blocks()`, so a newly registered block is covered
without editing this file. Weights are randomized (biases, edge scales and PReLU slopes included)
so that every branch contributes; default inits (ECB scales of 1e-3, zero-ish biases) could hide a
missing branch.
"""

from __future__ import annotations

import copy

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks import ACTIVATIONS, Block, get_block, list_blocks, make_activation
from search_space.blocks import ecb as ecb_module
from search_space.blocks import rep as rep_module
from search_space.blocks import repvit as repvit_module
from search_space.blocks import safmpp as safmpp_module
from search_space.errors import UserError

#: Small training-only widths, for speed; the defaults are checked in their own test.
SMALL_KWARGS: dict[str, dict[str, Any]] = {"rep_casr": {"mid_a": 6, "mid_b": 5}}
#: Deploy convs per block (default 1): SPAB keeps its three convs apart (non-linear glue between).
DEPLOY_CONVS: dict[str, int] = {"spab": 3, "spab_noatt": 3, "repvit": 5, "safmpp": 5}
#: Blocks that fuse only partly (non-linear glue between their convs): the extra parameter-free leaf
#: modules their deploy form may keep. Their deploy convs may be 1x1 or depthwise too (e.g. an FFN or
#: a squeeze-excite); every conv must still be stride 1 and keep the size. Plain blocks are not listed.
PARTLY_FUSED: dict[str, tuple[type[nn.Module], ...]] = {
    "repvit": (repvit_module.GlobalAvgPool, nn.Sigmoid, nn.ReLU),  # SE pooling and fixed gate/ReLU
    "safmpp": (safmpp_module.MaxPoolToFraction, safmpp_module.ResizeBilinearLike, safmpp_module.Multiply),
}
SIZES = ((7, 9), (8, 10))
CHANNELS = ((4, 4), (3, 5))
ACT_TYPES = tuple({type(make_activation(name, 4)) for name in ACTIVATIONS})
F64_ABS_TOL = 1e-9
F32_REL_TOL = 1e-4


def _block_channels() -> list[tuple[str, int, int]]:
    cases = []
    for name in list_blocks():
        for in_ch, out_ch in CHANNELS:
            if in_ch == out_ch or get_block(name).supports_channel_change:
                cases.append((name, in_ch, out_ch))
    return cases


BLOCK_CHANNELS = _block_channels()
BLOCK_IDS = [f"{name}-{i}to{o}" for name, i, o in BLOCK_CHANNELS]


def randomize(module: nn.Module, *, seed: int, std: float = 0.5) -> None:
    """Replace every parameter by N(0, std) noise (buffers such as fixed edge masks stay)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * std)


def make_block(
    name: str,
    in_ch: int,
    out_ch: int,
    *,
    bias: bool,
    act: str,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Block:
    block = get_block(name)(in_ch, out_ch, bias=bias, act=act, **SMALL_KWARGS.get(name, {}))
    block = block.to(dtype)
    randomize(block, seed=seed)
    return block


def _input(in_ch: int, size: tuple[int, int], *, dtype: torch.dtype, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, in_ch, *size, generator=generator, dtype=torch.float64).to(dtype)


def fusion_error(block: Block, x: Tensor) -> tuple[Tensor, Tensor]:
    """(|train - deploy| per element, train output)."""
    with torch.no_grad():
        train = block(x)
        deploy = block.fuse()(x)
    assert deploy.shape == train.shape == (x.shape[0], block.out_ch, *x.shape[-2:])
    return (train - deploy).abs(), train


def _prelu_params(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.PReLU))


# --------------------------------------------------------------------------------------------------
# The must-show contract: fused == training form over the whole image.


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_fuse_is_exact_on_the_whole_image(name: str, in_ch: int, out_ch: int, bias: bool, act: str) -> None:
    for size in SIZES:
        block = make_block(name, in_ch, out_ch, bias=bias, act=act)
        error, _ = fusion_error(block, _input(in_ch, size, dtype=torch.float64))
        assert error.max().item() <= F64_ABS_TOL, f"{name} float64 {size}: max abs error {error.max():.3g}"

        block32 = make_block(name, in_ch, out_ch, bias=bias, act=act, dtype=torch.float32)
        error32, train32 = fusion_error(block32, _input(in_ch, size, dtype=torch.float32))
        relative = (error32.max() / train32.abs().max()).item()
        assert relative <= F32_REL_TOL, f"{name} float32 {size}: relative error {relative:.3g}"


# --------------------------------------------------------------------------------------------------
# Deploy structure, parameter count, independence, gradients.


@pytest.mark.parametrize("act", ["relu", "prelu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_deploy_form_is_plain_convs_and_activations(
    name: str, in_ch: int, out_ch: int, bias: bool, act: str
) -> None:
    block = make_block(name, in_ch, out_ch, bias=bias, act=act)
    fused = block.fuse()
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == DEPLOY_CONVS.get(name, 1)
    assert convs[0].in_channels == in_ch and convs[-1].out_channels == out_ch
    partly_fused = name in PARTLY_FUSED
    for conv in convs:
        assert conv.stride == (1, 1) and conv.dilation == (1, 1)
        if not partly_fused:
            assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.groups == 1
        assert conv.padding == (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2), "deploy convs keep the size"
        assert (conv.bias is not None) == bias, "bias=False must give bias-free deploy convs"
    allowed_leaves = (nn.Conv2d, *ACT_TYPES, *PARTLY_FUSED.get(name, ()))
    for module in fused.modules():
        assert not isinstance(module, Block), "a training block survived fusion"
        if not list(module.children()):
            assert isinstance(module, allowed_leaves), f"unexpected deploy leaf {module}"
        if list(module.parameters(recurse=False)):
            assert isinstance(module, (nn.Conv2d, nn.PReLU))
    assert list(fused.buffers()) == [], "deploy form must not carry training buffers (e.g. edge masks)"
    # k * k * Cin / groups * Cout (+ Cout) per conv, plus the PReLU slopes of the training form, nothing else.
    conv_params = sum(c.weight.numel() + (c.out_channels if bias else 0) for c in convs)
    assert sum(p.numel() for p in fused.parameters()) == conv_params + _prelu_params(block)


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_prelu_slopes_survive_fusion(name: str, in_ch: int, out_ch: int) -> None:
    block = make_block(name, in_ch, out_ch, bias=True, act="prelu")
    train_slopes = [m.weight for m in block.modules() if isinstance(m, nn.PReLU)]
    deploy_slopes = [m.weight for m in block.fuse().modules() if isinstance(m, nn.PReLU)]
    assert len(train_slopes) == len(deploy_slopes) >= 1
    for train, deploy in zip(train_slopes, deploy_slopes):
        assert torch.equal(train, deploy) and not torch.allclose(deploy, torch.full_like(deploy, 0.25))


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_fused_module_is_independent_of_the_training_block(name: str, in_ch: int, out_ch: int) -> None:
    block = make_block(name, in_ch, out_ch, bias=True, act="prelu")
    x = _input(in_ch, (6, 7), dtype=torch.float64)
    fused = block.fuse()
    with torch.no_grad():
        before = fused(x)
        train_ptrs = {p.data_ptr() for p in block.parameters()}
        assert not train_ptrs & {p.data_ptr() for p in fused.parameters()}
        for param in block.parameters():
            param.add_(1.0)
        assert torch.equal(fused(x), before)
        assert not torch.allclose(block(x), before)  # the perturbation did reach the training form


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_every_training_parameter_reaches_the_deploy_form(name: str, in_ch: int, out_ch: int) -> None:
    """No branch is silently dropped by forward *and* fuse alike (the exactness test cannot see that)."""
    block = make_block(name, in_ch, out_ch, bias=True, act="none")
    x = _input(in_ch, (6, 7), dtype=torch.float64)
    with torch.no_grad():
        reference = block.fuse()(x)
        for param_name, param in block.named_parameters():
            param.add_(0.3)
            changed = (block.fuse()(x) - reference).abs().max().item()
            param.sub_(0.3)
            assert changed > 1e-6, f"{name}: parameter {param_name} has no effect on the deploy output"


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_gradients_flow_through_the_training_form(name: str, in_ch: int, out_ch: int) -> None:
    block = make_block(name, in_ch, out_ch, bias=True, act="gelu")
    x = _input(in_ch, (6, 7), dtype=torch.float64).requires_grad_(True)
    block(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for param_name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no gradient for {param_name}"


# --------------------------------------------------------------------------------------------------
# The border test is sensitive: the wrong (zero) padding of the 1x1 output would fail it.


@pytest.mark.parametrize("name", ["rep_expand", "ecb"])
def test_zero_padded_intermediate_would_break_the_border(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def zero_pad(x: Tensor, bias: Tensor | None) -> Tensor:
        return F.pad(x, (1, 1, 1, 1))

    block = make_block(name, 4, 4, bias=True, act="none")
    x = _input(4, (7, 9), dtype=torch.float64)
    correct, _ = fusion_error(block, x)
    assert correct.max() <= F64_ABS_TOL
    monkeypatch.setattr(rep_module, "pad_with_bias", zero_pad)
    monkeypatch.setattr(ecb_module, "pad_with_bias", zero_pad)
    wrong, _ = fusion_error(block, x)
    assert wrong[..., 1:-1, 1:-1].max() <= F64_ABS_TOL  # the interior cannot tell
    assert wrong.max() > 1e-2  # the border ring can, by far more than the tolerance


def test_zero_padding_is_exact_without_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """The border term is `W2 . b1`: with bias=False there is nothing to pad (reference 1.0)."""
    monkeypatch.setattr(rep_module, "pad_with_bias", lambda x, bias: F.pad(x, (1, 1, 1, 1)))
    block = make_block("rep_expand", 4, 4, bias=False, act="none")
    error, _ = fusion_error(block, _input(4, (7, 9), dtype=torch.float64))
    assert error.max() <= F64_ABS_TOL


# --------------------------------------------------------------------------------------------------
# Block-specific structure and hand-computed values.


def test_registry_has_the_issue_blocks() -> None:
    expected = {"conv", "rep", "rep_expand", "rep_casr", "ecb", "dconv", "spab", "spab_noatt"}
    assert expected <= set(list_blocks())


def test_rep_with_zero_weights_is_the_identity() -> None:
    block = get_block("rep")(3, 3, bias=True, act="none").double()
    with torch.no_grad():
        for param in block.parameters():
            param.zero_()
    x = _input(3, (5, 6), dtype=torch.float64)
    assert torch.equal(block(x), x)
    assert torch.equal(block.fuse()(x), x)


def test_rep_uses_a_1x1_shortcut_when_widths_differ() -> None:
    assert get_block("rep")(3, 3).shortcut is None
    assert isinstance(get_block("rep")(3, 5).shortcut, nn.Conv2d)
    assert get_block("rep_casr")(4, 4, mid_a=2, mid_b=2).shortcut is None
    assert isinstance(get_block("rep_casr")(4, 6, mid_a=2, mid_b=2).shortcut, nn.Conv2d)


def test_rep_casr_defaults_are_casr_widths_and_fuse_exactly() -> None:
    block = get_block("rep_casr")(4, 4, bias=True, act="gelu").double()
    assert block.branch_a[0].out_channels == 256 and block.branch_b[0].out_channels == 128
    randomize(block, seed=3, std=0.2)
    error, _ = fusion_error(block, _input(4, (5, 6), dtype=torch.float64))
    assert error.max() <= F64_ABS_TOL


def test_rep_expand_widths() -> None:
    block = get_block("rep_expand")(6, 5)
    assert block.body.expand.out_channels == 24 and block.body.conv.out_channels == 24
    assert block.reduce.in_channels == 24 and block.shortcut.out_channels == 5
    assert get_block("rep_expand")(6, 5, expand=2).body.expand.out_channels == 12
    with pytest.raises(UserError, match="expand"):
        get_block("rep_expand")(6, 5, expand=0)


def test_ecb_edge_branch_hand_computed() -> None:
    """Identity 1x1, scale 1, no bias: the Sobel-x response of a column ramp at the centre is -8."""
    block = get_block("ecb")(1, 1, bias=True, act="none").double()
    edge = block.edges[0]
    assert edge.kind == "sobel_x"
    with torch.no_grad():
        edge.conv.weight.fill_(1.0)
        edge.scale.fill_(1.0)
        edge.bias.zero_()
    ramp = torch.tensor([[1.0, 2.0, 3.0]] * 3, dtype=torch.float64).view(1, 1, 3, 3)
    # Row sums of mask * ramp: (1 - 3) + 2 * (1 - 3) + (1 - 3) = -8.
    assert edge(ramp)[0, 0, 1, 1].item() == -8.0
    # A constant added before the filter cancels everywhere when the ring holds the same constant
    # (the masks sum to 0); this is why the edge 1x1 carries no bias.
    for mask in ecb_module.EDGE_MASKS.values():
        assert sum(sum(row) for row in mask) == 0.0
    constant_with_ring = torch.full((1, 1, 6, 7), 1.5, dtype=torch.float64)  # 4x5 image + bias ring
    filtered = F.conv2d(constant_with_ring, edge.depthwise())
    assert torch.allclose(filtered, torch.zeros_like(filtered), atol=1e-15, rtol=0)
    assert edge.conv.bias is None


def test_ecb_bias_free_has_no_bias_anywhere() -> None:
    block = get_block("ecb")(3, 4, bias=False)
    names = [name for name, _ in block.named_parameters()]
    assert not [n for n in names if n.endswith("bias")], names
    assert sum(1 for n in names if n.endswith("scale")) == 3  # the scales stay: weights, not biases
    assert block.expand.expand.out_channels == 8  # depth multiplier 2 of out_ch


def test_ecb_identity_only_when_widths_match() -> None:
    assert get_block("ecb")(4, 4, with_idt=True).with_idt
    assert not get_block("ecb")(3, 4, with_idt=True).with_idt
    assert not get_block("ecb")(4, 4).with_idt
    block = make_block("ecb", 4, 4, bias=True, act="prelu")
    idt = get_block("ecb")(4, 4, bias=True, act="prelu", with_idt=True).double()
    idt.load_state_dict(block.state_dict())
    x = _input(4, (5, 6), dtype=torch.float64)
    with torch.no_grad():
        block.act = nn.Identity()
        idt.act = nn.Identity()
        assert torch.allclose(idt(x) - block(x), x, atol=1e-12, rtol=0)
    error, _ = fusion_error(idt, x)
    assert error.max() <= F64_ABS_TOL


def test_dconv_difference_branches_are_zero_on_constant_images_inside() -> None:
    """The gradient branches see no structure in a constant image away from the border."""
    block = make_block("dconv", 2, 3, bias=False, act="none")
    with torch.no_grad():
        block.vanilla.weight.zero_()
        block.aggregate_weight.zero_()
        out = block(torch.full((1, 2, 6, 7), 3.0, dtype=torch.float64))
    assert out[..., 1:-1, 1:-1].abs().max() < 1e-12
    assert out.abs().max() > 1e-3  # but the zero padding makes the border a "gradient"


def test_spab_hand_computed_with_zero_convs() -> None:
    """All conv weights 0: out3 = 0, so spab gives (0 + x) * (sigmoid(0) - 0.5) = 0 and noatt gives x."""
    x = _input(4, (5, 6), dtype=torch.float64)
    for name, expected in (("spab", torch.zeros_like(x)), ("spab_noatt", x)):
        block = get_block(name)(4, 4, bias=True).double()
        with torch.no_grad():
            for param in block.parameters():
                param.zero_()
            assert torch.equal(block(x), expected)
            assert torch.equal(block.fuse()(x), expected)


def test_spab_attention_formula() -> None:
    block = make_block("spab", 3, 3, bias=True, act="silu")
    noatt = get_block("spab_noatt")(3, 3, bias=True, act="silu").double()
    noatt.load_state_dict(block.state_dict())
    x = _input(3, (5, 6), dtype=torch.float64)
    with torch.no_grad():
        u = noatt(x)  # out3 + x
        out3 = u - x
        assert torch.allclose(block(x), u * (torch.sigmoid(out3) - 0.5), atol=1e-12, rtol=0)


def test_spab_defaults_and_channel_check() -> None:
    block = get_block("spab")(4, 4)
    assert block.act_name == "silu" and isinstance(block.act, nn.SiLU) and isinstance(block.act2, nn.SiLU)
    assert block.c1.expand.out_channels == 8  # gain 2
    assert not [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.bias is None]
    bias_free = get_block("spab")(4, 4, bias=False)
    assert not [m for m in bias_free.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    with pytest.raises(UserError, match="in_ch == out_ch"):
        get_block("spab")(3, 5)
    with pytest.raises(UserError, match="in_ch == out_ch"):
        get_block("spab_noatt")(4, 2)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("rep_casr", {"mid_a": 0}, "mid_a"),
        ("rep_casr", {"mid_b": -1}, "mid_b"),
        ("spab", {"gain": 0}, "gain"),
    ],
)
def test_bad_widths_are_user_errors(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match):
        get_block(name)(4, 4, **kwargs)


# --------------------------------------------------------------------------------------------------
# zero_output_(): the contract an anchored network relies on to start exactly at its anchor.


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CHANNELS, ids=BLOCK_IDS)
def test_zero_output_makes_training_and_fused_forms_exactly_zero(
    name: str, in_ch: int, out_ch: int, bias: bool, act: str
) -> None:
    for dtype in (torch.float64, torch.float32):
        block = make_block(name, in_ch, out_ch, bias=bias, act=act, dtype=dtype)
        if not block.can_zero_output:
            with pytest.raises(NotImplementedError, match=name):
                block.zero_output_()
            return
        rng_before = torch.random.get_rng_state()
        block.zero_output_()
        assert torch.equal(torch.random.get_rng_state(), rng_before), "zero_output_ drew random numbers"
        for size in SIZES:
            x = _input(in_ch, size, dtype=dtype) * 10  # large inputs: a cancelled identity must be exact
            with torch.no_grad():
                train, fused = block(x), block.fuse()(x)
            assert train.shape == fused.shape == (x.shape[0], out_ch, *size)
            assert torch.equal(train, torch.zeros_like(train)), f"{name} {dtype}: training form is not 0"
            assert torch.equal(fused, torch.zeros_like(fused)), f"{name} {dtype}: fused form is not 0"


ZEROABLE = [case for case in BLOCK_CHANNELS if get_block(case[0]).can_zero_output]


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), ZEROABLE, ids=[f"{n}-{i}to{o}" for n, i, o in ZEROABLE])
def test_zeroed_block_still_learns(name: str, in_ch: int, out_ch: int) -> None:
    """Only each branch's last stage is silenced: the gradient of a loss is not zero, so step 1 moves."""
    block = make_block(name, in_ch, out_ch, bias=True, act="none")
    block.zero_output_()
    x = _input(in_ch, (6, 7), dtype=torch.float64)
    (block(x) - 1.0).square().sum().backward()
    grads = [p.grad.abs().sum().item() for p in block.parameters() if p.grad is not None]
    assert grads and max(grads) > 0


def test_every_width_changing_block_can_zero_its_output() -> None:
    """A width-changing block can be a network's tail, which an anchored network zeroes."""
    for name in list_blocks():
        block_cls = get_block(name)
        assert not block_cls.supports_channel_change or block_cls.can_zero_output, name


def test_zero_output_cancels_the_ecb_identity() -> None:
    block = get_block("ecb")(4, 4, bias=True, act="prelu", with_idt=True).double()
    randomize(block, seed=5)
    block.zero_output_()
    x = _input(4, (7, 9), dtype=torch.float64) * 10
    with torch.no_grad():
        assert torch.equal(block(x), torch.zeros_like(x))
        assert torch.equal(block.fuse()(x), torch.zeros_like(x))


def test_zero_output_of_rep_casr_identity_uses_both_branches_and_refuses_past_them() -> None:
    # 7 channels through mid_a = 4 and mid_b = 3: branch A carries 4 of them, branch B the other 3.
    block = get_block("rep_casr")(7, 7, bias=True, act="none", mid_a=4, mid_b=3).double()
    randomize(block, seed=6)
    block.zero_output_()
    x = _input(7, (5, 6), dtype=torch.float64) * 10
    with torch.no_grad():
        assert torch.equal(block(x), torch.zeros_like(x))
        assert torch.equal(block.fuse()(x), torch.zeros_like(x))
    too_wide = get_block("rep_casr")(8, 8, mid_a=4, mid_b=3)
    before = copy.deepcopy(too_wide.state_dict())
    with pytest.raises(NotImplementedError, match="mid_a \\+ mid_b"):
        too_wide.zero_output_()
    assert all(torch.equal(before[k], v) for k, v in too_wide.state_dict().items())  # left untouched
