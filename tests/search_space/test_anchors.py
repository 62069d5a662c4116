"""Interpolation anchors (global residuals) and "start at the anchor" (issue 11).

- `lanczos` is the challenge baseline exactly (`trainers.lanczos`), borders included;
- `linear` starts equal to `lanczos`;
- every anchored network, whatever its tail, outputs exactly its anchor at initialisation, in
  training and deploy form, and fuses exactly once trained;
- the anchors cost what a hand count says; the taps are buffers (no optimizer, state-dict safe);
- networks without an anchor are initialised bit-for-bit as before anchors existed.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from search_space.arch import GLOBAL_RESIDUALS, ArchConfig
from search_space.blocks import Block, get_block, list_blocks
from search_space.cost import cost, profile_macs
from search_space.errors import UserError
from search_space.network import (
    ANCHOR_KERNEL,
    CascadeReconstruction,
    DirectReconstruction,
    LanczosAnchor,
    LinearAnchor,
    SRNet,
    UpsampleResidual,
    build,
    deploy,
    lanczos_taps,
    make_anchor,
)
from trainers.lanczos import lanczos_resize, lanczos_upscale

ANCHORS = tuple(g for g in GLOBAL_RESIDUALS if g != "none")
P1 = 540 * 960  # LR pixels of the challenge input
F64_ABS_TOL = 1e-9



def _image(h: int, w: int, *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _to_tensor(img: np.ndarray, dtype: torch.dtype = torch.float64) -> Tensor:
    """uint8 HxWx3 -> (1, 3, H, W) in [0, 1], the network's input convention."""
    return torch.from_numpy(img.astype(np.float64) / 255.0).permute(2, 0, 1)[None].to(dtype)


def _to_255(y: Tensor) -> np.ndarray:
    return y[0].permute(1, 2, 0).double().numpy() * 255.0


# -- the Lanczos filter -----------------------------------------------------------------------------


def test_lanczos_taps_by_hand() -> None:
    taps = lanczos_taps()
    assert taps.shape == (4, ANCHOR_KERNEL) == (4, 7)
    assert torch.allclose(taps.sum(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-15, rtol=0)
    # Phase p samples the LR at i + (2p - 3) / 8; tap k is K(k - d_p), K(x) = sinc(x) sinc(x / 3).
    for p in range(4):
        d = (2 * p - 3) / 8
        raw = [np.sinc(k - d) * np.sinc((k - d) / 3) if abs(k - d) < 3 else 0.0 for k in range(-3, 4)]
        assert np.allclose(taps[p].numpy(), np.array(raw) / sum(raw), atol=1e-15, rtol=0)
    # Mirror symmetry of the phases: h_{3-p}[k] = h_p[-k].
    assert torch.equal(taps.flip(0).flip(1), taps)


@pytest.mark.parametrize("hw", [(5, 7), (6, 8), (9, 4), (2, 3), (1, 1)])
def test_lanczos_anchor_is_the_challenge_baseline(hw: tuple[int, int]) -> None:
    """The anchor alone equals trainers.lanczos on odd and even sizes, the border ring included.

    `lanczos_upscale` rounds to uint8, so the 1e-4 (0-255 scale) check is against its unrounded
    core `lanczos_resize(..., a=3)`, and the rounded anchor must equal `lanczos_upscale` itself.
    """
    img = _image(*hw)
    reference = lanczos_resize(img, (4 * hw[0], 4 * hw[1]), a=3)
    anchor = LanczosAnchor().double()
    with torch.no_grad():
        out = _to_255(anchor(_to_tensor(img)))
    assert np.abs(out - reference).max() <= 1e-4
    assert np.array_equal(np.clip(np.rint(out), 0, 255).astype(np.uint8), lanczos_upscale(img, 4))
    # float32 (what trains) stays within float round-off of it
    with torch.no_grad():
        out32 = _to_255(LanczosAnchor()(_to_tensor(img, torch.float32)))
    assert np.abs(out32 - reference).max() <= 1e-3


@pytest.mark.parametrize(
    ("arch", "hw"),
    [
        (ArchConfig(channels=4, blocks=1, global_residual="lanczos"), (7, 5)),
        (ArchConfig(channels=4, blocks=1, global_residual="lanczos", end_block="ecb"), (8, 6)),
        (ArchConfig(channels=4, blocks=1, down_factor=2, reconstruction="cascade", global_residual="lanczos"), (6, 10)),
        (
            ArchConfig(channels=4, blocks=2, block="spab", down_factor=3, tail_kernel=1, global_residual="lanczos"),
            (9, 6),
        ),
    ],
    ids=lambda v: v.summary().replace(" ", "_") if isinstance(v, ArchConfig) else f"{v[0]}x{v[1]}",
)
def test_lanczos_network_at_init_is_the_baseline(arch: ArchConfig, hw: tuple[int, int]) -> None:
    """A freshly built network's learned path is exactly 0, so it scores exactly Lanczos at step 0."""
    img = _image(*hw, seed=1)
    reference = lanczos_resize(img, (4 * hw[0], 4 * hw[1]), a=3)
    model = build(arch).double()
    with torch.no_grad():
        for net in (model, deploy(model)):
            assert np.abs(_to_255(net(_to_tensor(img))) - reference).max() <= 1e-4


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hw", [(5, 7), (6, 8), (1, 2)])
def test_linear_anchor_starts_equal_to_lanczos(hw: tuple[int, int], bias: bool) -> None:
    linear = LinearAnchor(bias=bias).double()
    assert (linear.conv.bias is not None) == bias
    x = _to_tensor(_image(*hw, seed=2))
    with torch.no_grad():
        assert torch.allclose(linear(x), LanczosAnchor().double()(x), atol=1e-6, rtol=0)
    # Its weight is the outer product of the phase taps on the diagonal colour blocks, zeros elsewhere.
    taps = lanczos_taps().float()
    w = linear.conv.weight.float()
    for c in range(3):
        for p in range(4):
            for q in range(4):
                expected = torch.zeros(3, 7, 7)
                expected[c] = torch.outer(taps[p], taps[q])
                assert torch.allclose(w[16 * c + 4 * p + q], expected, atol=1e-7, rtol=0)


def test_anchor_modules_structure() -> None:
    lanczos = LanczosAnchor()
    assert list(lanczos.parameters()) == []  # fixed filter: nothing for an optimizer
    convs = [m for m in lanczos.modules() if isinstance(m, nn.Conv2d)]
    assert [(type(c), c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in convs] == [
        (nn.Conv2d, 3, 12, (7, 1), 3),
        (nn.Conv2d, 12, 48, (1, 7), 12),
    ]
    assert all(c.padding_mode == "replicate" and c.bias is None for c in convs)
    assert set(dict(lanczos.named_buffers())) == {"vertical.weight", "horizontal.weight"}
    linear = LinearAnchor(bias=True)
    assert [name for name, _ in linear.named_parameters()] == ["conv.weight", "conv.bias"]
    assert linear.conv.kernel_size == (7, 7) and linear.conv.groups == 1 and linear.conv.padding_mode == "replicate"
    assert make_anchor("none", bias=True) is None
    assert isinstance(make_anchor("nearest", bias=True), UpsampleResidual)
    assert isinstance(make_anchor("lanczos", bias=True), LanczosAnchor)
    assert make_anchor("linear", bias=False).conv.bias is None
    with pytest.raises(UserError, match="bicubic"):
        make_anchor("bicubic", bias=True)


def test_anchors_draw_no_random_numbers() -> None:
    for mode in ANCHORS:
        before = torch.random.get_rng_state()
        make_anchor(mode, bias=True)
        assert torch.equal(torch.random.get_rng_state(), before), mode


# -- every tail starts at zero, with every anchor ---------------------------------------------------


def _tail_cases() -> list[ArchConfig]:
    """One arch per kind of last learned layer: every width-changing block as the 3x3 tail and as the
    cascade's 3 -> 48 conv, the plain 1x1 tail, and tails with an identity shortcut (C = 48, u = 1)."""
    cases = [ArchConfig(channels=6, blocks=1, down_factor=2, tail_kernel=1, activation="prelu")]
    for name in list_blocks():
        if not get_block(name).supports_channel_change:
            continue
        cases.append(ArchConfig(channels=5, blocks=1, end_block=name, activation="gelu"))
        cases.append(
            ArchConfig(channels=4, blocks=1, block="spab", down_factor=2, reconstruction="cascade", end_block=name)
        )
    for name in ("rep", "rep_casr"):  # 48 -> 48 tail: the identity shortcut must be cancelled
        cases.append(ArchConfig(channels=48, blocks=0, end_block=name, activation="none"))
    return cases


TAILS = _tail_cases()


def _input(arch: ArchConfig, dtype: torch.dtype, *, seed: int = 3) -> Tensor:
    u = arch.down_factor
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 5 * u, 7 * u, generator=gen, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("mode", ANCHORS)
@pytest.mark.parametrize("base", TAILS, ids=lambda a: a.summary().replace(" ", "_"))
def test_network_at_init_outputs_exactly_its_anchor(base: ArchConfig, mode: str) -> None:
    arch = ArchConfig.from_dict({**base.to_dict(), "global_residual": mode})
    torch.manual_seed(0)
    model = build(arch)
    x = _input(arch, torch.float32)
    with torch.no_grad():
        anchor = model.residual(x)
        assert torch.equal(model(x), anchor), "training form at init is not the anchor"
        assert torch.equal(deploy(model)(x), anchor), "deploy form at init is not the anchor"
        assert torch.equal(model.recon(model.body(model.head(model.down(x))), x), torch.zeros_like(anchor))


@pytest.mark.parametrize("mode", ANCHORS)
@pytest.mark.parametrize("base", TAILS, ids=lambda a: a.summary().replace(" ", "_"))
def test_trained_anchored_network_fuses_exactly(base: ArchConfig, mode: str) -> None:
    """Once every weight has moved (anchor included), deploy() still equals the training form."""
    arch = ArchConfig.from_dict({**base.to_dict(), "global_residual": mode})
    torch.manual_seed(0)
    model = build(arch).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = _input(arch, torch.float64)
    with torch.no_grad():
        y_train = model(x)
        y_deploy = deploy(model)(x)
    assert (y_train - y_deploy).abs().max().item() <= F64_ABS_TOL
    assert (y_train - model.residual(x)).abs().max().item() > 1e-3  # the learned path contributes


def test_zeroed_tail_receives_gradients() -> None:
    """Starting at zero does not stall training: the tail gets a gradient at step 0."""
    for mode in ANCHORS:
        arch = ArchConfig(channels=4, blocks=1, down_factor=2, global_residual=mode, end_block="rep")
        model = build(arch)
        x = _input(arch, torch.float32)
        (model(x) - 0.5).square().mean().backward()
        tail = model.recon.conv
        assert max(p.grad.abs().max().item() for p in tail.parameters()) > 0, mode
        if mode == "linear":
            assert model.residual.conv.weight.grad.abs().max() > 0  # the linear anchor learns too


def test_anchored_network_other_weights_equal_the_no_anchor_twin() -> None:
    """Anchors draw no random numbers, so only the zeroed tail differs from the no-anchor build."""
    for base in TAILS:
        torch.manual_seed(0)
        twin = build(base)
        twin.recon.zero_output_()
        expected = twin.state_dict()
        for mode in ANCHORS:
            torch.manual_seed(0)
            state = build(ArchConfig.from_dict({**base.to_dict(), "global_residual": mode})).state_dict()
            own = {k: v for k, v in state.items() if not k.startswith("residual.")}
            assert own.keys() == expected.keys()
            assert all(torch.equal(own[k], expected[k]) for k in own), (base.summary(), mode)


# Sha256 (first 16 hex) of the state dicts of no-anchor networks built after torch.manual_seed(0),
# computed with the code *before* anchors existed (torch 2.13 CPU): adding anchors must not change
# how any existing network is initialised (random numbers drawn, in what order, for which tensor).
NO_ANCHOR_DIGESTS: dict[str, tuple[dict, str]] = {
    "body=conv": ({"channels": 8, "blocks": 2, "block": "conv"}, "d48c87879295b059"),
    "end=conv": ({"channels": 8, "blocks": 1, "end_block": "conv"}, "075c18eca377c258"),
    "cascade end=conv": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "conv"},
        "e616b0e7d02a31c6",
    ),
    "body=dconv": ({"channels": 8, "blocks": 2, "block": "dconv"}, "7f1e4412ba429a1a"),
    "end=dconv": ({"channels": 8, "blocks": 1, "end_block": "dconv"}, "0342b6bd7df15cd0"),
    "cascade end=dconv": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "dconv"},
        "66227a3c89bbb24d",
    ),
    "body=ecb": ({"channels": 8, "blocks": 2, "block": "ecb"}, "48c4286787a30fd6"),
    "end=ecb": ({"channels": 8, "blocks": 1, "end_block": "ecb"}, "6579be7b49384fbf"),
    "cascade end=ecb": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "ecb"},
        "74e65fb080f41ba3",
    ),
    "body=rep": ({"channels": 8, "blocks": 2, "block": "rep"}, "1bf0a1ceb2515348"),
    "end=rep": ({"channels": 8, "blocks": 1, "end_block": "rep"}, "49c7a5a49a0fd049"),
    "cascade end=rep": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "rep"},
        "6b743cb3ba546b7f",
    ),
    "body=rep_casr": ({"channels": 8, "blocks": 2, "block": "rep_casr"}, "28df42a202a7b095"),
    "end=rep_casr": ({"channels": 8, "blocks": 1, "end_block": "rep_casr"}, "74362a206e8a9843"),
    "cascade end=rep_casr": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "rep_casr"},
        "4691b37835ddae3b",
    ),
    "body=rep_expand": ({"channels": 8, "blocks": 2, "block": "rep_expand"}, "f85107a1ae2be082"),
    "end=rep_expand": ({"channels": 8, "blocks": 1, "end_block": "rep_expand"}, "949f7546a10ca24b"),
    "cascade end=rep_expand": (
        {"channels": 8, "blocks": 1, "down_factor": 2, "reconstruction": "cascade", "end_block": "rep_expand"},
        "32b8a9fdef8bbb91",
    ),
    "body=spab": ({"channels": 8, "blocks": 2, "block": "spab"}, "f7946259a0cd9728"),
    "body=spab_noatt": ({"channels": 8, "blocks": 2, "block": "spab_noatt"}, "f7946259a0cd9728"),
    "tail1 u3 nobias": (
        {"channels": 6, "blocks": 1, "block": "rep_expand", "down_factor": 3, "tail_kernel": 1, "bias": False},
        "0be8ce49dee14c0c",
    ),
    "strided u4 prelu skip": (
        {
            "channels": 6,
            "blocks": 2,
            "block": "ecb",
            "activation": "prelu",
            "downsample": "strided",
            "down_factor": 4,
            "body_skip": True,
        },
        "b389133c1231994f",
    ),
    "C48 u1 end=rep": ({"channels": 48, "blocks": 0, "end_block": "rep"}, "cd2068fb1496640c"),
}


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case", list(NO_ANCHOR_DIGESTS))
def test_no_anchor_networks_initialise_as_before(case: str) -> None:
    kwargs, digest = NO_ANCHOR_DIGESTS[case]
    torch.manual_seed(0)
    assert _digest(build(ArchConfig(**kwargs))) == digest


# -- cost ------------------------------------------------------------------------------------------


def test_anchor_macs_and_params_by_hand() -> None:
    base = dict(channels=8, blocks=1, down_factor=2)
    plain = cost(ArchConfig(**base))
    hand = {
        "nearest": (0, 0),  # F.interpolate: a copy, no conv
        "bilinear": (0, 0),  # F.interpolate: elementwise, not a conv (as a grouped 3x3: 0.22 G)
        "lanczos": (P1 * (12 * 7 + 48 * 7), 0),  # separable, grouped: 0.218 G; taps are buffers
        "linear": (P1 * 3 * 48 * 7 * 7, 3 * 48 * 49 + 48),  # dense 7x7 3 -> 48: 3.66 G
    }
    assert hand["lanczos"][0] == 217_728_000 and hand["linear"][0] == 3_657_830_400
    for mode, (macs, params) in hand.items():
        anchored = cost(ArchConfig(**base, global_residual=mode))
        assert anchored.macs - plain.macs == macs, mode
        assert anchored.params - plain.params == params, mode
    nobias = cost(ArchConfig(**base, bias=False, global_residual="linear")).params
    assert nobias - cost(ArchConfig(**base, bias=False)).params == 3 * 48 * 49


@pytest.mark.parametrize("anchor", [LanczosAnchor(), LinearAnchor(bias=True)], ids=["lanczos", "linear"])
def test_thop_and_flop_counter_count_the_anchor_convs(anchor: nn.Module) -> None:
    """Grouped convs are counted per group (Cin / groups), by thop and torch's FlopCounterMode alike."""
    h, w = 5, 7
    per_pixel = 12 * 7 + 48 * 7 if isinstance(anchor, LanczosAnchor) else 3 * 48 * 49
    assert profile_macs(anchor, hw=(h, w)) == h * w * per_pixel
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        anchor(torch.rand(1, 3, h, w))
    assert counter.get_total_flops() == 2 * h * w * per_pixel


@pytest.mark.parametrize("mode", ANCHORS)
def test_anchored_network_thop_equals_flop_counter_half(mode: str) -> None:
    arch = ArchConfig(channels=6, blocks=1, down_factor=3, reconstruction="cascade", global_residual=mode)
    model = deploy(build(arch))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, 9, 12))
    assert profile_macs(model, hw=(9, 12)) * 2 == counter.get_total_flops()
    # and the scaled 540x960 count is the same per-pixel rate
    assert cost(arch).macs * 9 * 12 == profile_macs(model, hw=(9, 12)) * P1


# -- deploy, state dicts, optimizers -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["lanczos", "linear"])
def test_deploy_keeps_the_anchor_as_plain_convs(mode: str) -> None:
    model = build(ArchConfig(channels=4, blocks=1, block="ecb", global_residual=mode))
    fused = deploy(model)
    assert not any(isinstance(m, Block) for m in fused.modules())
    allowed = (nn.Conv2d, nn.ReLU, nn.PixelShuffle, nn.Identity, nn.Sequential, SRNet, DirectReconstruction)
    allowed = (*allowed, LanczosAnchor, LinearAnchor)
    assert {type(m).__name__ for m in fused.modules() if not isinstance(m, allowed)} == set()
    assert type(fused.residual) is type(model.residual)
    assert all(not p.requires_grad for p in fused.parameters())
    if mode == "linear":
        assert model.residual.conv.weight.requires_grad  # the training form's anchor is learnable


def test_lanczos_taps_never_reach_an_optimizer() -> None:
    model = build(ArchConfig(channels=4, blocks=1, global_residual="lanczos"))
    taps = {id(b) for b in model.residual.buffers()}
    assert len(taps) == 2 and not taps & {id(p) for p in model.parameters()}
    before = [b.clone() for b in model.residual.buffers()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    x = torch.rand(1, 3, 5, 6)
    for _ in range(2):
        optimizer.zero_grad()
        (model(x) - 0.5).square().mean().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.residual.buffers()))


@pytest.mark.parametrize("mode", ANCHORS)
def test_state_dict_round_trip(mode: str) -> None:
    arch = ArchConfig(channels=4, blocks=1, down_factor=2, global_residual=mode, bias=mode != "linear")
    torch.manual_seed(1)
    model = build(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(1, 3, 6, 8)
    for source in (model, deploy(model)):
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        if mode == "lanczos":
            assert {"residual.vertical.weight", "residual.horizontal.weight"} <= state.keys()
        target = build(arch) if source is model else deploy(build(arch))
        target.load_state_dict(state)  # strict
        with torch.no_grad():
            assert torch.equal(target(x), source(x))


def test_summary_names_the_anchor() -> None:
    for mode in ANCHORS:
        assert f"+{mode}" in ArchConfig(channels=4, blocks=1, global_residual=mode).summary()
    assert "+" not in ArchConfig(channels=4, blocks=1).summary()


def test_cascade_and_direct_know_their_last_layer() -> None:
    cascade = build(ArchConfig(channels=4, blocks=1, down_factor=2, reconstruction="cascade"))
    assert isinstance(cascade.recon, CascadeReconstruction)
    cascade.recon.zero_output_()
    assert all(p.abs().sum() == 0 for p in cascade.recon.to_hr.parameters())
    assert any(p.abs().sum() > 0 for p in cascade.recon.to_lr.parameters())  # only the last conv
