"""Online re-parameterization: training a linear multi-branch module as the one conv it fuses to.

The must-show of issue 21: for every registered block and every other fusable module (the strided
DConv head, the dual stream), training online and training the multi-branch form from the same
weights give the same losses (1e-4 relative over 100 steps in float32, 1e-9 in float64), and the
deploy form of an online-trained module is what it was (fusion exact, borders included).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.arch import ArchConfig
from search_space.blocks import LinearBlock, OnlineReparam, get_block, list_blocks, set_online_reparam
from search_space.blocks import ecb as ecb_module
from search_space.blocks import rep as rep_module
from search_space.blocks.dconv import DecoupledStridedConv
from search_space.dual_stream import DualStreamSR
from search_space.network import build, deploy

#: Small training-only widths, for speed (as test_blocks.py).
SMALL_KWARGS = {"rep_casr": {"mid_a": 6, "mid_b": 5}}
STEPS = 100
#: Max relative difference of the two forms' losses over the run, per dtype (issue 21).
LOSS_REL_TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
#: |deploy - training form| / max |training form| (trainers.proxy.FUSE_TOLERANCE).
FUSE_TOLERANCE = 3e-6
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]


def _block_cases() -> list[tuple[str, int, int]]:
    cases = []
    for name in list_blocks():
        cases.append((name, 4, 4))
        if get_block(name).supports_channel_change:
            cases.append((name, 3, 5))
    return cases


BLOCK_CASES = _block_cases()
BLOCK_IDS = [f"{name}-{i}to{o}" for name, i, o in BLOCK_CASES]


def _randomize(module: nn.Module, *, seed: int, std: float = 0.3) -> None:
    """Every parameter N(0, std), so that every branch (ECB's 1e-3 edge scales too) matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * std)


def _train_both(
    module: nn.Module,
    make_batch: Callable[[int], tuple[Tensor, Tensor]],
    *,
    steps: int = STEPS,
    lr: float = 1e-3,
) -> tuple[nn.Module, nn.Module, float]:
    """Train a multi-branch copy and an online copy of `module` with Adam on the same batches.

    Returns (multi-branch model, online model, max relative difference of their losses).
    """
    models = [copy.deepcopy(module), copy.deepcopy(module)]
    # safmpp has nothing to switch (its training form is its deploy form): both copies then agree trivially.
    assert set_online_reparam(models[0], False) == set_online_reparam(models[1], True)
    optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    worst = 0.0
    for step in range(steps):
        x, target = make_batch(step)
        losses = []
        for model, optimizer in zip(models, optimizers):
            model.train()
            loss = F.mse_loss(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        worst = max(worst, abs(losses[1] - losses[0]) / abs(losses[0]))
    return models[0], models[1], worst


def _batches(in_shape: tuple[int, ...], out_shape: tuple[int, ...], dtype: torch.dtype, *, seed: int = 0):
    """A fixed pool of 4 (input, target) pairs, cycled: the same batches for both forms."""
    generator = torch.Generator().manual_seed(seed)
    pool = [
        (
            torch.randn(in_shape, generator=generator, dtype=torch.float64).to(dtype),
            torch.randn(out_shape, generator=generator, dtype=torch.float64).to(dtype),
        )
        for _ in range(4)
    ]
    return lambda step: pool[step % len(pool)]


def _fusion_rel_error(model: nn.Module, x: Tensor) -> float:
    """|deploy(model) - model in eval (the multi-branch reference)| relative to its max, in float64."""
    with torch.no_grad():
        reference = copy.deepcopy(model).double().eval()(x.double())
        fused = deploy(model).double()(x.double())
    return float((fused - reference).abs().max() / reference.abs().max())


# --------------------------------------------------------------------------------------------------
# The switch itself.


def test_switch_is_off_by_default_and_only_acts_in_training_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default (the contract tests compare the multi-branch form with fuse()); when on, the
    training-mode forward never runs a branch (here: never pads a 1x1 output with its bias), and eval
    mode runs the multi-branch reference."""
    block = get_block("ecb")(4, 4, bias=True, act="relu").double()
    _randomize(block, seed=1)
    assert not block.online_reparam
    calls: list[int] = []
    original = ecb_module.pad_with_bias

    def counting(x: Tensor, bias: Tensor | None) -> Tensor:
        calls.append(1)
        return original(x, bias)

    monkeypatch.setattr(ecb_module, "pad_with_bias", counting)
    monkeypatch.setattr(rep_module, "pad_with_bias", counting)
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    block(x)
    assert calls, "the multi-branch form pads the 1x1 outputs"
    calls.clear()
    assert set_online_reparam(block, True) == 1
    block(x)
    assert not calls, "online, the block must run one conv"
    block.eval()
    block(x)
    assert calls, "in eval mode the multi-branch form is the reference"


def test_switch_reaches_nested_modules_and_leaves_state_dicts_alone() -> None:
    arch = ArchConfig(channels=4, blocks=2, block="spab", activation="silu", down_factor=2, downsample="strided",
                      strided_head="dconv", end_block="rep_casr", reconstruction="cascade")
    model = build(arch)
    keys = list(model.state_dict())
    online = [m for m in model.modules() if isinstance(m, OnlineReparam)]
    # head (strided dconv), 2 x 3 Conv3XC, cascade's two rep_casr end blocks
    assert set_online_reparam(model, True) == len(online) == 1 + 6 + 2
    assert all(m.online_reparam for m in online)
    assert list(model.state_dict()) == keys
    assert set_online_reparam(model, False) == len(online) and not any(m.online_reparam for m in online)


# --------------------------------------------------------------------------------------------------
# Online forward == fuse(), borders included, for every block.


@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CASES, ids=BLOCK_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_online_forward_equals_the_deploy_form_on_the_whole_image(name: str, in_ch: int, out_ch: int, bias: bool) -> None:
    block = get_block(name)(in_ch, out_ch, bias=bias, act="prelu", **SMALL_KWARGS.get(name, {})).double()
    _randomize(block, seed=2, std=0.5)
    set_online_reparam(block, True)
    x = torch.randn(2, in_ch, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        online, multi, fused = block(x), block.eval()(x), block.fuse()(x)
    assert (online - fused).abs().max().item() <= 1e-9
    assert (online - multi).abs().max().item() <= 1e-9


# --------------------------------------------------------------------------------------------------
# Same losses over 100 steps, same deploy form: every registered block.


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("name", "in_ch", "out_ch"), BLOCK_CASES, ids=BLOCK_IDS)
def test_block_trains_the_same_online(name: str, in_ch: int, out_ch: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    block = get_block(name)(in_ch, out_ch, bias=True, act="gelu", **SMALL_KWARGS.get(name, {})).to(dtype)
    _randomize(block, seed=3)
    batches = _batches((2, in_ch, 6, 7), (2, out_ch, 6, 7), dtype)
    multi, online, worst = _train_both(block, batches)
    assert worst <= LOSS_REL_TOL[dtype], f"{name} {dtype}: losses differ by {worst:.3g} relative"
    x = batches(0)[0]
    for model in (multi, online):
        assert _fusion_rel_error(model, x) <= FUSE_TOLERANCE
    with torch.no_grad():
        a, b = deploy(multi)(x), deploy(online)(x)
    assert ((a - b).abs().max() / a.abs().max()).item() <= LOSS_REL_TOL[dtype] * 10


# --------------------------------------------------------------------------------------------------
# The other fusable modules: the strided DConv head and the dual stream.


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_strided_dconv_head_trains_the_same_online(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    head = DecoupledStridedConv(3, 5, bias=True, act="prelu").to(dtype)
    _randomize(head, seed=4)
    batches = _batches((2, 3, 8, 10), (2, 5, 4, 5), dtype)
    multi, online, worst = _train_both(head, batches)
    assert worst <= LOSS_REL_TOL[dtype], f"strided dconv {dtype}: losses differ by {worst:.3g} relative"
    x = batches(0)[0].double()
    with torch.no_grad():
        for model in (multi, online):
            reference = copy.deepcopy(model).double().eval()(x)
            fused = copy.deepcopy(model).double().fuse()(x)
            assert float((fused - reference).abs().max() / reference.abs().max()) <= FUSE_TOLERANCE


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("block", "act", "b2r"), [("ecb", "prelu", False), ("rep", "relu", True)])
def test_dual_stream_trains_the_same_online(block: str, act: str, b2r: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = DualStreamSR(channels=4, residual_channels=3, blocks=2, backbone_block=block, act=act,
                         backbone_to_residual=b2r).to(dtype)
    _randomize(model, seed=5, std=0.2)
    generator = torch.Generator().manual_seed(6)
    pool = [(torch.rand(2, 3, 5, 6, generator=generator, dtype=torch.float64).to(dtype),
             torch.rand(2, 3, 20, 24, generator=generator, dtype=torch.float64).to(dtype)) for _ in range(4)]
    multi, online, worst = _train_both(model, lambda step: pool[step % 4])
    assert worst <= LOSS_REL_TOL[dtype], f"dual stream {dtype}: losses differ by {worst:.3g} relative"
    x = pool[0][0].double()
    with torch.no_grad():
        for trained in (multi, online):
            reference = copy.deepcopy(trained).double().eval()(x)
            fused = copy.deepcopy(trained).double().fuse()(x)
            assert float((fused - reference).abs().max() / reference.abs().max()) <= FUSE_TOLERANCE


def test_dual_stream_online_forward_equals_the_two_streams_with_prelu_slopes() -> None:
    model = DualStreamSR(channels=4, residual_channels=3, blocks=2, backbone_block="ecb", act="prelu").double()
    _randomize(model, seed=7)
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64)  # negative inputs too: the merge is exact for every input
    set_online_reparam(model, True)
    with torch.no_grad():
        assert (model(x) - model.forward_streams(x)[0]).abs().max().item() <= 1e-9


# --------------------------------------------------------------------------------------------------
# Whole networks: what the trainer runs.

NETWORKS = {
    "casr": ArchConfig(channels=6, blocks=1, block="rep", activation="gelu", down_factor=3, end_block="rep_casr",
                       reconstruction="cascade", head_activation=True),
    "ecb-strided-dconv": ArchConfig(channels=6, blocks=2, block="ecb", activation="prelu", down_factor=2,
                                    downsample="strided", strided_head="dconv", end_block="rep_edge",
                                    reconstruction="shuffle", lr_channels=4, global_residual="nearest"),
    "spab-span": ArchConfig(channels=6, blocks=2, block="spab", activation="silu", down_factor=1,
                            end_block="conv3xc", feature_taps="span", input_norm="mean255"),
    "etds": ArchConfig(channels=5, blocks=2, block="ecb", activation="relu", down_factor=1, residual_channels=3),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_trains_the_same_online(name: str) -> None:
    arch = NETWORKS[name]
    torch.manual_seed(0)
    model = build(arch)
    _randomize(model, seed=8, std=0.1)
    generator = torch.Generator().manual_seed(9)
    size = 6 * arch.down_factor  # LR side: a multiple of u, small (the tails run at 3 * (4u)^2 channels)
    pool = [(torch.rand(1, 3, size, size, generator=generator), torch.rand(1, 3, 4 * size, 4 * size, generator=generator))
            for _ in range(4)]
    multi, online, worst = _train_both(model, lambda step: pool[step % 4], steps=STEPS)
    assert worst <= LOSS_REL_TOL[torch.float32], f"{name}: losses differ by {worst:.3g} relative"
    x = pool[0][0]
    for trained in (multi, online):
        assert _fusion_rel_error(trained, x) <= FUSE_TOLERANCE


def test_linear_blocks_are_the_single_conv_blocks() -> None:
    """Every block whose deploy form is one dense 3x3 conv trains online as a `LinearBlock`; the
    others (non-linear glue between convs) fuse their linear parts only, or have none."""
    for name in list_blocks():
        block = get_block(name)(4, 4, **SMALL_KWARGS.get(name, {}))
        convs = [m for m in block.fuse().modules() if isinstance(m, nn.Conv2d)]
        assert isinstance(block, LinearBlock) == (len(convs) == 1), name
