"""`ArchConfig`: serialization round trip, a content hash that tracks every field, clear errors,
and the version-1 -> 2 migration (old dicts load, old networks keep their hashes)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.arch import ARCH_VERSION, ArchConfig, migrate_arch_dict
from search_space.errors import UserError
from search_space.presets import get_preset, list_presets

# Valid in every field, with blocks >= 1 and u >= 2 so that no field is irrelevant.
BASE = dict(
    channels=24,
    blocks=2,
    block="rep",
    activation="gelu",
    downsample="unshuffle",
    down_factor=2,
    body_skip=False,
    reconstruction="direct",
    tail_kernel=3,
    global_residual="none",
    bias=True,
    end_block="conv",
)
# The fields version 2 added, at their defaults (version 1's network).
V2_DEFAULTS = dict(
    input_norm="none",
    head_activation=True,
    feature_taps="last",
    fusion_kernel=0,
    residual_channels=0,
    strided_head="conv",
    lr_channels=0,
)
BASE_V2 = {**BASE, **V2_DEFAULTS}

# One other valid value per field (each keeps the rest of BASE valid, with CONTEXT's changes where
# a field only has an effect in some frames).
VARIANTS = dict(
    channels=25,
    blocks=3,
    block="ecb",
    activation="relu",
    downsample="strided",
    down_factor=3,
    body_skip=True,
    reconstruction="cascade",
    tail_kernel=1,
    global_residual="bilinear",
    bias=False,
    end_block="ecb",
    input_norm="signed",
    head_activation=False,
    feature_taps="all",
    fusion_kernel=3,
    residual_channels=4,
    strided_head="dconv",
    lr_channels=4,
)
CONTEXT: dict[str, dict] = {
    "lr_channels": dict(reconstruction="shuffle", lr_channels=2),
    "residual_channels": dict(down_factor=1, block="ecb", activation="relu"),
    "strided_head": dict(downsample="strided"),
}


def _pair(field: str) -> tuple[ArchConfig, ArchConfig]:
    base = {**BASE_V2, **CONTEXT.get(field, {})}
    return ArchConfig(**base), ArchConfig(**{**base, field: VARIANTS[field]})


def test_base_and_variants_cover_every_field() -> None:
    names = {f.name for f in dataclasses.fields(ArchConfig)}
    assert set(BASE_V2) == names
    assert set(VARIANTS) == names


def test_to_dict_is_the_plain_field_table_with_the_version() -> None:
    assert ArchConfig(**BASE).to_dict() == {"version": ARCH_VERSION, **BASE_V2}
    assert ARCH_VERSION == 2


# Hashes that version 1 of ArchConfig (commit c2449c2) gave the presets: recorded from that code, not
# computed by this one. Latency caches, exports and run directories were written with them.
V1_PRESET_HASHES = {
    "anunet": "890e0924116d",
    "basicvision": "a7f19bb7540f",
    "c3": "d574741ba2ea",
    "casr": "b6126c535317",
    "cmvg": "7ca4e6814a0d",
    "ivp": "0e4112c807e5",
    "lanczospp": "b30994d12565",
    "pixelartai": "19d04ec29d1a",
    "reptcn": "93ccecb56ff0",
    "urpnet": "b6dc78ddd47d",
}


@pytest.mark.parametrize("name", sorted(V1_PRESET_HASHES))
def test_version_1_networks_keep_their_hashes(name: str) -> None:
    assert get_preset(name).arch.arch_hash == V1_PRESET_HASHES[name]


def test_version_1_dict_migrates_to_the_same_network() -> None:
    # A version-1 record: no "version" key, none of the version-2 fields (as run.json and trial
    # attributes written before version 2 hold them).
    v1 = dict(BASE)
    assert "version" not in v1
    arch = ArchConfig.from_dict(v1)
    assert arch == ArchConfig(**BASE_V2)
    assert arch.arch_hash == ArchConfig.from_dict({**BASE_V2, "version": 2}).arch_hash
    assert migrate_arch_dict({**v1, "version": 1}) == v1
    # Written back, it carries the current version and every field.
    assert ArchConfig.from_dict(arch.to_dict()) == arch and arch.to_dict()["version"] == 2


def test_committed_version_1_artefacts_load_with_their_hashes() -> None:
    """The calibration result committed before version 2 (benchmarks/results/calibrate_cpu_builtin) stores 20
    version-1 arch tables with the hashes version 1 gave them, and their MACs: each loads to the same
    hash and, rebuilt, costs the same."""
    from search_space.cost import cost

    root = Path(__file__).resolve().parents[2]
    panel = json.loads((root / "benchmarks/results/calibrate_cpu_builtin/calibration.json").read_text())["panel"]
    assert len(panel) == 20
    for entry in panel:
        assert "version" not in entry["arch"]
        arch = ArchConfig.from_dict(entry["arch"])
        assert arch.arch_hash == entry["arch_hash"], entry["name"]
        assert cost(arch).macs == entry["macs"] and cost(arch).params == entry["params"], entry["name"]


def test_a_newer_version_is_refused_with_the_fix() -> None:
    with pytest.raises(UserError, match=r"newer rtsr-nas.*version 3.*upgrade"):
        ArchConfig.from_dict({**BASE_V2, "version": 3})
    with pytest.raises(UserError, match="version must be an integer"):
        ArchConfig.from_dict({**BASE_V2, "version": "2"})


def test_version_2_fields_enter_the_hash_only_away_from_their_defaults() -> None:
    plain = ArchConfig(**BASE).arch_hash
    for field in V2_DEFAULTS:
        base, changed = _pair(field)
        assert changed.arch_hash != base.arch_hash, field
    assert ArchConfig(**{**BASE, "input_norm": "none"}).arch_hash == plain


@pytest.mark.parametrize("name", list_presets())
def test_presets_round_trip_through_dict_and_json(name: str) -> None:
    arch = get_preset(name).arch
    data = json.loads(json.dumps(arch.to_dict()))
    again = ArchConfig.from_dict(data)
    assert again == arch
    assert again.arch_hash == arch.arch_hash


def test_hash_is_sha256_of_canonical_json() -> None:
    # Independent reference: the documented recipe applied to the hand-written table (the version-2
    # fields at their defaults are left out).
    expected = hashlib.sha256(json.dumps(BASE, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert ArchConfig(**BASE).arch_hash == expected
    assert len(expected) == 12
    changed = {**BASE, "input_norm": "signed"}
    expected = hashlib.sha256(json.dumps(changed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert ArchConfig(**changed).arch_hash == expected


def test_hash_does_not_depend_on_key_order() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert ArchConfig.from_dict(reordered).arch_hash == ArchConfig(**BASE).arch_hash


@pytest.mark.parametrize("field", sorted(VARIANTS))
def test_hash_changes_with_every_field(field: str) -> None:
    base, changed = _pair(field)
    assert changed != base
    assert changed.arch_hash != base.arch_hash


def test_all_variant_hashes_distinct() -> None:
    archs = {a for f in VARIANTS for a in _pair(f)}
    assert len(archs) >= len(VARIANTS) + 1
    assert len({a.arch_hash for a in archs}) == len(archs)


BAD_VALUES = [
    ("channels", 0),
    ("channels", "32"),
    ("channels", 32.0),
    ("channels", True),
    ("blocks", -1),
    ("blocks", 1.5),
    ("block", "nope"),
    ("block", 3),
    ("activation", "tanh"),
    ("downsample", "maxpool"),
    ("down_factor", 5),
    ("down_factor", 2.0),
    ("down_factor", True),
    ("body_skip", 1),
    ("body_skip", "yes"),
    ("reconstruction", "progressive"),
    ("tail_kernel", 5),
    ("tail_kernel", 3.0),
    ("global_residual", "bicubic"),
    ("bias", 0),
    ("end_block", "nope"),
    ("end_block", "spab"),  # SPAB cannot change width; the head/tail convs do
    ("input_norm", "zscore"),
    ("head_activation", 0),
    ("feature_taps", "dense"),
    ("fusion_kernel", 2),
    ("fusion_kernel", True),
    ("residual_channels", -1),
    ("residual_channels", 2.0),
    ("strided_head", "pool"),
    ("lr_channels", -2),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_bad_value_names_the_field(field: str, value: object) -> None:
    with pytest.raises(UserError, match=rf"ArchConfig\.{field}\b"):
        ArchConfig(**{**BASE, field: value})


BAD_COMBINATIONS = [
    ("downsample", dict(downsample="strided", down_factor=1, reconstruction="direct")),
    ("reconstruction", dict(reconstruction="cascade", down_factor=1)),
    ("tail_kernel", dict(reconstruction="cascade", tail_kernel=1)),
    ("body_skip", dict(blocks=0, block="conv", body_skip=True)),
    ("block", dict(blocks=0, block="ecb")),
    ("strided_head", dict(strided_head="dconv")),  # BASE's head is the unshuffle head
    ("strided_head", dict(strided_head="dconv", downsample="strided", down_factor=3)),
    ("reconstruction", dict(reconstruction="shuffle", lr_channels=4, down_factor=1)),
    ("lr_channels", dict(reconstruction="shuffle")),  # shuffle needs its LR-size width
    ("lr_channels", dict(lr_channels=4)),  # ... and only shuffle has one
    ("feature_taps", dict(feature_taps="all", blocks=0, block="conv")),
    ("body_skip", dict(feature_taps="all", body_skip=True)),
    ("feature_taps", dict(feature_taps="span")),  # rep has no inner tap; spab has
    ("down_factor", dict(residual_channels=4)),  # the dual stream runs at full resolution
    ("global_residual", dict(residual_channels=4, down_factor=1, global_residual="nearest")),
    ("activation", dict(residual_channels=4, down_factor=1, activation="gelu")),  # GELU(v) != v on v >= 0
    ("residual_channels", dict(residual_channels=2, down_factor=1, activation="relu")),  # RGB needs 3
]


@pytest.mark.parametrize(("field", "changes"), BAD_COMBINATIONS)
def test_contradictory_settings_name_the_field(field: str, changes: dict) -> None:
    with pytest.raises(UserError, match=rf"ArchConfig\.{field}\b"):
        ArchConfig(**{**BASE, **changes})


def test_from_dict_rejects_unknown_keys_listing_valid_ones() -> None:
    with pytest.raises(UserError) as info:
        ArchConfig.from_dict({**BASE, "chanels": 3})
    message = str(info.value)
    assert "'chanels'" in message
    for name in BASE_V2:
        assert name in message


def test_from_dict_names_missing_required_key() -> None:
    data = dict(BASE)
    del data["channels"]
    with pytest.raises(UserError, match="'channels'"):
        ArchConfig.from_dict(data)


def test_from_dict_fills_defaults() -> None:
    arch = ArchConfig.from_dict({"channels": 16, "blocks": 1})
    assert arch == ArchConfig(channels=16, blocks=1)
    assert (arch.down_factor, arch.downsample, arch.reconstruction, arch.tail_kernel) == (1, "unshuffle", "direct", 3)
    assert (arch.global_residual, arch.bias, arch.block, arch.end_block) == ("none", True, "conv", "conv")


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(UserError, match="table"):
        ArchConfig.from_dict([("channels", 16)])  # type: ignore[arg-type]


def test_is_frozen_and_keyword_only() -> None:
    arch = ArchConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.channels = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ArchConfig(16, 1)  # type: ignore[misc]


def test_summary_mentions_the_structure() -> None:
    text = get_preset("anunet").arch.summary()
    for token in ("unshuffle2", "C28", "3xconv", "gelu", "direct-k3", "+nearest", "end=ecb"):
        assert token in text
    text = get_preset("casr").arch.summary()
    for token in ("unshuffle3", "C32", "1xrep_casr", "cascade", "nobias", "end=rep_casr"):
        assert token in text
    assert "\n" not in text


def test_package_imports_with_torch_alone() -> None:
    # GPU machines may lack the heavy optional packages: importing search_space must not pull them in.
    code = (
        "import sys, search_space\n"
        "heavy = {'thop', 'optuna', 'ray', 'pandas', 'plotly'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
