"""ETDS's dual-stream network (`search_space.dual_stream`): exact merge, the code's forward, deploy cost.

(a) the fused form equals the training form in float64 (plain-conv and ECB backbones, bias on/off,
odd and even sizes); (b) the training form equals an independent functional re-statement of the
ETDS forward (ECNUSR/ETDS core/archs/ir/ETDS/arch.py, `ETDS.forward`) with ECB kernels written out
as in xindongzhang/ECBSR models/ecb.py, from explicitly given weights; (c) the deploy MACs and
params at 960x540 of ETDS's x4 "M5C24" model against survey Table 6 (ETDS 20.342 G / 0.0394 M)
and Table 1 (MegastudyEdu 20.7 G / 0.040 M).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.ecb import ECBlock
from search_space.dual_stream import SCALE, DualStreamSR
from search_space.errors import UserError

SIZES = ((7, 9), (8, 10))
F64_ABS_TOL = 1e-9
REFERENCE_TOL = 1e-10
LR_PIXELS = 960 * 540


def randomize(module: nn.Module, *, seed: int, std: float = 0.3) -> None:
    """Every parameter (ECB scales, PReLU slopes, the residual stream's identities) to N(0, std) noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * std)


def make(seed: int = 0, **kwargs) -> DualStreamSR:
    torch.manual_seed(seed)
    args = {"channels": 5, "residual_channels": 4, "blocks": 2} | kwargs
    return DualStreamSR(**args).double()


def image(h: int, w: int, *, seed: int, low: float = 0.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (1.0 - low) * torch.rand(2, 3, h, w, generator=generator, dtype=torch.float64)


def nearest_x4(x: Tensor) -> Tensor:
    return x.repeat_interleave(SCALE, dim=-2).repeat_interleave(SCALE, dim=-1)


# -- (a) fused == training form -----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("block", ["conv", "ecb"])
def test_fused_equals_training_form(block: str, bias: bool, size: tuple[int, int]) -> None:
    model = make(backbone_block=block, bias=bias)
    randomize(model, seed=1)
    fused = model.fuse()
    x = image(*size, seed=2)
    expected = model(x)
    assert expected.shape == (2, 3, SCALE * size[0], SCALE * size[1])
    assert (fused(x) - expected).abs().max().item() <= F64_ABS_TOL
    # Plain convs + activations + shuffle only, one conv per layer, all of width B + R.
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == model.blocks + 2
    assert all(c.kernel_size == (3, 3) and (c.bias is not None) == bias for c in convs)
    assert [c.out_channels for c in convs[:-1]] == [model.deploy_channels] * (model.blocks + 1)
    assert {type(m) for m in fused.children()} == {nn.Conv2d, nn.ReLU, nn.PixelShuffle}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"act": "prelu", "backbone_block": "ecb"},
        {"act": "lrelu", "backbone_block": "rep"},
        {"backbone_to_residual": True, "backbone_block": "ecb"},
        {"blocks": 0},
        {"residual_channels": 3, "channels": 2, "blocks": 3},
    ],
    ids=["prelu-ecb", "lrelu-rep", "b2r-ecb", "no-blocks", "narrow"],
)
def test_fused_equals_training_form_variants(kwargs: dict) -> None:
    model = make(**kwargs)
    randomize(model, seed=3)
    x = image(7, 9, seed=4)
    assert (model.fuse()(x) - model(x)).abs().max().item() <= F64_ABS_TOL


def test_fusion_holds_for_negative_inputs_too() -> None:
    """The residual stream's ReLUs are in the training form as well, so the merge needs no [0, 1] input."""
    model = make(backbone_block="ecb")
    randomize(model, seed=5)
    x = image(8, 10, seed=6, low=-1.0)
    assert x.min() < 0
    assert (model.fuse()(x) - model(x)).abs().max().item() <= F64_ABS_TOL


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_clip_form_is_the_clamped_training_form(bias: bool) -> None:
    """ETDSForInference's negated tail + ReLU + 1x1 `1 - v` + ReLU is clamp(output, 0, 1)."""
    model = make(backbone_block="ecb", bias=bias)
    randomize(model, seed=7, std=0.6)
    x = image(7, 9, seed=8)
    expected = model(x)
    assert (expected < 0).any() and (expected > 1).any()  # both sides of the clamp are exercised
    clipped = model.fuse(clip=True)
    assert (clipped(x) - expected.clamp(0.0, 1.0)).abs().max().item() <= F64_ABS_TOL
    assert [m.kernel_size for m in clipped.modules() if isinstance(m, nn.Conv2d)][-2:] == [(3, 3), (1, 1)]


# -- the residual stream is the anchor --------------------------------------------------------------------


@pytest.mark.parametrize("block", ["conv", "ecb"])
def test_zero_output_starts_at_nearest_neighbour_for_images(block: str) -> None:
    model = make(backbone_block=block, backbone_to_residual=True)
    model.zero_output_()
    x = image(7, 9, seed=9)
    output, residual_output = model.forward_streams(x)
    assert torch.equal(output, nearest_x4(x))
    assert torch.equal(residual_output, nearest_x4(x))
    assert torch.equal(model.fuse()(x), nearest_x4(x))


def test_residual_stream_carries_only_non_negative_inputs() -> None:
    """The ETDS assumption: a negative pixel is clipped by the residual stream's ReLUs."""
    model = make(backbone_block="ecb")
    model.zero_output_()
    x = image(7, 9, seed=10, low=-1.0)
    output = model(x)
    assert torch.equal(output, nearest_x4(x.clamp(min=0.0)))
    assert not torch.allclose(output, nearest_x4(x))


def test_fresh_network_follows_etds_init() -> None:
    """Residual stream = nearest x4 of the image, K_r2b = 0; the backbone adds its random correction."""
    model = make(backbone_block="ecb")
    x = image(8, 10, seed=11)
    output, residual_output = model.forward_streams(x)
    assert torch.equal(residual_output, nearest_x4(x))
    assert not torch.equal(output, residual_output)
    assert all(not conv.weight.any() for conv in model.residual_to_backbone)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    randomize(model, seed=12)
    model.reset_residual_stream_()
    assert torch.equal(model.forward_streams(x)[1], nearest_x4(x))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if "residual" in k)


def test_construction_check_draws_no_random_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The constructor's fuse() check (new convs, randomly initialised) leaves the global generator alone."""
    kwargs = {"channels": 5, "residual_channels": 3, "blocks": 2, "backbone_block": "ecb"}
    torch.manual_seed(0)
    DualStreamSR(**kwargs)
    after = torch.get_rng_state()
    prebuilt = nn.Sequential(nn.Conv2d(5, 5, 3, padding=1))
    monkeypatch.setattr(ECBlock, "fuse", lambda self: prebuilt)  # a check that draws nothing
    torch.manual_seed(0)
    DualStreamSR(**kwargs)
    assert torch.equal(torch.get_rng_state(), after)


def test_every_parameter_gets_a_gradient_and_residual_parameters_are_the_residual_stream() -> None:
    model = make(backbone_block="ecb", act="prelu", backbone_to_residual=True)
    randomize(model, seed=13)
    model(image(7, 9, seed=14)).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    residual = {id(p) for p in model.residual_parameters()}
    named = {name for name, p in model.named_parameters() if id(p) in residual}
    assert named == {name for name, _ in model.named_parameters() if "residual" in name}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"residual_channels": 2}, "residual_channels"),
        ({"channels": 0}, "channels"),
        ({"blocks": -1}, "blocks"),
        ({"act": "gelu"}, "act(v) = v"),
        ({"backbone_block": "spab"}, "single dense 3x3"),
        ({"backbone_block": "nope"}, "unknown block"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs: dict, words: str) -> None:
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        make(**kwargs)


# -- (b) the ETDS code's forward, written out from explicit weights ------------------------------------------

#: ECBSR's fixed edge masks, (row, column): Sobel-x, Sobel-y, Laplacian (models/ecb.py, SeqConv3x3).
MASKS = (
    [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
    [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
)


def ring_padded(y: Tensor, value: Tensor | None) -> Tensor:
    """`y` with a one-pixel border holding `value` per channel (ECBSR's `b0_pad`)."""
    n, c, h, w = y.shape
    out = y.new_zeros(n, c, h + 2, w + 2)
    if value is not None:
        out[:] = value.view(1, c, 1, 1)
    out[:, :, 1:-1, 1:-1] = y
    return out


def ecb_reference(x: Tensor, p: dict) -> Tensor:
    """ECBSR's ECB training forward (no identity, linear): the five branches summed."""
    y = F.conv2d(x, p["k3"], p["b3"], padding=1)
    mid = F.conv2d(x, p["k0"], p["b0"])
    y = y + F.conv2d(ring_padded(mid, p["b0"]), p["k1"], p["b1"])
    for mask, edge in zip(MASKS, p["edges"]):
        mid = F.conv2d(x, edge["k0"], edge["b0"])
        kernel = edge["scale"] * torch.tensor(mask, dtype=x.dtype).expand(mid.shape[1], 1, 3, 3)
        y = y + F.conv2d(ring_padded(mid, edge["b0"]), kernel, edge["bias"], groups=mid.shape[1])
    return y


def etds_reference(x: Tensor, w: dict) -> Tensor:
    """`ETDS.forward`: relu after every layer in both streams, K_b + K_r2b into the backbone."""
    b = F.relu(F.conv2d(x, w["first"], w["first_b"], padding=1))
    r = F.relu(F.conv2d(x, w["r_first"], w["r_first_b"], padding=1))
    for layer in w["layers"]:
        to_backbone = F.conv2d(r, layer["r2b"], None, padding=1)
        new_r = F.conv2d(r, layer["r"], layer["r_b"], padding=1)
        b, r = F.relu(ecb_reference(b, layer["ecb"]) + to_backbone), F.relu(new_r)
    out = F.pixel_shuffle(F.conv2d(b, w["last"], w["last_b"], padding=1), SCALE)
    return out + F.pixel_shuffle(F.conv2d(r, w["r_last"], w["r_last_b"], padding=1), SCALE)


def random_etds_weights(*, colors: int, backbone: int, residual: int, blocks: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3

    out = colors * SCALE * SCALE
    mid = 2 * backbone  # ECBSR's depth_multiplier 2.0
    layers = []
    for _ in range(blocks):
        edges = [
            {"k0": rand(backbone, backbone, 1, 1), "b0": None, "scale": rand(backbone, 1, 1, 1), "bias": rand(backbone)}
            for _ in MASKS
        ]
        ecb = {
            "k3": rand(backbone, backbone, 3, 3), "b3": rand(backbone),
            "k0": rand(mid, backbone, 1, 1), "b0": rand(mid), "k1": rand(backbone, mid, 3, 3), "b1": rand(backbone),
            "edges": edges,
        }
        r2b, r = rand(backbone, residual, 3, 3), rand(residual, residual, 3, 3)
        layers.append({"ecb": ecb, "r2b": r2b, "r": r, "r_b": rand(residual)})
    return {
        "first": rand(backbone, colors, 3, 3), "first_b": rand(backbone),
        "r_first": rand(residual, colors, 3, 3), "r_first_b": rand(residual),
        "layers": layers,
        "last": rand(out, backbone, 3, 3), "last_b": rand(out),
        "r_last": rand(out, residual, 3, 3), "r_last_b": rand(out),
    }


def load_etds_weights(model: DualStreamSR, w: dict) -> None:
    """Copy the explicit weights into the module; every parameter must be set exactly once."""
    written: list[nn.Parameter] = []

    def put(param: nn.Parameter, value: Tensor) -> None:
        assert param.shape == value.shape
        param.copy_(value)
        written.append(param)

    with torch.no_grad():
        put(model.head.weight, w["first"])
        put(model.head.bias, w["first_b"])
        put(model.residual_head.weight, w["r_first"])
        put(model.residual_head.bias, w["r_first_b"])
        for i, layer in enumerate(w["layers"]):
            block, ecb = model.body[i], layer["ecb"]
            put(block.conv3.weight, ecb["k3"])
            put(block.conv3.bias, ecb["b3"])
            put(block.expand.expand.weight, ecb["k0"])
            put(block.expand.expand.bias, ecb["b0"])
            put(block.expand.conv.weight, ecb["k1"])
            put(block.expand.conv.bias, ecb["b1"])
            for branch, edge, mask in zip(block.edges, ecb["edges"], MASKS):
                assert branch.conv.bias is None and edge["b0"] is None  # ours drops the cancelling 1x1 bias
                assert torch.equal(branch.mask[0, 0], torch.tensor(mask, dtype=branch.mask.dtype))
                put(branch.conv.weight, edge["k0"])
                put(branch.scale, edge["scale"])
                put(branch.bias, edge["bias"])
            put(model.residual_to_backbone[i].weight, layer["r2b"])
            put(model.residual_body[i].weight, layer["r"])
            put(model.residual_body[i].bias, layer["r_b"])
        put(model.tail.weight, w["last"])
        put(model.tail.bias, w["last_b"])
        put(model.residual_tail.weight, w["r_last"])
        put(model.residual_tail.bias, w["r_last_b"])
    assert sorted(map(id, written)) == sorted(map(id, model.parameters()))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_training_form_matches_the_etds_forward_with_ecb_kernels(size: tuple[int, int]) -> None:
    backbone, residual, blocks = 4, 3, 2
    model = make(channels=backbone, residual_channels=residual, blocks=blocks, backbone_block="ecb")
    weights = random_etds_weights(colors=3, backbone=backbone, residual=residual, blocks=blocks, seed=15)
    load_etds_weights(model, weights)
    x = image(*size, seed=16)
    expected = etds_reference(x, weights)
    assert (model(x) - expected).abs().max().item() <= REFERENCE_TOL
    assert (model.fuse()(x) - expected).abs().max().item() <= F64_ABS_TOL


# -- (c) deploy cost at 960x540 ------------------------------------------------------------------------------


def conv_cost(model: nn.Module, *, pixels: int) -> tuple[int, int]:
    """(MACs, params) of the stride-1, same-size convs: pixels * Cin * Cout * k * k / groups; w + b."""
    macs = params = 0
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.stride == (1, 1)
            kh, kw = conv.kernel_size
            macs += pixels * conv.in_channels * conv.out_channels * kh * kw // conv.groups
            params += sum(p.numel() for p in conv.parameters())
    assert params == sum(p.numel() for p in model.parameters())  # PixelShuffle and ReLU hold none
    return macs, params


def test_etds_m5c24_deploy_cost_reproduces_table_6() -> None:
    """ETDS x4 num_feat 24 (21 backbone + 3 residual), num_block 5, deployed with its clamp.

    Hand formula per LR pixel: 3*24*9 + 5*24*24*9 + 24*48*9 + 48*48 = 39,240 MACs;
    params = those weights + 24 * 6 + 48 + 48 biases = 39,480. Table 6 prints 20.342 G / 0.0394 M
    (0.03948 truncated). MegastudyEdu's Feature-Enhanced Module concatenates a 3-channel gradient map
    to the input, so its first conv reads 6 channels: + 3*24*9 = 648 MACs and params per pixel
    -> 20.678 G / 40,128, printed 20.677 G / 0.0401 M (Table 6) and 20.7 G / 0.040 M (Table 1).
    """
    model = DualStreamSR(channels=21, residual_channels=3, blocks=5, backbone_block="ecb")
    clipped = conv_cost(model.fuse(clip=True), pixels=LR_PIXELS)
    plain = conv_cost(model.fuse(), pixels=LR_PIXELS)
    per_pixel = 3 * 24 * 9 + 5 * 24 * 24 * 9 + 24 * 48 * 9 + 48 * 48
    assert clipped == (per_pixel * LR_PIXELS, per_pixel + 24 * 6 + 48 + 48) == (20_342_016_000, 39_480)
    assert plain == ((per_pixel - 48 * 48) * LR_PIXELS, 39_480 - 48 * 48 - 48)
    assert int(clipped[0] / 1e6) / 1e3 == 20.342 and int(clipped[1] / 1e2) / 1e4 == 0.0394
    feature_enhanced = (clipped[0] + 3 * 24 * 9 * LR_PIXELS, clipped[1] + 3 * 24 * 9)
    assert int(feature_enhanced[0] / 1e6) / 1e3 == 20.677 and int(feature_enhanced[1] / 1e2) / 1e4 == 0.0401
    print(
        f"\nETDS M5C24 x4 @960x540 deploy with clamp: {clipped[0] / 1e9:.6f} GMACs, {clipped[1]} params"
        f" (Table 6: 20.342 G / 0.0394 M)"
        f"\n  without the clamp (fuse()): {plain[0] / 1e9:.6f} GMACs, {plain[1]} params"
        f"\n  + 6-channel head (MegastudyEdu estimate): {feature_enhanced[0] / 1e9:.6f} GMACs,"
        f" {feature_enhanced[1]} params (Table 6: 20.677 G / 0.0401 M; Table 1: 20.7 G / 0.040 M)"
    )
