"""`ArchConfig`: serialization round trip, a content hash that tracks every field, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.arch import ArchConfig
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

# One other valid value per field (each keeps the rest of BASE valid).
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
)


def test_base_and_variants_cover_every_field() -> None:
    names = {f.name for f in dataclasses.fields(ArchConfig)}
    assert set(BASE) == names
    assert set(VARIANTS) == names


def test_to_dict_is_the_plain_field_table() -> None:
    assert ArchConfig(**BASE).to_dict() == BASE


@pytest.mark.parametrize("name", list_presets())
def test_presets_round_trip_through_dict_and_json(name: str) -> None:
    arch = get_preset(name).arch
    data = json.loads(json.dumps(arch.to_dict()))
    again = ArchConfig.from_dict(data)
    assert again == arch
    assert again.arch_hash == arch.arch_hash


def test_hash_is_sha256_of_canonical_json() -> None:
    # Independent reference: the documented recipe applied to the hand-written table.
    expected = hashlib.sha256(json.dumps(BASE, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert ArchConfig(**BASE).arch_hash == expected
    assert len(expected) == 12


def test_hash_does_not_depend_on_key_order() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert ArchConfig.from_dict(reordered).arch_hash == ArchConfig(**BASE).arch_hash


@pytest.mark.parametrize("field", sorted(VARIANTS))
def test_hash_changes_with_every_field(field: str) -> None:
    base = ArchConfig(**BASE)
    changed = ArchConfig(**{**BASE, field: VARIANTS[field]})
    assert changed != base
    assert changed.arch_hash != base.arch_hash


def test_all_variant_hashes_distinct() -> None:
    hashes = {ArchConfig(**BASE).arch_hash}
    hashes |= {ArchConfig(**{**BASE, f: v}).arch_hash for f, v in VARIANTS.items()}
    assert len(hashes) == len(VARIANTS) + 1


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
    for name in BASE:
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
