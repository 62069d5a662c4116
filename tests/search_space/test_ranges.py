"""Search ranges: study-file parsing, conditional Optuna sampling, and the arch -> params inverse."""

from __future__ import annotations

import optuna
import pytest

from search_space.arch import ArchConfig
from search_space.blocks import get_block, list_blocks
from search_space.errors import UserError
from search_space.presets import get_preset, list_presets
from search_space.ranges import IntRange, SearchRanges, arch_to_params, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Wide enough to hold every preset (odd channel counts, ECB/RepBlockV5 end blocks, bias-free, ...).
WIDE = SearchRanges.from_dict(
    {
        "channels": {"low": 4, "high": 64},
        "blocks": {"low": 0, "high": 8},
        "activation": ["relu", "lrelu", "prelu", "gelu", "silu", "none"],
        "end_block": [n for n in list_blocks() if get_block(n).supports_channel_change],
        "block": list_blocks(),
        "reconstruction": ["direct", "cascade", "shuffle"],
        "input_norm": ["none", "signed", "mean255"],
        "head_activation": [True, False],
        "feature_taps": ["last", "all", "span"],
        "fusion_kernel": [0, 1, 3],
        "strided_head": ["conv", "dconv"],
        "lr_channels": [8, 16],
        "residual_channels": [0, 3],
    }
)


def test_defaults_and_empty_table() -> None:
    assert SearchRanges.from_dict({}) == SearchRanges()
    assert SearchRanges().channels == IntRange(4, 64, 2)


def test_to_dict_round_trip() -> None:
    data = WIDE.to_dict()
    assert data["channels"] == {"low": 4, "high": 64, "step": 1}
    assert SearchRanges.from_dict(data) == WIDE


def test_scalars_fix_a_setting() -> None:
    ranges = SearchRanges.from_dict({"bias": False, "channels": 16, "down_factor": 2})
    assert ranges.bias == (False,)
    assert ranges.channels == IntRange(16, 16)
    assert ranges.down_factor == (2,)


BAD_TABLES = [
    ({"chanels": {"low": 4, "high": 8}}, "chanels"),
    ({"channels": {"low": 0, "high": 8}}, "channels"),
    ({"channels": {"low": 4, "high": 9, "step": 2}}, "channels"),
    ({"channels": {"low": 8, "high": 4}}, "channels"),
    ({"channels": {"low": 4}}, "channels"),
    ({"channels": {"low": 4, "high": 8, "stride": 2}}, "channels"),
    ({"channels": "wide"}, "channels"),
    ({"channels": [8, 16]}, "channels"),
    ({"blocks": {"low": -1, "high": 2}}, "blocks"),
    ({"down_factor": [1, 5]}, "down_factor"),
    ({"down_factor": [1.0, 2.0]}, "down_factor"),
    ({"block": ["conv", "resnet"]}, "block"),
    ({"end_block": ["conv", "spab"]}, "end_block"),
    ({"body_skip": [0, 1]}, "body_skip"),
    ({"activation": []}, "activation"),
    ({"activation": ["relu", "relu"]}, "activation"),
    ({"tail_kernel": [1, 5]}, "tail_kernel"),
    ({"global_residual": ["bicubic"]}, "global_residual"),
]


@pytest.mark.parametrize(("table", "field"), BAD_TABLES)
def test_bad_table_names_the_key(table: dict, field: str) -> None:
    with pytest.raises(UserError, match=field):
        SearchRanges.from_dict(table)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(UserError) as info:
        SearchRanges.from_dict({"width": [8]})
    for key in ("down_factor", "channels", "blocks", "block", "end_block", "tail_kernel"):
        assert key in str(info.value)


INFEASIBLE = [
    {"downsample": ["strided"]},  # u may be 1
    {"reconstruction": "cascade"},  # u may be 1
    {"body_skip": [True]},  # blocks may be 0
]


@pytest.mark.parametrize("table", INFEASIBLE)
def test_infeasible_combinations_are_rejected_up_front(table: dict) -> None:
    with pytest.raises(UserError):
        SearchRanges.from_dict(table)


def test_the_same_combinations_are_fine_once_feasible() -> None:
    SearchRanges.from_dict({"downsample": ["strided"], "down_factor": [2, 4]})
    SearchRanges.from_dict({"reconstruction": "cascade", "down_factor": [2, 3]})
    SearchRanges.from_dict({"body_skip": [True], "blocks": {"low": 1, "high": 3}})


def test_sampled_configs_are_valid_and_parameters_conditional() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ranges = SearchRanges()
    seen: dict[str, set] = {}
    for _ in range(300):
        trial = study.ask()
        arch = suggest(trial, ranges)  # constructing the ArchConfig validated it
        params = trial.params
        for key, value in params.items():
            seen.setdefault(key, set()).add(value)
            assert getattr(arch, key) == value
        assert ("downsample" in params) == ("reconstruction" in params) == (arch.down_factor >= 2)
        assert ("block" in params) == ("body_skip" in params) == (arch.blocks >= 1)
        assert ("tail_kernel" in params) == (arch.reconstruction == "direct")
        assert "end_block" not in params  # one choice by default: fixed, not a parameter
        assert arch.end_block == "conv"
        assert arch.channels % 2 == 0 and 4 <= arch.channels <= 64
        study.tell(trial, 0.0)
    # Every choice of every categorical is reachable.
    assert seen["down_factor"] == {1, 2, 3, 4}
    assert seen["downsample"] == {"unshuffle", "strided"}
    assert seen["reconstruction"] == {"direct", "cascade"}
    assert seen["block"] == set(ranges.block)
    assert seen["global_residual"] == {"none", "nearest", "bilinear"}


@pytest.mark.parametrize("name", list_presets())
def test_presets_round_trip_through_fixed_trial(name: str) -> None:
    arch = get_preset(name).arch
    params = arch_to_params(arch, WIDE)
    trial = optuna.trial.FixedTrial(params)
    assert suggest(trial, WIDE) == arch
    assert trial.params == params  # suggest asked for exactly these parameters


def test_enqueued_preset_is_reproduced_by_a_study() -> None:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for name in ("casr", "anunet", "pixelartai"):
        study.enqueue_trial(arch_to_params(get_preset(name).arch, WIDE))
    for name in ("casr", "anunet", "pixelartai"):
        trial = study.ask()
        assert suggest(trial, WIDE) == get_preset(name).arch
        study.tell(trial, 1.0)


def test_conditional_parameters_left_out_of_params() -> None:
    arch = ArchConfig(channels=8, blocks=0, down_factor=1)
    params = arch_to_params(arch, WIDE)
    assert set(params) == {
        "down_factor",
        "channels",
        "blocks",
        "activation",
        "tail_kernel",
        "global_residual",
        "bias",
        "end_block",
        "input_norm",
        "head_activation",
        "fusion_kernel",
        "residual_channels",  # u = 1, plain frame, ReLU: the dual stream is a choice
    }
    cascade = ArchConfig(channels=8, blocks=1, down_factor=2, reconstruction="cascade")
    assert "tail_kernel" not in arch_to_params(cascade, WIDE)
    assert "residual_channels" not in arch_to_params(cascade, WIDE)  # u = 2: not the dual stream's frame
    assert "lr_channels" not in arch_to_params(cascade, WIDE) and "strided_head" not in arch_to_params(cascade, WIDE)


def test_default_ranges_ask_only_the_version_1_parameters() -> None:
    """A study that leaves the version-2 keys out samples exactly as before: no new Optuna parameter
    is ever asked, so a seeded sampler draws the same sequence."""
    v1 = {"down_factor", "downsample", "channels", "blocks", "block", "activation", "body_skip", "reconstruction",
          "tail_kernel", "global_residual", "bias", "end_block"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(200):
        trial = study.ask()
        arch = suggest(trial, SearchRanges())
        assert set(trial.params) <= v1
        assert arch.arch_hash == ArchConfig.from_dict({k: v for k, v in arch.to_dict().items() if k in v1}).arch_hash
        study.tell(trial, 0.0)


def test_version_2_keys_at_their_defaults_leave_the_table_as_before() -> None:
    assert SearchRanges().to_dict().keys() == {
        "down_factor", "downsample", "channels", "blocks", "block", "activation", "body_skip", "reconstruction",
        "tail_kernel", "global_residual", "bias", "end_block",
    }
    assert "feature_taps" in SearchRanges(feature_taps=("last", "all")).to_dict()


def test_wide_ranges_reach_every_version_2_choice_with_static_distributions() -> None:
    # One Optuna study over the wide space: every sampled config is valid, no categorical changes its
    # choices between trials (Optuna would raise), and every version-2 choice is reached.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {}
    for _ in range(1500):
        trial = study.ask()
        arch = suggest(trial, WIDE)
        for field in ("input_norm", "head_activation", "feature_taps", "fusion_kernel", "strided_head",
                      "lr_channels", "residual_channels", "reconstruction"):
            seen.setdefault(field, set()).add(getattr(arch, field))
        if "feature_taps_without_span" in trial.params:
            assert not get_block(arch.block).has_inner_tap and arch.feature_taps != "span"
        if "feature_taps" in trial.params:
            assert get_block(arch.block).has_inner_tap
        assert arch_to_params(arch, WIDE) == trial.params
        study.tell(trial, 0.0)
    assert seen["feature_taps"] == {"last", "all", "span"}
    assert seen["residual_channels"] == {0, 3} and seen["strided_head"] == {"conv", "dconv"}
    assert seen["lr_channels"] == {0, 8, 16} and seen["reconstruction"] == {"direct", "cascade", "shuffle"}
    assert seen["input_norm"] == {"none", "signed", "mean255"} and seen["fusion_kernel"] == {0, 1, 3}
    assert seen["head_activation"] == {True, False}


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"lr_channels": [0, 8]}, "lr_channels"),
        ({"residual_channels": [0, 2]}, "residual_channels"),
        ({"fusion_kernel": [2]}, "fusion_kernel"),
        ({"residual_channels": ["3"]}, "residual_channels"),
        ({"feature_taps": ["dense"]}, "feature_taps"),
    ],
)
def test_bad_version_2_ranges_name_the_key(table: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        SearchRanges.from_dict(table)


@pytest.mark.parametrize(
    ("arch", "field"),
    [
        (ArchConfig(channels=66, blocks=1), "channels"),
        (ArchConfig(channels=9, blocks=1), "channels"),  # off the step-2 grid of the defaults
        (ArchConfig(channels=8, blocks=9), "blocks"),
        (ArchConfig(channels=8, blocks=1, end_block="ecb"), "end_block"),
        (ArchConfig(channels=8, blocks=1, activation="none"), "activation"),
    ],
)
def test_arch_outside_ranges_is_a_user_error(arch: ArchConfig, field: str) -> None:
    with pytest.raises(UserError, match=rf"\b{field}="):
        arch_to_params(arch, SearchRanges())


def test_fixed_setting_must_match() -> None:
    ranges = SearchRanges.from_dict({"bias": False})
    assert "bias" not in arch_to_params(ArchConfig(channels=8, blocks=1, bias=False), ranges)
    with pytest.raises(UserError, match="bias="):
        arch_to_params(ArchConfig(channels=8, blocks=1, bias=True), ranges)


def test_anchors_are_accepted_sampled_and_inverted() -> None:
    """`[search] global_residual` takes the interpolation anchors; suggest() reaches each one."""
    anchors = ["none", "nearest", "bilinear", "lanczos", "linear"]
    ranges = SearchRanges.from_dict({"global_residual": anchors})
    assert ranges.global_residual == tuple(anchors)
    assert SearchRanges.from_dict(ranges.to_dict()) == ranges
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        arch = suggest(trial, ranges)
        seen.add(arch.global_residual)
        study.tell(trial, 0.0)
    assert seen == set(anchors)
    for mode in ("lanczos", "linear"):
        arch = ArchConfig(channels=8, blocks=1, global_residual=mode)
        params = arch_to_params(arch, ranges)
        assert params["global_residual"] == mode
        assert suggest(optuna.trial.FixedTrial(params), ranges) == arch
    fixed = SearchRanges.from_dict({"global_residual": "lanczos"})  # a bare value fixes it
    params = arch_to_params(ArchConfig(channels=8, blocks=1, global_residual="lanczos"), fixed)
    assert "global_residual" not in params
    assert suggest(optuna.trial.FixedTrial(params), fixed).global_residual == "lanczos"
    with pytest.raises(UserError, match="global_residual"):
        SearchRanges.from_dict({"global_residual": ["lanczos3"]})
