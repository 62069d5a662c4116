"""The network template: shapes, training form == deploy form, deploy structure, template wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.arch import ArchConfig
from search_space.blocks import Block, get_block, list_blocks
from search_space.blocks.spab import SPABDeploy
from search_space.errors import UserError
from search_space.blocks.repvit import GlobalAvgPool, RepViTDeploy, SqueezeExcite
from search_space.blocks.safmpp import MaxPoolToFraction, Multiply, ResizeBilinearLike, SAFMPPDeploy
from search_space.network import (
    CascadeReconstruction,
    DirectReconstruction,
    FeatureTaps,
    InputNorm,
    ShuffleReconstruction,
    SRNet,
    UpsampleResidual,
    build,
    deploy,
)
from search_space.presets import get_preset, list_presets

F64_ABS_TOL = 1e-9

# Everything a deploy model may contain: plain convs, activations and parameter-free glue.
DEPLOY_TYPES = (
    nn.Conv2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Sequential,
    SRNet,
    DirectReconstruction,
    CascadeReconstruction,
    UpsampleResidual,
    SPABDeploy,
    # version-2 template parts and the partly fused blocks' glue (all parameter-free or plain convs)
    FeatureTaps,
    InputNorm,
    ShuffleReconstruction,
    RepViTDeploy,
    SqueezeExcite,
    GlobalAvgPool,
    nn.Sigmoid,
    SAFMPPDeploy,
    MaxPoolToFraction,
    ResizeBilinearLike,
    Multiply,
)


def _perturbed_f64(arch: ArchConfig, seed: int = 0) -> SRNet:
    """A float64 training-form model whose every trainable tensor is randomized.

    Default inits leave some branches nearly silent (ECB edge scales of 1e-3); noise on every
    trainable parameter (biases included, fixed masks excluded) makes every branch and every
    border term visible at the 1e-9 tolerance.
    """
    torch.manual_seed(seed)
    model = build(arch).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _input(arch: ArchConfig, *, seed: int = 1) -> Tensor:
    u = arch.down_factor
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 5 * u, 7 * u, generator=gen, dtype=torch.float64)


def _check_train_equals_deploy(arch: ArchConfig) -> None:
    model = _perturbed_f64(arch)
    x = _input(arch)
    with torch.no_grad():
        y_train = model(x)
    fused = deploy(model)
    with torch.no_grad():
        y_deploy = fused(x)
    assert y_train.shape == (1, 3, 4 * x.shape[-2], 4 * x.shape[-1])
    assert y_deploy.dtype == torch.float64
    err = (y_train - y_deploy).abs().max().item()
    assert err <= F64_ABS_TOL, f"{arch.summary()}: max |train - deploy| = {err:.3e}"
    # The comparison is meaningful: the output is not trivially small.
    assert y_train.abs().max().item() > 1e-2


@pytest.mark.parametrize("name", list_presets())
def test_preset_train_form_equals_deploy_form(name: str) -> None:
    _check_train_equals_deploy(get_preset(name).arch)


def _template_cases() -> list[ArchConfig]:
    """Archs that reach every branch of the template with every registered block."""
    cases = [
        ArchConfig(channels=5, blocks=1, downsample="strided", down_factor=3, global_residual="bilinear"),
        ArchConfig(channels=5, blocks=2, downsample="strided", down_factor=4, reconstruction="cascade", bias=False),
        ArchConfig(channels=6, blocks=0, down_factor=4, tail_kernel=1, global_residual="nearest", activation="prelu"),
        ArchConfig(channels=4, blocks=2, body_skip=True, activation="lrelu", down_factor=1),
    ]
    for name in list_blocks():
        cases.append(
            ArchConfig(
                channels=4,
                blocks=2,
                block=name,
                activation="silu",
                down_factor=2,
                body_skip=True,
                reconstruction="cascade",
            )
        )
        if get_block(name).supports_channel_change:
            cases.append(ArchConfig(channels=4, blocks=1, activation="gelu", down_factor=3, end_block=name, bias=False))
    return cases + _version_2_cases()


def _version_2_cases() -> list[ArchConfig]:
    """Every version-2 option of the template, alone and combined (with anchors: they start at zero)."""
    return [
        ArchConfig(channels=4, blocks=2, input_norm="signed", head_activation=False),
        ArchConfig(channels=4, blocks=1, input_norm="mean255", down_factor=2, reconstruction="cascade"),
        ArchConfig(channels=4, blocks=2, downsample="strided", down_factor=2, head_activation=False, activation="prelu"),
        ArchConfig(channels=4, blocks=3, feature_taps="all", fusion_kernel=1, global_residual="lanczos"),
        ArchConfig(channels=4, blocks=2, feature_taps="all", fusion_kernel=3, end_block="ecb", down_factor=2),
        ArchConfig(channels=4, blocks=2, feature_taps="all", down_factor=2, reconstruction="cascade"),  # 12 -> tail
        ArchConfig(channels=5, blocks=2, block="spab", activation="silu", feature_taps="span", fusion_kernel=1,
                   end_block="conv3xc", input_norm="mean255", head_activation=False),
        ArchConfig(channels=4, blocks=3, block="spab_noatt", feature_taps="span", fusion_kernel=3, down_factor=2,
                   global_residual="linear"),
        ArchConfig(channels=4, blocks=1, block="spab", feature_taps="span", global_residual="nearest"),  # n = 1
        ArchConfig(channels=4, blocks=2, body_skip=True, fusion_kernel=3, tail_kernel=1, end_block="rep_rvsr",
                   global_residual="bilinear"),
        ArchConfig(channels=6, blocks=2, down_factor=2, reconstruction="shuffle", lr_channels=3, end_block="rep_edge"),
        ArchConfig(channels=4, blocks=1, down_factor=3, reconstruction="shuffle", lr_channels=5,
                   global_residual="lanczos", bias=False),
        ArchConfig(channels=4, blocks=2, block="dconv", downsample="strided", down_factor=2, strided_head="dconv",
                   reconstruction="shuffle", lr_channels=2, end_block="dconv", bias=False),
        ArchConfig(channels=5, blocks=2, block="repvit", activation="gelu", down_factor=2, head_activation=False,
                   body_skip=True),
        ArchConfig(channels=6, blocks=1, block="safmpp", activation="gelu", bias=False, body_skip=True),
        ArchConfig(channels=5, residual_channels=3, blocks=2, block="ecb"),
        ArchConfig(channels=4, residual_channels=4, blocks=1, block="rep", activation="prelu", bias=False),
        ArchConfig(channels=4, residual_channels=3, blocks=0),
    ]


@pytest.mark.parametrize("arch", _template_cases(), ids=lambda a: a.summary().replace(" ", "_"))
def test_template_train_form_equals_deploy_form(arch: ArchConfig) -> None:
    _check_train_equals_deploy(arch)


@pytest.mark.parametrize("name", list_presets())
def test_deploy_structure(name: str) -> None:
    model = build(get_preset(name).arch)
    fused = deploy(model)
    assert not fused.training and all(not m.training for m in fused.modules())
    assert all(not p.requires_grad for p in fused.parameters())
    assert not any(isinstance(m, Block) for m in fused.modules())
    unexpected = {type(m).__name__ for m in fused.modules() if not isinstance(m, DEPLOY_TYPES)}
    assert not unexpected
    # No parameter is shared with the training model, which is left untouched and trainable.
    train_ids = {id(p) for p in model.parameters()}
    assert not train_ids & {id(p) for p in fused.parameters()}
    assert model.training and any(isinstance(m, Block) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    # Deploying a deployed model changes nothing.
    again = deploy(fused)
    x = torch.rand(1, 3, 2 * fused.arch.down_factor, 3 * fused.arch.down_factor)
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))


@pytest.mark.parametrize(("u", "kernel"), [(2, 3), (3, 3), (4, 5)])
def test_strided_head_geometry(u: int, kernel: int) -> None:
    model = build(ArchConfig(channels=4, blocks=0, downsample="strided", down_factor=u))
    conv = model.head[0]
    assert isinstance(conv, nn.Conv2d)
    assert conv.kernel_size == (kernel, kernel) and conv.stride == (u, u) and conv.padding == ((kernel - 1) // 2,) * 2
    x = torch.rand(1, 3, 9 * u, 16 * u)
    with torch.no_grad():
        assert model.head(model.down(x)).shape == (1, 4, 9, 16)
        assert model(x).shape == (1, 3, 36 * u, 64 * u)


def _zero_convs(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_global_residual_adds_x4_upsample(mode: str) -> None:
    arch = ArchConfig(channels=4, blocks=1, down_factor=2, global_residual=mode)
    model = deploy(build(arch))
    _zero_convs(model.recon)  # the learned path now contributes exactly 0
    x = torch.rand(1, 3, 6, 10)
    with torch.no_grad():
        y = model(x)
    if mode == "nearest":
        expected = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    else:
        expected = F.interpolate(x, size=(24, 40), mode="bilinear", align_corners=False)
        # By hand, away from the border: output row/col 4i+2 samples input row/col i + 1/8.
        a, b = 0.875, 0.125
        by_hand = a * a * x[0, :, 1, 1] + a * b * x[0, :, 1, 2] + b * a * x[0, :, 2, 1] + b * b * x[0, :, 2, 2]
        assert torch.allclose(y[0, :, 6, 6], by_hand, atol=1e-6)
    assert torch.allclose(y, expected, atol=1e-6)


def test_no_global_residual_means_learned_path_only() -> None:
    model = deploy(build(ArchConfig(channels=4, blocks=1, down_factor=2)))
    _zero_convs(model.recon)
    with torch.no_grad():
        assert torch.equal(model(torch.rand(1, 3, 4, 6)), torch.zeros(1, 3, 16, 24))


def test_cascade_adds_x_at_lr_before_the_hr_conv() -> None:
    # to_lr silenced, to_hr set to copy channel c into the 16 sub-pixels of c: the output must be
    # the nearest x4 upsample of x, which proves "+ x" sits between PS(u) and the 3 -> 48 conv.
    arch = ArchConfig(channels=4, blocks=1, down_factor=2, reconstruction="cascade")
    model = deploy(build(arch))
    _zero_convs(model.recon.to_lr)
    conv = model.recon.to_hr[0]
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (48, 3, 3, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[16 * c : 16 * (c + 1), c, 1, 1] = 1.0
    x = torch.rand(1, 3, 6, 8)
    with torch.no_grad():
        y = model(x)
    assert torch.allclose(y, x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3), atol=1e-6)


def test_body_skip_adds_head_output() -> None:
    with_skip = deploy(build(ArchConfig(channels=4, blocks=2, down_factor=2, body_skip=True)))
    without = deploy(build(ArchConfig(channels=4, blocks=2, down_factor=2)))
    without.load_state_dict(with_skip.state_dict())
    _zero_convs(with_skip.body)
    _zero_convs(without.body)
    x = torch.rand(1, 3, 4, 6)
    with torch.no_grad():
        head = with_skip.head(with_skip.down(x))
        assert head.abs().max() > 0
        assert torch.allclose(with_skip(x), with_skip.recon(head, x), atol=1e-6)
        assert torch.allclose(without(x), without.recon(torch.zeros_like(head), x), atol=1e-6)


def test_layer_widths_follow_the_template() -> None:
    model = deploy(build(get_preset("anunet").arch))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    shapes = [tuple(c.weight.shape) for c in convs]
    assert shapes == [(28, 12, 3, 3), (28, 28, 3, 3), (28, 28, 3, 3), (28, 28, 3, 3), (192, 28, 3, 3)]
    model = deploy(build(get_preset("lanczospp").arch))
    shapes = [tuple(c.weight.shape) for c in model.modules() if isinstance(c, nn.Conv2d)]
    assert shapes == [(24, 27, 3, 3), (24, 24, 3, 3), (432, 24, 1, 1)]
    assert all(c.bias is None for c in model.modules() if isinstance(c, nn.Conv2d))


@pytest.mark.parametrize("shape", [(1, 3, 7, 8), (1, 3, 8, 9), (1, 1, 8, 8), (3, 8, 8)])
def test_bad_input_shape_is_a_user_error(shape: tuple[int, ...]) -> None:
    model = build(ArchConfig(channels=4, blocks=0, down_factor=2))
    with pytest.raises(UserError):
        model(torch.rand(*shape))


def test_batched_forward_for_every_down_factor() -> None:
    # 540x960 is divisible by every u; a 1/60-scale input of the same aspect ratio stands in for it.
    for u in (1, 2, 3, 4):
        model = build(ArchConfig(channels=4, blocks=1, down_factor=u, reconstruction="cascade" if u > 1 else "direct"))
        assert 540 % u == 0 and 960 % u == 0
        with torch.no_grad():
            assert model(torch.rand(2, 3, 9 * u, 16 * u)).shape == (2, 3, 36 * u, 64 * u)


def test_deploy_of_a_bare_block() -> None:
    block = get_block("ecb")(3, 4, bias=True, act="relu")
    fused = deploy(block)
    assert not isinstance(fused, Block) and not fused.training
    assert all(not p.requires_grad for p in fused.parameters())
    assert block.training and all(p.requires_grad for p in block.parameters())


# -- version 2 of the template ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", _version_2_cases(), ids=lambda a: a.summary().replace(" ", "_"))
def test_version_2_networks_start_exactly_at_their_anchor(arch: ArchConfig) -> None:
    """With an anchor (or the dual stream's residual stream) the learned path starts at exactly 0."""
    torch.manual_seed(0)
    model = build(arch)
    x = torch.rand(1, 3, 5 * arch.down_factor, 7 * arch.down_factor)
    with torch.no_grad():
        y = model(x)
        if arch.residual_channels:
            nearest = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
            assert torch.equal(y, nearest), "the dual stream does not start at its nearest anchor"
            assert torch.equal(deploy(model)(x), nearest)
        elif arch.global_residual != "none":
            assert torch.equal(y, model.residual(x)) and torch.equal(deploy(model)(x), model.residual(x))
        else:
            assert y.abs().max() > 0


def test_input_normalisation_by_hand() -> None:
    from search_space.network import DIV2K_RGB_MEAN, InputNorm

    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(InputNorm("signed")(x), 2 * x - 1)
    mean = torch.tensor(DIV2K_RGB_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.allclose(InputNorm("mean255")(x), (x - mean) * 255, atol=0, rtol=0)
    # Only the learned path sees it: a network whose learned path is silenced outputs its anchor of x.
    model = build(ArchConfig(channels=4, blocks=1, input_norm="mean255", global_residual="nearest"))
    with torch.no_grad():
        assert torch.equal(model(x.float()), x.float().repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def test_linear_head_has_no_activation() -> None:
    plain = build(ArchConfig(channels=4, blocks=1, activation="prelu", head_activation=False))
    assert isinstance(plain.head.act, nn.Identity)
    assert isinstance(build(ArchConfig(channels=4, blocks=1, activation="prelu")).head.act, nn.PReLU)
    strided = build(ArchConfig(channels=4, blocks=1, downsample="strided", down_factor=2, head_activation=False))
    assert isinstance(strided.head[1], nn.Identity)


def _record_outputs(modules: list[nn.Module]) -> list[Tensor]:
    seen: list[Tensor] = []
    for m in modules:
        m.register_forward_hook(lambda _m, _i, out: seen.append(out))
    return seen


def test_all_taps_concatenate_head_and_every_block_in_order() -> None:
    model = deploy(build(ArchConfig(channels=3, blocks=2, feature_taps="all", fusion_kernel=1)))
    outs = _record_outputs([model.head, *model.body])
    fused_in: list[Tensor] = []
    model.fusion.register_forward_hook(lambda _m, inputs, _o: fused_in.append(inputs[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 5, 6))
    assert model.fusion.in_channels == 9 and model.fusion.out_channels == 3
    assert torch.equal(fused_in[0], torch.cat(outs, dim=1))


def test_span_taps_are_spans_order() -> None:
    # Concat(O0, conv(On), O1, inner(On)): inner = the last block's first conv output, activated.
    model = deploy(build(ArchConfig(channels=3, blocks=3, block="spab", feature_taps="span", fusion_kernel=1)))
    head, blocks, last_conv = model.head, list(model.body), model.taps.last_conv
    outs = _record_outputs([head, blocks[0], last_conv, blocks[-1].act1])
    fused_in: list[Tensor] = []
    model.fusion.register_forward_hook(lambda _m, inputs, _o: fused_in.append(inputs[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 5, 6))
    o0, o1, inner, conv_last = outs  # in the order they are computed
    assert torch.equal(fused_in[0], torch.cat([o0, conv_last, o1, inner], dim=1))


def test_shuffle_reconstruction_widths() -> None:
    # RESR: 32 -> 4 * 8 at half size, PS2 -> 8 channels at LR size, 8 -> 48, PS4.
    model = deploy(build(get_preset("resr").arch))
    to_lr, to_hr = model.recon.to_lr[0], model.recon.to_hr[0]
    assert tuple(to_lr.weight.shape) == (32, 32, 3, 3) and tuple(to_hr.weight.shape) == (48, 8, 3, 3)
    x = torch.rand(1, 3, 6, 8)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 24, 32)


def test_ustc_head_is_a_4x4_stride_2_conv_at_deploy() -> None:
    model = deploy(build(get_preset("ustc_noah").arch))
    conv = model.head[0]
    assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1) and conv.bias is None
    with torch.no_grad():
        assert model.head(torch.rand(1, 3, 10, 14)).shape == (1, 32, 5, 7)


def test_dual_stream_deploys_to_plain_convs_of_both_widths() -> None:
    model = deploy(build(get_preset("megastudy").arch))
    shapes = [tuple(c.weight.shape) for c in model.modules() if isinstance(c, nn.Conv2d)]
    assert shapes == [(24, 3, 3, 3)] + [(24, 24, 3, 3)] * 5 + [(48, 24, 3, 3)]


def test_version_1_state_dicts_still_load() -> None:
    # A version-1 arch builds the same module tree (no new submodule appears at the defaults).
    arch = get_preset("anunet").arch
    names = [n for n, _ in build(arch).named_parameters()]
    assert not any(n.startswith(("taps", "fusion", "norm", "dual")) for n in names)
    deploy(build(arch)).load_state_dict(deploy(build(arch)).state_dict(), strict=True)


def test_deploy_fuses_in_float64_and_rounds_once() -> None:
    """A float32 deploy model holds the float64 fusion rounded to float32 (not float32 arithmetic)."""
    torch.manual_seed(0)
    model = build(get_preset("xiaomimm").arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fused = deploy(model)
    reference = deploy(model.double()).float()
    model.float()
    assert all(p.dtype == torch.float32 for p in fused.parameters())
    for (name, a), (_, b) in zip(fused.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the training model is untouched
