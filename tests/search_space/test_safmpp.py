"""`safmpp` against the published SAFMN++ block, and its deploy MACs counted by hand.

The reference forward below is written from sunny2109/SAFMN AIS2024-RTSR/light_safmnpp_arch.py
(`AttBlock` = `SimpleSAFM` then `CCM`) as plain functional PyTorch on explicitly given weights: chunk the
3x3 projection, max-pool the first half to (h // 8, w // 8), depthwise 3x3, bilinear back
(align_corners False), GELU gate times the first half, concat (second half first), GELU, 1x1, then
3x3 -> GELU -> 1x1. No residual, no normalisation inside. The contract test (test_blocks.py) checks
fused == training; this file checks training == the published block.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from search_space.blocks import get_block
from search_space.blocks.safmpp import SAFMPPBlock, adaptive_windows, max_over_windows, pooled_size
from search_space.errors import UserError

#: The challenge's LR input (540p for a 4K output) and its pixel count.
H, W = 540, 960
P1 = H * W


def reference_block(x: Tensor, weights: dict[str, Tensor], biases: dict[str, Tensor] | None = None) -> Tensor:
    """The published block as a function of its weights ('proj', 'dw', 'out', 'ffn1', 'ffn2')."""
    b = biases or {}
    h, w = x.shape[-2:]
    y = F.conv2d(x, weights["proj"], b.get("proj"), padding=1)
    x0, x1 = torch.chunk(y, 2, dim=1)  # x0 is modulated, x1 passes
    g = F.adaptive_max_pool2d(x0, (h // 8, w // 8))
    g = F.conv2d(g, weights["dw"], b.get("dw"), padding=1, groups=x0.shape[1])
    g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
    y = torch.cat([x1, F.gelu(g) * x0], dim=1)
    y = F.conv2d(F.gelu(y), weights["out"], b.get("out"))
    y = F.gelu(F.conv2d(y, weights["ffn1"], b.get("ffn1"), padding=1))
    return F.conv2d(y, weights["ffn2"], b.get("ffn2"))


def _random_weights(c: int, hidden: int, *, seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    modulated = c - c // 2

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.4

    weights = {
        "proj": rand(c, c, 3, 3),
        "dw": rand(modulated, 1, 3, 3),
        "out": rand(c, c, 1, 1),
        "ffn1": rand(hidden, c, 3, 3),
        "ffn2": rand(c, hidden, 1, 1),
    }
    biases = {"proj": rand(c), "dw": rand(modulated), "out": rand(c), "ffn1": rand(hidden), "ffn2": rand(c)}
    return weights, biases


def _load(block: SAFMPPBlock, weights: dict[str, Tensor], biases: dict[str, Tensor] | None) -> None:
    layers = {
        "proj": block.proj, "dw": block.dwconv, "out": block.out, "ffn1": block.expand, "ffn2": block.reduce
    }
    with torch.no_grad():
        for key, conv in layers.items():
            conv.weight.copy_(weights[key])
            if biases is not None:
                conv.bias.copy_(biases[key])


# Odd sizes: 540 // 8 = 67 leaves overlapping windows (540 rows over 67 outputs), like 27 // 8 = 3 and
# 13 // 8 = 1; (540, 20) has the challenge's exact row count at a small width.
@pytest.mark.parametrize("size", [(27, 48), (13, 21), (540, 20), (16, 24)])
@pytest.mark.parametrize(("channels", "ffn_scale"), [(8, 1.5), (6, 2.0)])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_matches_the_published_block(
    size: tuple[int, int], channels: int, ffn_scale: float, bias: bool
) -> None:
    block = get_block("safmpp")(channels, channels, bias=bias, act="gelu", ffn_scale=ffn_scale).double()
    weights, biases = _random_weights(channels, int(channels * ffn_scale), seed=sum(size) + channels)
    _load(block, weights, biases if bias else None)
    x = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        expected = reference_block(x, weights, biases if bias else None)
        assert (block(x) - expected).abs().max().item() <= 1e-10
        assert (block.fuse()(x) - expected).abs().max().item() <= 1e-10


def test_odd_width_modulates_the_larger_chunk() -> None:
    """The code needs an even C; here an odd C splits as torch.chunk does (the first ceil(C/2) modulated)."""
    block = get_block("safmpp")(5, 5, bias=True).double()
    assert block.dwconv.in_channels == 3
    weights, biases = _random_weights(5, 7, seed=3)
    _load(block, weights, biases)
    x = torch.randn(1, 5, 13, 21, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        assert (block(x) - reference_block(x, weights, biases)).abs().max().item() <= 1e-10


def test_pooling_windows_at_540_rows() -> None:
    """What the code's adaptive max pool does at 540 rows: 67 outputs over windows of 9 or 10 rows.

    PyTorch's window i is [floor(i*540/67), ceil((i+1)*540/67)); consecutive windows share a row.
    """
    assert pooled_size(H, W) == (67, 120)
    starts = [i * H // 67 for i in range(67)]
    ends = [math.ceil((i + 1) * H / 67) for i in range(67)]
    lengths = [e - s for s, e in zip(starts, ends)]
    assert lengths.count(9) == 64 and lengths.count(10) == 3
    assert adaptive_windows(H, 67) == list(zip(starts, ends))
    column = torch.randn(1, 1, H, 1, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    by_hand = torch.stack([column[0, 0, s:e, 0].max() for s, e in zip(starts, ends)])
    assert torch.equal(F.adaptive_max_pool2d(column, (67, 1)).flatten(), by_hand)


@pytest.mark.parametrize("size", [(540, 960), (35, 50), (13, 21), (7, 9), (24, 16)])
def test_the_export_form_of_the_pool_equals_adaptive_max_pool(size):
    """What an ONNX export computes (stride-1 max pools and a gather per axis) is the native op, exactly."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    oh, ow = pooled_size(*size)
    by_parts = max_over_windows(max_over_windows(x, dim=-2, outputs=oh), dim=-1, outputs=ow)
    assert torch.equal(by_parts, F.adaptive_max_pool2d(x, (oh, ow)))


def test_small_images_pool_to_one_cell() -> None:
    """Below 8 pixels the code pools to an empty map and fails; here the pooled map is one global max."""
    assert pooled_size(7, 9) == (1, 1) and pooled_size(8, 16) == (1, 2) and pooled_size(15, 17) == (1, 2)
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        empty = F.adaptive_max_pool2d(x, (7 // 8, 9 // 8))  # the code's size: 0 x 1
        F.conv2d(empty, torch.ones(2, 1, 3, 3, dtype=torch.float64), padding=1, groups=2)
    block = get_block("safmpp")(4, 4).double()
    assert torch.equal(block.pool(x), x.amax(dim=(-2, -1), keepdim=True))


# --------------------------------------------------------------------------------------------------
# Cost at the challenge size: one block at C = 32, counted by hand.


def test_deploy_macs_and_params_at_c32_on_540x960(conv_macs) -> None:
    c, hidden, half = 32, 48, 16
    pooled = (H // 8) * (W // 8)  # 67 x 120 = 8,040 cells
    by_hand = [
        P1 * c * c * 9,  # proj 3x3 32 -> 32: 4,777,574,400
        pooled * half * 9,  # depthwise 3x3 on 16 channels at 67 x 120: 1,157,760
        P1 * c * c,  # out 1x1 32 -> 32: 530,841,600
        P1 * c * hidden * 9,  # CCM 3x3 32 -> 48: 7,166,361,600
        P1 * hidden * c,  # CCM 1x1 48 -> 32: 796,262,400
    ]
    deploy = get_block("safmpp")(c, c, bias=False, act="gelu").fuse().to("meta")
    x = torch.empty(1, c, H, W, device="meta")
    assert conv_macs(deploy, x) == by_hand
    assert sum(by_hand) == 13_272_197_760
    with FlopCounterMode(display=False) as flops, torch.no_grad():  # independent: 2 FLOPs per conv MAC
        deploy(x)
    assert flops.get_total_flops() == 2 * sum(by_hand)
    params = sum(p.numel() for p in deploy.parameters())
    assert params == c * c * 9 + half * 9 + c * c + c * hidden * 9 + hidden * c == 25_744

    # The light SAFMN++ network: head 3x3 3 -> 32, two blocks, + head features, tail 3x3 32 -> 48, PS4.
    # Survey Table 3 (VPEG-S, 540x960): 34.1587 G FLOPs (conv MACs), 0.0662 M params.
    network_macs = P1 * 3 * c * 9 + 2 * sum(by_hand) + P1 * c * 48 * 9
    assert network_macs == 34_158_654_720
    assert 3 * c * 9 + 2 * params + c * 48 * 9 == 66_176


# --------------------------------------------------------------------------------------------------
# Defaults, validation, zero output.


def test_defaults_follow_the_published_block() -> None:
    block = get_block("safmpp")(32, 32)
    assert block.act_name == "gelu" and not block.bias and block.expand.out_channels == 48
    assert not [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert block.dwconv.groups == 16
    assert block.out.kernel_size == (1, 1) and block.reduce.kernel_size == (1, 1)
    assert not block.supports_channel_change and not block.cost_scales_with_area and block.can_zero_output
    assert int(32 * 2.0) == get_block("safmpp")(32, 32, ffn_scale=2.0).expand.out_channels


@pytest.mark.parametrize("ffn_scale", [0, -1.5, 0.1, True, "2"])
def test_bad_ffn_scale_is_a_user_error(ffn_scale: object) -> None:
    with pytest.raises(UserError, match="ffn_scale"):
        get_block("safmpp")(4, 4, ffn_scale=ffn_scale)


def test_channel_change_is_a_user_error() -> None:
    with pytest.raises(UserError, match="in_ch == out_ch"):
        get_block("safmpp")(4, 8)


def test_zero_output_silences_only_the_last_1x1() -> None:
    block = get_block("safmpp")(6, 6, bias=True, act="prelu").double()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    block.zero_output_()
    for key, value in block.state_dict().items():
        assert torch.equal(value, before[key]) != key.startswith("reduce."), key
