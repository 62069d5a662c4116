"""The `xiaomimm` preset against an independent, functional reference of SPAN's forward pass.

Source read (not copied): hongyuanyu/SPAN @ c77a591, basicsr/archs/span_arch.py, classes `Conv3XC`,
`SPAB` and `SPAN` (github.com/hongyuanyu/SPAN); the paper: Wan et al., arXiv:2311.12770.
What that code computes (training form; its eval form is the same function, fused per Conv3XC):

- input: `(x - rgb_mean) * 255`, rgb_mean = (0.4488, 0.4371, 0.4040);
- Conv3XC(ci -> co), gain 2: `conv.2(conv.1(conv.0(pad0(x)))) + sk(x)` with conv.0 a 1x1
  ci -> 2ci, conv.1 a 3x3 2ci -> 2co *without* padding (the input was zero-padded by 1 before
  the 1x1, so the spatial size is kept), conv.2 a 1x1 2co -> co, sk a 1x1 ci -> co; all biased;
- SPAB: out1 = c1_r(x); out2 = c2_r(SiLU(out1)); out3 = c3_r(SiLU(out2));
  out = (out3 + x) * (sigmoid(out3) - 0.5); it returns (out, out1, attention);
- SPAN: conv_1 = Conv3XC(3 -> C), no activation; block_1..block_6 = SPAB(C);
  conv_2 = Conv3XC(C -> C) on block_6's output; conv_cat = 1x1 conv 4C -> C (biased) over
  cat([out_feature, conv_2(out_b6), out_b1, out_b5_2]) where out_b5_2 is block_6's `out1`;
  upsampler = 3x3 conv C -> 3*16 (padding 1) + PixelShuffle(4). Nothing is added to the output.

The reference below is written with F.conv2d / F.pad / F.silu / torch.sigmoid / torch.cat /
F.pixel_shuffle on an explicit dict of weights named as SPAN's state_dict names them
(`block_{i}.c1_r.conv.0.weight`, `conv_1.sk.bias`, `conv_cat.weight`, ...), generalised from 6 to
n blocks (out_b1 is block 1's output, the inner tap is block n's).

Known deviation of OUR preset (the only one accepted here): the template's reconstruction conv
trains as a Conv3XC (`end_block="conv3xc"`) where SPAN's upsampler is a plain 3x3 conv. The
reference therefore has an `upsampler="conv3xc"` mode (OUR deviation, used for the training-form
comparisons) and SPAN's own `upsampler="plain"` mode; after `deploy()` the Conv3XC is one 3x3 conv,
and `test_deploy_is_span_with_a_plain_upsampler` checks that the deploy network is then exactly
SPAN's topology with a plain upsampler.

Two details of SPAN's code worth knowing:

- The inner tap. SPAB's `act1` is `nn.SiLU(inplace=True)`, so `out1_act = self.act1(out1)`
  overwrites `out1` in place: the tensor SPAB returns as `out1` (SPAN's `out_b5_2`) holds
  SiLU(c1_r(x)), not c1_r(x), whatever the variable name (and the paper's figure) suggest. SPAN's
  trained weights see the activated feature, so the reference (`inner_tap="post"`) and our
  template (`SPABlock.forward_with_inner`) both tap it after SiLU; the pre-activation reading is
  one of the guards below (it changes the output by tens).
- SPAN keeps rgb_mean as a float32 tensor (`torch.Tensor(rgb_mean)`), so a float64 SPAN would
  subtract float32-rounded means; the reference (like our `InputNorm`) uses the decimal values
  in the input's dtype. In float32 the two are the same tensor.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.arch import ArchConfig
from search_space.blocks.spab import Conv3XC, Conv3XCBlock, SPABDeploy, SPABlock
from search_space.cost import cost
from search_space.network import (
    DirectReconstruction,
    FeatureTaps,
    InputNorm,
    SRNet,
    build,
    deploy,
)
from search_space.presets import get_preset

#: SPAN's `rgb_mean` (DIV2K), subtracted before scaling by `img_range` = 255.
SPAN_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SPAN_IMG_RANGE = 255.0
SCALE = 4
GAIN = 2  # SPAN builds every Conv3XC with gain1=2

#: Odd, non-square LR sizes (H, W): borders are where a padding mistake would show.
SIZES = [(7, 9), (10, 6)]
TRAIN_ATOL = 1e-10
DEPLOY_ATOL = 1e-9
GUARD_MIN_DIFF = 1e-3


# --------------------------------------------------------------------------------------------
# The reference: SPAN's forward, functional, from an explicit weight dict
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """Switches of the reference. The defaults are SPAN (with OUR Conv3XC upsampler); the others
    exist only to show that the comparison would catch the corresponding mistake."""

    upsampler: str = "conv3xc"  # "conv3xc": OUR deviation; "plain": SPAN's 3x3 conv
    normalise: bool = True  # (x - rgb_mean) * 255
    pad_input: bool = True  # Conv3XC zero-pads x before the 1x1 (False: zero-pads the 2C intermediate)
    tap_order: tuple[int, int, int, int] = (0, 1, 2, 3)  # positions in [out_feature, conv_2(out_bn), out_b1, inner]
    inner_tap: str = "post"  # "post": SiLU(c1_r(x)), what SPAN's in-place SiLU leaves; "pre": c1_r(x) (guard)


def ref_conv3xc(x: Tensor, w: dict[str, Tensor], name: str, v: Variant) -> Tensor:
    """SPAN's Conv3XC (training form): 1x1 expand on the zero-padded input, unpadded 3x3, 1x1
    reduce, plus a 1x1 skip on the unpadded input."""
    if v.pad_input:
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), w[f"{name}.conv.0.weight"], w[f"{name}.conv.0.bias"])
        y = F.conv2d(y, w[f"{name}.conv.1.weight"], w[f"{name}.conv.1.bias"])
    else:  # guard only: zero padding of the expanded map instead, which loses the bias ring
        y = F.conv2d(x, w[f"{name}.conv.0.weight"], w[f"{name}.conv.0.bias"])
        y = F.conv2d(y, w[f"{name}.conv.1.weight"], w[f"{name}.conv.1.bias"], padding=1)
    y = F.conv2d(y, w[f"{name}.conv.2.weight"], w[f"{name}.conv.2.bias"])
    return y + F.conv2d(x, w[f"{name}.sk.weight"], w[f"{name}.sk.bias"])


def ref_spab(x: Tensor, w: dict[str, Tensor], name: str, v: Variant) -> tuple[Tensor, Tensor]:
    """SPAN's SPAB: (block output, inner tap); the inner tap is c1_r's output (see `Variant`)."""
    out1 = ref_conv3xc(x, w, f"{name}.c1_r", v)
    out1_act = F.silu(out1)
    out2 = ref_conv3xc(out1_act, w, f"{name}.c2_r", v)
    out3 = ref_conv3xc(F.silu(out2), w, f"{name}.c3_r", v)
    out = (out3 + x) * (torch.sigmoid(out3) - 0.5)
    return out, (out1 if v.inner_tap == "pre" else out1_act)


def span_reference(x: Tensor, w: dict[str, Tensor], *, blocks: int, v: Variant = Variant()) -> Tensor:
    """SPAN's forward with `blocks` SPABs (SPAN: 6); `x` is LR RGB in [0, 1]."""
    if v.normalise:
        mean = torch.tensor(SPAN_RGB_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) * SPAN_IMG_RANGE
    out_feature = ref_conv3xc(x, w, "conv_1", v)
    out = out_feature
    out_b1 = inner = None
    for i in range(1, blocks + 1):
        out, inner = ref_spab(out, w, f"block_{i}", v)
        if i == 1:
            out_b1 = out
    taps = [out_feature, ref_conv3xc(out, w, "conv_2", v), out_b1, inner]
    cat = torch.cat([taps[i] for i in v.tap_order], dim=1)
    fused = F.conv2d(cat, w["conv_cat.weight"], w["conv_cat.bias"])
    if v.upsampler == "conv3xc":
        # OUR deviation: the preset trains its reconstruction conv as a Conv3XC (end_block).
        up = ref_conv3xc(fused, w, "upsampler.0", v)
    else:
        # SPAN: pixelshuffle_block = plain 3x3 conv (padding 1) C -> 3 * 16.
        up = F.conv2d(fused, w["upsampler.0.weight"], w["upsampler.0.bias"], padding=1)
    return F.pixel_shuffle(up, SCALE)


def span_shapes(channels: int, blocks: int, *, upsampler: str) -> dict[str, tuple[int, ...]]:
    """Every weight the reference reads, with the shape SPAN's constructor gives it."""

    def conv3xc(name: str, ci: int, co: int) -> dict[str, tuple[int, ...]]:
        return {
            f"{name}.conv.0.weight": (ci * GAIN, ci, 1, 1),
            f"{name}.conv.0.bias": (ci * GAIN,),
            f"{name}.conv.1.weight": (co * GAIN, ci * GAIN, 3, 3),
            f"{name}.conv.1.bias": (co * GAIN,),
            f"{name}.conv.2.weight": (co, co * GAIN, 1, 1),
            f"{name}.conv.2.bias": (co,),
            f"{name}.sk.weight": (co, ci, 1, 1),
            f"{name}.sk.bias": (co,),
        }

    c, out = channels, 3 * SCALE * SCALE
    shapes = conv3xc("conv_1", 3, c)
    for i in range(1, blocks + 1):
        for conv in ("c1_r", "c2_r", "c3_r"):
            shapes |= conv3xc(f"block_{i}.{conv}", c, c)
    shapes |= conv3xc("conv_2", c, c)
    shapes |= {"conv_cat.weight": (c, 4 * c, 1, 1), "conv_cat.bias": (c,)}
    if upsampler == "conv3xc":
        shapes |= conv3xc("upsampler.0", c, out)
    else:
        shapes |= {"upsampler.0.weight": (out, c, 3, 3), "upsampler.0.bias": (out,)}
    return shapes


# --------------------------------------------------------------------------------------------
# Our model, and the explicit map of its parameters onto SPAN's names
# --------------------------------------------------------------------------------------------


def _is_conv(layer: nn.Module, k: int, padding: int) -> bool:
    return (
        type(layer) is nn.Conv2d
        and layer.kernel_size == (k, k)
        and layer.padding == (padding, padding)
        and layer.stride == (1, 1)
        and layer.dilation == (1, 1)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and layer.bias is not None
    )


def _map_conv3xc(conv: nn.Module, name: str, out: dict[str, Tensor]) -> None:
    assert type(conv) is Conv3XC, f"{name}: {type(conv).__name__}"
    for ours, theirs, k in (("expand", "conv.0", 1), ("conv", "conv.1", 3), ("reduce", "conv.2", 1), ("skip", "sk", 1)):
        layer = getattr(conv, ours)
        assert _is_conv(layer, k, 0), f"{name}.{theirs}: {layer}"
        out[f"{name}.{theirs}.weight"] = layer.weight
        out[f"{name}.{theirs}.bias"] = layer.bias


def _map_conv3xc_block(block: nn.Module, name: str, out: dict[str, Tensor]) -> None:
    """A Conv3XC used on its own (conv_1, conv_2, our upsampler): no activation after it."""
    assert type(block) is Conv3XCBlock and type(block.act) is nn.Identity, f"{name}: {block}"
    _map_conv3xc(block.conv, name, out)


def span_weights(model: SRNet) -> dict[str, Tensor]:
    """Our parameters under SPAN's names, by walking our module tree (each module checked by type).

    Also asserts that every one of our parameters is used exactly once and that the keys and
    shapes are those of SPAN's constructor (with OUR Conv3XC upsampler)."""
    arch = model.arch
    assert type(model) is SRNet
    assert {n for n, _ in model.named_children()} == {"norm", "down", "head", "body", "taps", "fusion", "recon"}
    assert type(model.norm) is InputNorm and model.norm.mode == "mean255"
    assert type(model.down) is nn.Identity
    assert model.residual is None and not model.body_skip

    w: dict[str, Tensor] = {}
    _map_conv3xc_block(model.head, "conv_1", w)
    assert type(model.body) is nn.Sequential and len(model.body) == arch.blocks
    for i, block in enumerate(model.body, start=1):
        assert type(block) is SPABlock and block.attention and block.gain == GAIN
        assert type(block.act) is nn.SiLU and type(block.act2) is nn.SiLU
        for ours, theirs in (("c1", "c1_r"), ("c2", "c2_r"), ("c3", "c3_r")):
            _map_conv3xc(getattr(block, ours), f"block_{i}.{theirs}", w)
    assert type(model.taps) is FeatureTaps and model.taps.mode == "span"
    _map_conv3xc_block(model.taps.last_conv, "conv_2", w)
    assert _is_conv(model.fusion, 1, 0)
    w["conv_cat.weight"], w["conv_cat.bias"] = model.fusion.weight, model.fusion.bias
    assert type(model.recon) is DirectReconstruction and model.recon.shuffle.upscale_factor == SCALE
    _map_conv3xc_block(model.recon.conv, "upsampler.0", w)

    ours = [p for _, p in model.named_parameters(remove_duplicate=False)]
    uses = Counter(id(t) for t in w.values())
    assert all(n == 1 for n in uses.values()), "a parameter is mapped twice"
    assert len(w) == len(ours) and set(uses) == {id(p) for p in ours}, "not every parameter is mapped"
    assert {k: tuple(t.shape) for k, t in w.items()} == span_shapes(arch.channels, arch.blocks, upsampler="conv3xc")
    return w


def xiaomimm_arch(**changes: int) -> ArchConfig:
    return dataclasses.replace(get_preset("xiaomimm").arch, **changes)


def random_model(arch: ArchConfig, seed: int) -> SRNet:
    """`build(arch)` in float64 with every parameter redrawn (seeded), biases included.

    Weights ~ N(0, 1/fan_in) keep the features O(1..100) after the x255 input scaling, so that an
    absolute 1e-10 is a tight float64 tolerance; nonzero biases make the Conv3XC border ring matter.
    """
    model = build(arch).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 4:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p[0].numel() ** 0.5)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def lr_input(hw: tuple[int, int], seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, *hw, generator=g, dtype=torch.float64)


ARCHS = {
    "xiaomimm": xiaomimm_arch(),
    "c4_b1": xiaomimm_arch(channels=4, blocks=1),
    "c4_b2": xiaomimm_arch(channels=4, blocks=2),
    "c4_b3": xiaomimm_arch(channels=4, blocks=3),
}


@pytest.fixture(scope="module", params=list(ARCHS))
def case(request: pytest.FixtureRequest) -> tuple[SRNet, dict[str, Tensor]]:
    model = random_model(ARCHS[request.param], seed=1234)
    return model, {k: t.detach() for k, t in span_weights(model).items()}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_the_preset_is_spans_configuration() -> None:
    arch = get_preset("xiaomimm").arch
    assert (arch.channels, arch.blocks, arch.block, arch.activation) == (11, 6, "spab", "silu")
    assert (arch.input_norm, arch.head_activation) == ("mean255", False)
    assert (arch.feature_taps, arch.fusion_kernel) == ("span", 1)
    assert (arch.end_block, arch.down_factor, arch.reconstruction, arch.tail_kernel) == ("conv3xc", 1, "direct", 3)
    assert (arch.global_residual, arch.bias, arch.body_skip) == ("none", True, False)


@pytest.mark.parametrize("hw", SIZES)
def test_training_form_equals_span_reference(case: tuple[SRNet, dict[str, Tensor]], hw: tuple[int, int]) -> None:
    model, w = case
    x = lr_input(hw, seed=hw[0])
    with torch.no_grad():
        ours = model(x)
        ref = span_reference(x, w, blocks=model.arch.blocks)
    assert ours.shape == ref.shape == (2, 3, SCALE * hw[0], SCALE * hw[1])
    assert ref.abs().max() > 1.0  # a meaningful output, not one squashed to ~0
    assert (ours - ref).abs().max().item() <= TRAIN_ATOL


@pytest.mark.parametrize("hw", SIZES)
def test_deploy_form_equals_span_reference(case: tuple[SRNet, dict[str, Tensor]], hw: tuple[int, int]) -> None:
    model, w = case
    fused = deploy(model)
    x = lr_input(hw, seed=hw[1])
    with torch.no_grad():
        diff = (fused(x) - span_reference(x, w, blocks=model.arch.blocks)).abs().max().item()
    assert diff <= DEPLOY_ATOL


def test_deploy_is_span_with_a_plain_upsampler(case: tuple[SRNet, dict[str, Tensor]]) -> None:
    """After deploy our Conv3XC upsampler is one 3x3 conv: with that kernel as SPAN's plain
    `upsampler.0`, SPAN's own topology (no deviation left) reproduces our deploy network."""
    model, w = case
    fused = deploy(model)
    assert type(fused.recon.conv) is nn.Sequential and len(fused.recon.conv) == 2
    up, act = fused.recon.conv
    assert _is_conv(up, 3, 1) and type(act) is nn.Identity
    plain = {k: t for k, t in w.items() if not k.startswith("upsampler.")}
    plain["upsampler.0.weight"], plain["upsampler.0.bias"] = up.weight, up.bias
    assert {k: tuple(t.shape) for k, t in plain.items()} == span_shapes(
        model.arch.channels, model.arch.blocks, upsampler="plain"
    )
    # The deploy body is SPAN's eval form: three plain 3x3 convs per SPAB.
    assert all(type(b) is SPABDeploy and all(_is_conv(c, 3, 1) for c in (b.c1, b.c2, b.c3)) for b in fused.body)
    x = lr_input((7, 9), seed=3)
    with torch.no_grad():
        diff = (fused(x) - span_reference(x, plain, blocks=model.arch.blocks, v=Variant(upsampler="plain"))).abs().max()
    assert diff.item() <= DEPLOY_ATOL


GUARDS = {
    "swap out_b1 and inner": Variant(tap_order=(0, 1, 3, 2)),
    "swap out_feature and conv_2": Variant(tap_order=(1, 0, 2, 3)),
    "no input normalisation": Variant(normalise=False),
    "zero-pad the intermediate": Variant(pad_input=False),
    "pre-activation inner tap": Variant(inner_tap="pre"),
}


@pytest.mark.parametrize("name", list(GUARDS))
def test_the_comparison_is_sensitive(name: str) -> None:
    """Each plausible mistake moves the reference's output far beyond the tolerances above."""
    model = random_model(ARCHS["xiaomimm"], seed=1234)
    w = {k: t.detach() for k, t in span_weights(model).items()}
    x = lr_input((7, 9), seed=7)
    with torch.no_grad():
        right = span_reference(x, w, blocks=6)
        wrong = span_reference(x, w, blocks=6, v=GUARDS[name])
        ours = model(x)
    assert (right - wrong).abs().max().item() > GUARD_MIN_DIFF
    assert (ours - wrong).abs().max().item() > GUARD_MIN_DIFF


def test_input_normalisation_in_float32_is_spans() -> None:
    """In float32 (training and timing dtype) our mean is bit-for-bit SPAN's float32 rgb_mean."""
    x = torch.rand(1, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    span_mean = torch.tensor(SPAN_RGB_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    assert torch.equal(InputNorm("mean255")(x), (x - span_mean) * SPAN_IMG_RANGE)


def test_deploy_macs_and_params_from_spans_layer_list() -> None:
    """540x960 LR: every conv runs at 518,400 pixels; SPAN's deploy layers (C=11, n=6):
    conv_1 3x3 3->C, 6 x 3 SPAB 3x3 C->C, conv_2 3x3 C->C, conv_cat 1x1 4C->C, upsampler 3x3 C->48."""
    pixels = 540 * 960
    assert pixels == 518_400
    c, n = 11, 6
    macs = pixels * (3 * c * 9 + n * 3 * c * c * 9 + c * c * 9 + 4 * c * c + c * 48 * 9)
    assert macs == 518_400 * (3 * 11 * 9 + 6 * 3 * 11 * 11 * 9 + 11 * 11 * 9 + 44 * 11 + 11 * 48 * 9) == 13_594_521_600
    params = (3 * c * 9 + c) + n * 3 * (c * c * 9 + c) + (c * c * 9 + c) + (4 * c * c + c) + (c * 48 * 9 + 48)
    got = cost(get_preset("xiaomimm").arch)
    assert got.macs == macs
    assert got.params == params == 26_503
