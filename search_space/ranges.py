"""Searchable ranges of the template and the Optuna define-by-run sampler over them.

A study file's `[search]` table (any subset of the keys below; missing keys keep the defaults):

    down_factor     = [1, 2, 3, 4]                      # categorical; a bare value fixes it
    downsample      = ["unshuffle", "strided"]
    channels        = { low = 4, high = 64, step = 2 }  # integer range; a bare integer fixes it
    blocks          = { low = 0, high = 8 }             # step defaults to 1
    block           = ["conv", "rep", "ecb", ...]       # body block types (registry names)
    activation      = ["relu", "lrelu", "prelu", "gelu", "silu"]
    body_skip       = [false, true]
    reconstruction  = ["direct", "cascade"]
    tail_kernel     = [1, 3]
    global_residual = ["none", "nearest", "bilinear"]   # also "lanczos", "linear" (not in the default)
    bias            = [true, false]
    end_block       = ["conv"]

Keys are the `ArchConfig` field names and so are the Optuna parameter names. `suggest()` asks for
them in this order, and asks for a parameter only where it has an effect, so no sampled config is
ever invalid and Optuna's importance analysis sees no dead parameters:

- `downsample` and `reconstruction` only when down_factor >= 2 (else 'unshuffle' / 'direct');
- `block` and `body_skip` only when blocks >= 1 (else 'conv' / false);
- `tail_kernel` only for reconstruction 'direct' (cascade uses 3x3 convs);
- a setting with one choice (or low == high) is fixed, not asked: it is not an Optuna parameter.

Combinations that would leave some sampled path without a valid choice (e.g. only 'cascade' while
down_factor may be 1) are rejected by `SearchRanges` itself, before any trial runs.
`arch_to_params()` inverts `suggest()`: the Optuna params that reproduce an arch, for enqueueing
published presets as warm starts (`study.enqueue_trial(arch_to_params(preset.arch, ranges))`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search_space.arch import (
    DOWN_FACTORS,
    DOWNSAMPLES,
    GLOBAL_RESIDUALS,
    RECONSTRUCTIONS,
    TAIL_KERNELS,
    ArchConfig,
)
from search_space.blocks import ACTIVATIONS, get_block, list_blocks
from search_space.configio import reject_unknown_keys
from search_space.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = ["IntRange", "SearchRanges", "arch_to_params", "suggest"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class IntRange:
    """Integers low, low + step, ..., high (inclusive); `high - low` must be a multiple of `step`."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if not all(_is_int(v) for v in (self.low, self.high, self.step)):
            raise UserError(f"an integer range needs integer low/high/step, got {self.to_dict()}")
        if self.step < 1 or self.high < self.low or (self.high - self.low) % self.step:
            raise UserError(
                f"bad integer range {self.to_dict()}: need step >= 1, high >= low and high - low a multiple of step"
            )

    def __contains__(self, value: object) -> bool:
        return _is_int(value) and self.low <= value <= self.high and (value - self.low) % self.step == 0

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def to_dict(self) -> dict[str, int]:
        return {"low": self.low, "high": self.high, "step": self.step}


_INT_FIELDS = ("channels", "blocks")

# field -> (allowed values, or None for "registered block"; the Python type of a value)
_CATEGORICAL: dict[str, tuple[tuple[Any, ...] | None, type]] = {
    "down_factor": (DOWN_FACTORS, int),
    "downsample": (DOWNSAMPLES, str),
    "block": (None, str),
    "activation": (ACTIVATIONS, str),
    "body_skip": ((False, True), bool),
    "reconstruction": (RECONSTRUCTIONS, str),
    "tail_kernel": (TAIL_KERNELS, int),
    "global_residual": (GLOBAL_RESIDUALS, str),
    "bias": ((True, False), bool),
    "end_block": (None, str),
}


@dataclass(frozen=True, kw_only=True)
class SearchRanges:
    """The choices for each `ArchConfig` field (see the module docstring for the file format)."""

    down_factor: tuple[int, ...] = (1, 2, 3, 4)
    downsample: tuple[str, ...] = ("unshuffle", "strided")
    channels: IntRange = IntRange(4, 64, 2)
    blocks: IntRange = IntRange(0, 8)
    block: tuple[str, ...] = ("conv", "rep", "rep_expand", "rep_casr", "ecb", "dconv", "spab", "spab_noatt")
    activation: tuple[str, ...] = ("relu", "lrelu", "prelu", "gelu", "silu")
    body_skip: tuple[bool, ...] = (False, True)
    reconstruction: tuple[str, ...] = ("direct", "cascade")
    tail_kernel: tuple[int, ...] = (1, 3)
    global_residual: tuple[str, ...] = ("none", "nearest", "bilinear")
    bias: tuple[bool, ...] = (True, False)
    end_block: tuple[str, ...] = ("conv",)

    def __post_init__(self) -> None:
        for field in _INT_FIELDS:
            if not isinstance(getattr(self, field), IntRange):
                raise UserError(f"search range {field!r} must be an IntRange, got {getattr(self, field)!r}")
        if self.channels.low < 1:
            raise UserError(f"search range 'channels': low must be >= 1, got {self.channels.low}")
        if self.blocks.low < 0:
            raise UserError(f"search range 'blocks': low must be >= 0, got {self.blocks.low}")
        for field, (allowed, kind) in _CATEGORICAL.items():
            _check_choices(field, getattr(self, field), allowed, kind)
        self._check_feasible()

    def _check_feasible(self) -> None:
        if 1 in self.down_factor and "unshuffle" not in self.downsample:
            raise UserError(
                "search ranges: down_factor may be 1 but downsample allows only 'strided', which needs u >= 2; "
                "add 'unshuffle' to downsample or remove 1 from down_factor"
            )
        if 1 in self.down_factor and "direct" not in self.reconstruction:
            raise UserError(
                "search ranges: down_factor may be 1 but reconstruction allows only 'cascade', which needs u >= 2; "
                "add 'direct' to reconstruction or remove 1 from down_factor"
            )
        if self.blocks.low == 0 and False not in self.body_skip:
            raise UserError(
                "search ranges: blocks may be 0 but body_skip allows only true, which needs a body; "
                "add false to body_skip or raise blocks.low to 1"
            )
        for name in self.end_block:
            if not get_block(name).supports_channel_change:
                raise UserError(
                    f"search range 'end_block': {name!r} cannot change width (head/reconstruction convs do); remove it"
                )

    def to_dict(self) -> dict[str, Any]:
        """The ranges as a study-file table (lists and {low, high, step} tables)."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.to_dict() if isinstance(value, IntRange) else list(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchRanges:
        """Ranges from a study file's table; unknown keys and bad values raise `UserError`."""
        if not isinstance(data, Mapping):
            raise UserError(f"search ranges must be a table of settings, got {type(data).__name__}")
        reject_unknown_keys("[search]", data, (f.name for f in dataclasses.fields(cls)))
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kwargs[key] = _int_range(key, value) if key in _INT_FIELDS else _choice_tuple(key, value)
        return cls(**kwargs)


def _int_range(field: str, value: Any) -> IntRange:
    if _is_int(value):
        return IntRange(value, value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"low", "high", "step"})
        if unknown or "low" not in value or "high" not in value:
            raise UserError(
                f"search range {field!r}: write {{ low = ..., high = ..., step = ... }} (step optional) "
                f"or one integer; got {dict(value)!r}"
            )
        try:
            return IntRange(value["low"], value["high"], value.get("step", 1))
        except UserError as err:
            raise UserError(f"search range {field!r}: {err}") from None
    raise UserError(
        f"search range {field!r}: expected {{ low = ..., high = ..., step = ... }} or one integer, got {value!r}"
    )


def _choice_tuple(field: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _check_choices(field: str, choices: Any, allowed: tuple[Any, ...] | None, kind: type) -> None:
    if not isinstance(choices, tuple) or not choices:
        raise UserError(f"search range {field!r}: give at least one choice, got {choices!r}")
    if allowed is None:
        allowed = tuple(list_blocks())
    for value in choices:
        if type(value) is not kind or value not in allowed:
            raise UserError(
                f"search range {field!r}: {value!r} is not a valid choice; choose from {', '.join(map(repr, allowed))}"
            )
    if len(set(choices)) != len(choices):
        raise UserError(f"search range {field!r}: choices repeat, got {list(choices)!r}")


# -- the sampler ----------------------------------------------------------------------------------


def _walk(ranges: SearchRanges, get: Any) -> ArchConfig:
    """Decide every field in `suggest()`'s order; `get(name, choices_or_range)` gives the value of one
    that applies. Shared by `suggest` (asks Optuna) and `arch_to_params` (reads an arch)."""
    u = get("down_factor", ranges.down_factor)
    downsample = get("downsample", ranges.downsample) if u >= 2 else "unshuffle"
    channels = get("channels", ranges.channels)
    blocks = get("blocks", ranges.blocks)
    block = get("block", ranges.block) if blocks >= 1 else "conv"
    activation = get("activation", ranges.activation)
    body_skip = get("body_skip", ranges.body_skip) if blocks >= 1 else False
    reconstruction = get("reconstruction", ranges.reconstruction) if u >= 2 else "direct"
    tail_kernel = get("tail_kernel", ranges.tail_kernel) if reconstruction == "direct" else 3
    global_residual = get("global_residual", ranges.global_residual)
    bias = get("bias", ranges.bias)
    end_block = get("end_block", ranges.end_block)
    return ArchConfig(
        down_factor=u,
        downsample=downsample,
        channels=channels,
        blocks=blocks,
        block=block,
        activation=activation,
        body_skip=body_skip,
        reconstruction=reconstruction,
        tail_kernel=tail_kernel,
        global_residual=global_residual,
        bias=bias,
        end_block=end_block,
    )


def suggest(trial: optuna.trial.BaseTrial, ranges: SearchRanges) -> ArchConfig:
    """Sample an `ArchConfig` from `ranges` with Optuna's define-by-run API (conditional parameters)."""

    def get(name: str, space: tuple[Any, ...] | IntRange) -> Any:
        if isinstance(space, IntRange):
            return space.low if space.fixed else trial.suggest_int(name, space.low, space.high, step=space.step)
        return space[0] if len(space) == 1 else trial.suggest_categorical(name, list(space))

    return _walk(ranges, get)


def arch_to_params(arch: ArchConfig, ranges: SearchRanges) -> dict[str, Any]:
    """The Optuna params for which `suggest()` returns `arch`; `UserError` if `arch` is outside `ranges`."""
    params: dict[str, Any] = {}

    def get(name: str, space: tuple[Any, ...] | IntRange) -> Any:
        value = getattr(arch, name)
        if isinstance(space, IntRange):
            if value not in space:
                raise UserError(
                    f"arch {arch.summary()!r}: {name}={value} is outside the search range "
                    f"{space.low}..{space.high} step {space.step}"
                )
            if not space.fixed:
                params[name] = value
            return value
        if type(value) is not type(space[0]) or value not in space:
            raise UserError(
                f"arch {arch.summary()!r}: {name}={value!r} is not among the search choices {list(space)!r}"
            )
        if len(space) > 1:
            params[name] = value
        return value

    rebuilt = _walk(ranges, get)
    if rebuilt != arch:  # cannot happen for a valid ArchConfig; guards the two walks drifting apart
        raise RuntimeError(f"arch_to_params: {arch} is rebuilt as {rebuilt}")
    return params
