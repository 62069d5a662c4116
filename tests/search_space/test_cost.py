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
    # SPAB keeps three 3x3 convs per block at deploy; the skip, SiLU and attention cost 0.
    xiaomimm = P1 * 3 * 18 * 9 + 2 * 3 * (P1 * 18 * 18 * 9) + P1 * 18 * 48 * 9
    assert cost(get_preset("xiaomimm").arch).macs == xiaomimm


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
    # and the 540x960 figure is the same per-pixel rate
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
