"""MACs/params of deploy models: hand counts, scaled count == direct count, thop == FlopCounterMode / 2."""

from __future__ import annotations

import contextlib
import io

import pytest
import thop
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_space.arch import ArchConfig
from search_space.blocks import get_block
from search_space.cost import Cost, cost, mac_rules, profile_macs
from search_space.errors import UserError
from search_space.network import build, deploy
from search_space.presets import get_preset, list_presets

H, W = 540, 960
P1 = H * W  # 518,400 LR pixels
P2 = P1 // 4  # after unshuffle 2
P3 = P1 // 9
P4 = P1 // 16


# -- hand counts at 540x960: sum over convs of pixels x Cin x Cout x k^2 ------------------------------


def test_anunet_macs_by_hand() -> None:
    macs = P2 * 12 * 28 * 9 + 3 * (P2 * 28 * 28 * 9) + P2 * 28 * 192 * 9
    assert macs == 9_405_849_600
    assert cost(get_preset("anunet").arch).macs == macs


def test_casr_macs_by_hand() -> None:
    macs = P3 * 27 * 32 * 9 + P3 * 32 * 32 * 9 + P3 * 32 * 27 * 9 + P1 * 3 * 48 * 9
    assert cost(get_preset("casr").arch).macs == macs == 2_098_483_200


def test_strided_u2_macs_by_hand() -> None:
    # PixelArtAI / Bicubic++: 3x3 stride-2 head at P2, two 32->32 convs, 32->192 3x3 tail.
    macs = P2 * 3 * 32 * 9 + 2 * (P2 * 32 * 32 * 9) + P2 * 32 * 192 * 9
    assert cost(get_preset("pixelartai").arch).macs == macs == 9_667_123_200


def test_strided_u4_cascade_macs_by_hand() -> None:
    # Kernel 5 stride 4 head, 2 bodies, cascade: C -> 3*16 at P4, then 3 -> 48 at P1. Bilinear adds 0.
    arch = ArchConfig(
        channels=10, blocks=2, downsample="strided", down_factor=4, reconstruction="cascade", global_residual="bilinear"
    )
    macs = P4 * 3 * 10 * 25 + 2 * (P4 * 10 * 10 * 9) + P4 * 10 * 48 * 9 + P1 * 3 * 48 * 9
    assert cost(arch).macs == macs


def test_1x1_tail_and_spab_macs_by_hand() -> None:
    lanczospp = P3 * 27 * 24 * 9 + P3 * 24 * 24 * 9 + P3 * 24 * 432 * 1
    assert cost(get_preset("lanczospp").arch).macs == lanczospp
    # SPAB keeps three 3x3 convs per block at deploy; the skip, SiLU and attention cost 0. SPAN's taps:
    # conv_2 (3x3 C -> C) on the last block, a 1x1 fusion 4C -> C, then the 3x3 tail.
    c = 11
    xiaomimm = P1 * (3 * c * 9 + 6 * 3 * (c * c * 9) + c * c * 9 + 4 * c * c + c * 48 * 9)
    assert cost(get_preset("xiaomimm").arch).macs == xiaomimm


def test_version_2_presets_macs_and_params_by_hand() -> None:
    # RVSR: head 3x3, 8 RepViT (dense 3x3 mixer + FFN 1x1 16->32->16 at every pixel, a squeeze-excite
    # 16->8->16 on the pooled 1x1 map, once per image), RepConv 3x3 after the skip, 1x1 tail 16->48.
    rvsr = P1 * (3 * 16 * 9 + 8 * (16 * 16 * 9 + 2 * 16 * 32) + 16 * 16 * 9 + 16 * 48) + 8 * 2 * 16 * 8
    assert cost(get_preset("rvsr").arch).macs == rvsr
    # 448 + 8 x (2,320 RepConv + 1,072 FFN + 280 SE) + 2,320 + 816 (reference section 2.1)
    assert cost(get_preset("rvsr").arch).params == 448 + 8 * (2320 + 1072 + 280) + 2320 + 816 == 32_960
    # SAFMN++: per block 3x3 C->C, 1x1 C->C, 3x3 C->48, 1x1 48->C, bias-free, plus a depthwise 3x3 on
    # C/2 = 16 channels at the pooled size floor(540/8) x floor(960/8) = 67 x 120.
    block = P1 * (32 * 32 * 9 + 32 * 32 + 32 * 48 * 9 + 48 * 32) + 16 * 9 * 67 * 120
    assert cost(get_preset("vpeg_s").arch).macs == P1 * (3 * 32 * 9 + 32 * 48 * 9) + 2 * block == 34_158_654_720
    assert cost(get_preset("vpeg_s").arch).params == 66_176
    # RESR fit: unshuffle 2, 12->32, 3 x 32->32, 32->32 (= 4 x 8), PS2, 8->48 at LR size, PS4: 7.0171 G.
    resr = P2 * (12 * 32 * 9 + 3 * 32 * 32 * 9 + 32 * 32 * 9) + P1 * 8 * 48 * 9
    assert cost(get_preset("resr").arch).macs == resr == 7_017_062_400
    # USTC-Noah fit: 4x4 stride-2 head 3->32, 2 x 32->32 and 32->64 at P2, PS2, 16->48 at P1, no bias.
    ustc = P2 * (3 * 32 * 16 + 2 * 32 * 32 * 9 + 32 * 64 * 9) + P1 * 16 * 48 * 9
    assert cost(get_preset("ustc_noah").arch).macs == ustc == 8_559_820_800
    assert cost(get_preset("ustc_noah").arch).params == 3 * 32 * 16 + 2 * 32 * 32 * 9 + 32 * 64 * 9 + 16 * 48 * 9
    # ETDS M5C24 merged: 3->24, 5 x 24->24, 24->48, all at P1.
    megastudy = P1 * (3 * 24 * 9 + 5 * 24 * 24 * 9 + 24 * 48 * 9)
    assert cost(get_preset("megastudy").arch).macs == megastudy


def test_params_by_hand() -> None:
    # ANUNet, with biases: weights + one bias per output channel.
    anunet = (12 * 28 * 9 + 28) + 3 * (28 * 28 * 9 + 28) + (28 * 192 * 9 + 192)
    assert cost(get_preset("anunet").arch).params == anunet == 72_880
    # CASR, bias-free.
    assert cost(get_preset("casr").arch).params == 27 * 32 * 9 + 32 * 32 * 9 + 32 * 27 * 9 + 3 * 48 * 9 == 26_064
    # BasicVision: biases plus one PReLU slope per channel after the head and each block.
    basicvision = (3 * 16 * 9 + 16) + 2 * (16 * 16 * 9 + 16) + (16 * 48 * 9 + 48) + 3 * 16
    assert cost(get_preset("basicvision").arch).params == basicvision


def test_prelu_costs_no_macs() -> None:
    # thop's own PReLU rule charges one op per element; the project's count is conv MACs only.
    relu = ArchConfig(channels=16, blocks=2, activation="relu")
    prelu = ArchConfig(channels=16, blocks=2, activation="prelu")
    assert cost(relu).macs == cost(prelu).macs == P1 * (3 * 16 * 9 + 2 * 16 * 16 * 9 + 16 * 48 * 9)


def test_macs_do_not_depend_on_bias_or_residual() -> None:
    base = dict(channels=8, blocks=1, down_factor=2)
    ref = cost(ArchConfig(**base)).macs
    assert cost(ArchConfig(**base, bias=False)).macs == ref
    assert cost(ArchConfig(**base, global_residual="nearest")).macs == ref
    assert cost(ArchConfig(**base, global_residual="bilinear")).macs == ref


# -- the fast scaled count equals a direct count -------------------------------------------------------


@pytest.mark.parametrize("name", list_presets())
def test_scaled_count_equals_direct_count(name: str) -> None:
    arch = get_preset(name).arch
    u = arch.down_factor
    hw = (5 * u, 7 * u)  # a size the scaled path never profiles (it uses 2u x 3u)
    direct = profile_macs(deploy(build(arch)), hw=hw)
    assert cost(arch, hw).macs == direct
    # and the 540x960 figure is the same per-pixel rate, for blocks whose cost scales with the area
    # (a squeeze-excite or a pooled branch does not: those archs are profiled at the real size)
    if get_block(arch.block).cost_scales_with_area:
        assert cost(arch).macs * (hw[0] * hw[1]) == direct * H * W


# -- thop agrees with torch's FlopCounterMode (which counts convs at 2 FLOPs per MAC) --------------


@pytest.mark.parametrize("name", list_presets())
def test_thop_equals_flop_counter_half(name: str) -> None:
    arch = get_preset(name).arch
    model = deploy(build(arch))
    u = arch.down_factor
    x = torch.rand(1, 3, 3 * u, 4 * u)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    flops = counter.get_total_flops()
    assert flops > 0
    assert profile_macs(model, hw=(3 * u, 4 * u)) * 2 == flops


@pytest.mark.parametrize("name", list_presets())
def test_thop_reports_no_missing_rules(name: str) -> None:
    model = deploy(build(get_preset(name).arch))
    u = model.arch.down_factor
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        thop.profile(model, inputs=(torch.rand(1, 3, 2 * u, 2 * u),), custom_ops=mac_rules(model), report_missing=True)
    assert "Cannot find rule" not in buffer.getvalue()
    # Without our rules thop would complain about our containers (the check above is not vacuous).
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        thop.profile(model, inputs=(torch.rand(1, 3, 2 * u, 2 * u),), report_missing=True)
    assert "Cannot find rule" in buffer.getvalue()


class _FunctionalConv(nn.Module):
    """Holds a weight and convolves functionally: invisible to module hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1)


def test_module_with_own_parameters_and_no_rule_is_refused() -> None:
    with pytest.raises(RuntimeError, match="_FunctionalConv"):
        mac_rules(nn.Sequential(_FunctionalConv()))


class _FixedFunctionalConv(nn.Module):
    """A fixed filter (buffer, no parameter) applied functionally: just as invisible."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("taps", torch.ones(4, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.taps, padding=1)


def test_module_with_own_buffers_and_no_rule_is_refused() -> None:
    with pytest.raises(RuntimeError, match="_FixedFunctionalConv"):
        mac_rules(nn.Sequential(_FixedFunctionalConv()))


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "lanczos", "linear"])
def test_anchored_models_have_rules_for_everything(mode: str) -> None:
    model = deploy(build(ArchConfig(channels=4, blocks=1, down_factor=2, global_residual=mode)))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        thop.profile(model, inputs=(torch.rand(1, 3, 4, 4),), custom_ops=mac_rules(model), report_missing=True)
    assert "Cannot find rule" not in buffer.getvalue()


# -- API details ---------------------------------------------------------------------------------------


def test_cost_units() -> None:
    c = Cost(macs=2_098_483_200, params=26_064)
    assert c.gmacs == pytest.approx(2.0984832)
    assert c.mparams == pytest.approx(0.026064)
    assert c.to_dict() == {"macs": 2_098_483_200, "params": 26_064}


@pytest.mark.parametrize("hw", [(541, 960), (540, 962), (0, 960), (540,), "540x960", (540.0, 960)])
def test_bad_size_is_a_user_error(hw: object) -> None:
    with pytest.raises(UserError):
        cost(ArchConfig(channels=4, blocks=0, down_factor=4), hw)  # type: ignore[arg-type]


def test_cost_is_cached_per_arch_and_size() -> None:
    arch = ArchConfig(channels=7, blocks=1, down_factor=2)
    assert cost(arch) is cost(arch)
    assert cost(arch, (540, 960)) == cost(arch, [540, 960])  # type: ignore[arg-type]
