"""`rep_rvsr` and `repvit` against a functional re-statement of RVSR (huai-chang/RVSR train_arch.py).

The reference functions below take every weight as an explicit tensor and use only `F.conv2d` and
elementwise ops, written from the RVSR paper and code (not from our blocks), so a mismatch in the
order of the SE / FFN, a missing residual or a wrong padding ring shows up as a numeric difference.
The registry contract (exact fusion, zero output, gradients) is in test_blocks.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks import get_block
from search_space.blocks.repvit import (
    RepViTBlock,
    RVSRRepConv,
    RVSRRepConvBlock,
    se_width,
)
from search_space.errors import UserError

F64 = torch.float64
EXACT = 1e-10


def _rand(*shape: int, gen: torch.Generator, std: float = 0.3) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64) * std


# --------------------------------------------------------------------------------------------------
# Reference forward, from explicit weights.


def _ring_padded(y: Tensor, value: Tensor) -> Tensor:
    """RVSR's `pad_tensor`: one extra pixel on each side, holding `value[c]` on channel c."""
    out = F.pad(y, (1, 1, 1, 1))
    ring = torch.ones(out.shape[-2:], dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    return torch.where(ring, value.view(1, -1, 1, 1).expand_as(out), out)


def repconv_weights(in_ch: int, out_ch: int, *, gen: torch.Generator, ratio: int = 2) -> dict[str, Tensor]:
    """Random RepConv weights, named after RVSR's attributes."""
    mid = ratio * in_ch
    w: dict[str, Tensor] = {}
    for suffix in ("", "1"):
        w[f"expand{suffix}.w"] = _rand(mid, in_ch, 1, 1, gen=gen)
        w[f"expand{suffix}.b"] = _rand(mid, gen=gen)
        w[f"fea{suffix}.w"] = _rand(mid, mid, 3, 3, gen=gen)
        w[f"fea{suffix}.b"] = _rand(mid, gen=gen)
        w[f"reduce{suffix}.w"] = _rand(out_ch, mid, 1, 1, gen=gen)
        w[f"reduce{suffix}.b"] = _rand(out_ch, gen=gen)
    w["res3.w"], w["res3.b"] = _rand(out_ch, in_ch, 3, 3, gen=gen), _rand(out_ch, gen=gen)
    w["res1.w"], w["res1.b"] = _rand(out_ch, in_ch, 1, 1, gen=gen), _rand(out_ch, gen=gen)
    return w


def reference_repconv(x: Tensor, w: dict[str, Tensor]) -> Tensor:
    """RVSR RepConv: identity + 3x3 + 1x1 + two (1x1 -> ring-padded 3x3 -> 1x1) branches."""
    out = F.conv2d(x, w["res3.w"], w["res3.b"], padding=1) + F.conv2d(x, w["res1.w"], w["res1.b"])
    for suffix in ("", "1"):
        y = F.conv2d(x, w[f"expand{suffix}.w"], w[f"expand{suffix}.b"])
        y = F.conv2d(_ring_padded(y, w[f"expand{suffix}.b"]), w[f"fea{suffix}.w"], w[f"fea{suffix}.b"])
        out = out + F.conv2d(y, w[f"reduce{suffix}.w"], w[f"reduce{suffix}.b"])
    if x.shape[1] == out.shape[1]:
        out = out + x
    return out


def repvit_weights(channels: int, *, gen: torch.Generator) -> dict[str, Tensor]:
    w = repconv_weights(channels, channels, gen=gen)
    squeeze = {16: 8, 4: 8}[channels]  # timm make_divisible(C * 0.25, 8)
    w["se1.w"], w["se1.b"] = _rand(squeeze, channels, 1, 1, gen=gen), _rand(squeeze, gen=gen)
    w["se2.w"], w["se2.b"] = _rand(channels, squeeze, 1, 1, gen=gen), _rand(channels, gen=gen)
    w["ffn1.w"], w["ffn1.b"] = _rand(2 * channels, channels, 1, 1, gen=gen), _rand(2 * channels, gen=gen)
    w["ffn2.w"], w["ffn2.b"] = _rand(channels, 2 * channels, 1, 1, gen=gen), _rand(channels, gen=gen)
    return w


def reference_repvit(x: Tensor, w: dict[str, Tensor]) -> Tensor:
    """RVSR RepViT: FFN-with-residual(SE(RepConv(x))); SE = timm's (mean, ReLU, sigmoid), FFN GELU."""
    t = reference_repconv(x, w)
    pooled = t.mean(dim=(2, 3), keepdim=True)
    gate = torch.sigmoid(F.conv2d(F.relu(F.conv2d(pooled, w["se1.w"], w["se1.b"])), w["se2.w"], w["se2.b"]))
    s = t * gate
    return s + F.conv2d(F.gelu(F.conv2d(s, w["ffn1.w"], w["ffn1.b"])), w["ffn2.w"], w["ffn2.b"])


# --------------------------------------------------------------------------------------------------
# Loading the same tensors into our modules (an explicit name map, not state_dict order).


def _set(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> None:
    assert conv.weight.shape == weight.shape and conv.bias is not None and conv.bias.shape == bias.shape
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)


@torch.no_grad()
def load_repconv(module: RVSRRepConv, w: dict[str, Tensor]) -> None:
    for branch, suffix in zip(module.branches, ("", "1")):
        _set(branch.body.expand, w[f"expand{suffix}.w"], w[f"expand{suffix}.b"])
        _set(branch.body.conv, w[f"fea{suffix}.w"], w[f"fea{suffix}.b"])
        _set(branch.reduce, w[f"reduce{suffix}.w"], w[f"reduce{suffix}.b"])
    _set(module.conv3, w["res3.w"], w["res3.b"])
    _set(module.conv1, w["res1.w"], w["res1.b"])


@torch.no_grad()
def load_repvit(block: RepViTBlock, w: dict[str, Tensor]) -> None:
    load_repconv(block.mixer, w)
    _set(block.se.squeeze, w["se1.w"], w["se1.b"])
    _set(block.se.excite, w["se2.w"], w["se2.b"])
    _set(block.ffn_in, w["ffn1.w"], w["ffn1.b"])
    _set(block.ffn_out, w["ffn2.w"], w["ffn2.b"])


def _x(channels: int, size: tuple[int, int] = (9, 11)) -> Tensor:
    return torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(7), dtype=F64)


@pytest.mark.parametrize(("in_ch", "out_ch"), [(16, 16), (3, 5)])
def test_rep_rvsr_matches_the_reference_repconv(in_ch: int, out_ch: int) -> None:
    w = repconv_weights(in_ch, out_ch, gen=torch.Generator().manual_seed(1))
    block = RVSRRepConvBlock(in_ch, out_ch, act="none").double()
    load_repconv(block.repconv, w)
    x = _x(in_ch)
    expected = reference_repconv(x, w)
    with torch.no_grad():
        assert (block(x) - expected).abs().max().item() <= EXACT
        assert (block.fuse()(x) - expected).abs().max().item() <= EXACT  # border ring included


@pytest.mark.parametrize("channels", [16, 4])
def test_repvit_matches_the_reference_block(channels: int) -> None:
    w = repvit_weights(channels, gen=torch.Generator().manual_seed(2))
    block = RepViTBlock(channels, channels).double()  # RVSR defaults: GELU FFN, biases everywhere
    load_repvit(block, w)
    x = _x(channels)
    expected = reference_repvit(x, w)
    with torch.no_grad():
        assert (block(x) - expected).abs().max().item() <= EXACT
        assert (block.fuse()(x) - expected).abs().max().item() <= EXACT


def test_the_se_and_the_ffn_residual_both_change_the_output() -> None:
    """Guards the reference test: with these weights, skipping the SE or the FFN residual would show."""
    w = repvit_weights(4, gen=torch.Generator().manual_seed(3))
    x = _x(4)
    t = reference_repconv(x, w)
    full = reference_repvit(x, w)

    def ffn(s: Tensor) -> Tensor:
        return F.conv2d(F.gelu(F.conv2d(s, w["ffn1.w"], w["ffn1.b"])), w["ffn2.w"], w["ffn2.b"])

    squeezed = F.relu(F.conv2d(t.mean(dim=(2, 3), keepdim=True), w["se1.w"], w["se1.b"]))
    gate = torch.sigmoid(F.conv2d(squeezed, w["se2.w"], w["se2.b"]))
    s = t * gate
    assert (full - (t + ffn(t))).abs().max() > 1e-3  # without the SE
    assert (full - ffn(s)).abs().max() > 1e-3  # without the FFN residual


# --------------------------------------------------------------------------------------------------
# Structure and cost.


@pytest.mark.parametrize(
    ("channels", "width"),
    [(4, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 16), (56, 16), (64, 16), (80, 24)],
)
def test_se_width_is_timm_make_divisible(channels: int, width: int) -> None:
    assert se_width(channels) == width


def test_repvit_defaults_and_structure() -> None:
    block = get_block("repvit")(16, 16)
    assert block.act_name == "gelu" and isinstance(block.act, nn.GELU)
    assert not block.supports_channel_change and not block.cost_scales_with_area and block.can_zero_output
    assert block.mixer.identity and block.mixer.branches[0].body.expand.out_channels == 32
    assert block.se.squeeze.out_channels == 8 and block.ffn_in.out_channels == 32
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    bias_free = get_block("repvit")(16, 16, bias=False)
    assert all(m.bias is None for m in bias_free.modules() if isinstance(m, nn.Conv2d))
    mixer = block.fuse().mixer
    # RVSR's token mixer fuses to a dense 3x3 (not the depthwise one of the original RepViT).
    assert mixer.kernel_size == (3, 3) and mixer.groups == 1
    with pytest.raises(UserError, match="in_ch == out_ch"):
        get_block("repvit")(16, 8)
    for kwargs in ({"ratio": 0}, {"ffn_ratio": 0}):
        with pytest.raises(UserError, match=next(iter(kwargs))):
            get_block("repvit")(16, 16, **kwargs)


def test_rep_rvsr_drops_the_identity_only_when_widths_differ() -> None:
    assert get_block("rep_rvsr")(8, 8).repconv.identity
    assert not get_block("rep_rvsr")(3, 16).repconv.identity
    with pytest.raises(UserError, match="ratio"):
        get_block("rep_rvsr")(8, 8, ratio=0)


@pytest.mark.parametrize("bias", [True, False])
def test_repvit_deploy_cost_at_16_channels_is_the_hand_count(bias: bool, conv_macs) -> None:
    fused = get_block("repvit")(16, 16, bias=bias).fuse()
    per_pixel = 9 * 16 * 16 + 2 * 16 * 32  # dense 3x3 mixer + FFN 1x1s = 3,328
    per_image = 16 * 8 + 8 * 16  # the SE's two 1x1 convs on the pooled 1x1 map = 256
    for height, width in ((5, 7), (10, 14)):
        assert sum(conv_macs(fused, torch.zeros(1, 16, height, width))) == per_pixel * height * width + per_image
    params = (9 * 16 * 16 + 16) + (16 * 8 + 8 + 8 * 16 + 16) + (16 * 32 + 32 + 32 * 16 + 16)
    assert params == 3_672  # reference 2.1: 2,320 + 280 + 1,072
    bias_count = 16 + 8 + 16 + 32 + 16
    assert sum(p.numel() for p in fused.parameters()) == (params if bias else params - bias_count)


def test_rep_rvsr_deploy_cost_at_16_channels(conv_macs) -> None:
    fused = get_block("rep_rvsr")(16, 16, act="none").fuse()
    assert conv_macs(fused, torch.zeros(1, 16, 6, 7)) == [9 * 16 * 16 * 6 * 7]
    assert sum(p.numel() for p in fused.parameters()) == 2_320


def test_rvsr_parameter_count_from_our_deploy_blocks() -> None:
    """RVSR = head 3x3 (3->16) + 8 repvit + rep_rvsr (no act) + 1x1 (16->48): 32,960 params (Table 1)."""
    head = nn.Conv2d(3, 16, 3, padding=1)
    body = [get_block("repvit")(16, 16).fuse() for _ in range(8)]
    tail = [get_block("rep_rvsr")(16, 16, act="none").fuse(), nn.Conv2d(16, 48, 1)]
    modules = nn.ModuleList([head, *body, *tail])
    assert sum(p.numel() for p in modules.parameters()) == 32_960
