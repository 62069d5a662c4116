"""Searchable ranges of the template and the Optuna define-by-run sampler over them.

A study file's `[search]` table (any subset of the keys below; missing keys keep the defaults):

    down_factor     = [1, 2, 3, 4]                      # categorical; a bare value fixes it
    downsample      = ["unshuffle", "strided"]
    channels        = { low = 4, high = 64, step = 2 }  # integer range; a bare integer fixes it
    blocks          = { low = 0, high = 8 }             # step defaults to 1
    block           = ["conv", "rep", "ecb", ...]       # body block types (registry names)
    activation      = ["relu", "lrelu", "prelu", "gelu", "silu"]
    body_skip       = [false, true]
    reconstruction  = ["direct", "cascade"]            # also "shuffle" (RESR, USTC-Noah)
    tail_kernel     = [1, 3]
    global_residual = ["none", "nearest", "bilinear"]   # also "lanczos", "linear" (not in the default)
    bias            = [true, false]
    end_block       = ["conv"]
    # version 2 of the template (each defaults to one choice, version 1's network)
    input_norm      = ["none"]                          # also "signed", "mean255"
    head_activation = [true]                            # [true, false]: SPAN/RVSR/SAFMN++ heads are linear
    feature_taps    = ["last"]                          # also "all", "span" ("span" only with SPAB bodies)
    fusion_kernel   = [0]                               # 0 (none), 1, 3
    strided_head    = ["conv"]                          # also "dconv" (4x4 stride 2; asked at u = 2)
    lr_channels     = [8]                               # LR-size width of reconstruction "shuffle"
    residual_channels = [0]                             # ETDS dual stream: e.g. [0, 3]

Keys are the `ArchConfig` field names and, but for the three aliases below, the Optuna parameter
names. `suggest()` asks for them in this order (`residual_channels` right after down_factor), and asks for a parameter only where it has an effect, so no sampled config is
ever invalid and Optuna's importance analysis sees no dead parameters:

- `downsample` and `reconstruction` only when down_factor >= 2 (else 'unshuffle' / 'direct');
- `block` and `body_skip` only when blocks >= 1 (else 'conv' / false);
- `tail_kernel` only for reconstruction 'direct' (cascade uses 3x3 convs);
- `feature_taps` only when blocks >= 1 and body_skip is false; for a block without an inner tap
  (all but SPAB) 'span' is not a choice, so the parameter is then called `feature_taps_without_span`
  (one name per choice list: Optuna refuses a categorical whose choices change between trials);
  `strided_head` only for a strided u = 2 head; `lr_channels` only for reconstruction 'shuffle';
- `residual_channels` (ETDS's dual stream) right after down_factor, and only when it is 1; a dual
  stream then fixes its frame (direct 3x3 tail, no skip/taps/fusion/anchor/normalisation) and asks
  only channels, blocks, block, activation and bias, the last two as `dual_stream_block` /
  `dual_stream_activation` when the study's lists hold choices a dual stream cannot use (attention
  blocks; activations with act(v) != v on v >= 0);
- a setting with one choice (or low == high) is fixed, not asked: it is not an Optuna parameter.

Combinations that would leave some sampled path without a valid choice (e.g. only 'cascade' while
down_factor may be 1) are rejected by `SearchRanges` itself, before any trial runs.
`to_dict()` leaves out the version-2 keys at their defaults, so the study files written before them
keep their identity hashes (and their runs resume).
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
    FEATURE_TAPS,
    FUSION_KERNELS,
    GLOBAL_RESIDUALS,
    INPUT_NORMS,
    RECONSTRUCTIONS,
    STRIDED_HEADS,
    TAIL_KERNELS,
    V2_FIELDS,
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
    "input_norm": (INPUT_NORMS, str),
    "head_activation": ((True, False), bool),
    "feature_taps": (FEATURE_TAPS, str),
    "fusion_kernel": (FUSION_KERNELS, int),
    "strided_head": (STRIDED_HEADS, str),
    "lr_channels": (None, int),
    "residual_channels": (None, int),
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
    input_norm: tuple[str, ...] = ("none",)
    head_activation: tuple[bool, ...] = (True,)
    feature_taps: tuple[str, ...] = ("last",)
    fusion_kernel: tuple[int, ...] = (0,)
    strided_head: tuple[str, ...] = ("conv",)
    lr_channels: tuple[int, ...] = (8,)
    residual_channels: tuple[int, ...] = (0,)

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
        if any(v < 1 for v in self.lr_channels):
            raise UserError(f"search range 'lr_channels': every choice must be >= 1, got {list(self.lr_channels)!r}")
        if any(v < 0 or 0 < v < 3 for v in self.residual_channels):
            raise UserError(
                "search range 'residual_channels': 0 (one stream) or >= 3 (the residual stream carries RGB), "
                f"got {list(self.residual_channels)!r}"
            )
        if any(self.residual_channels) and 1 in self.down_factor:
            blocks_ok, acts_ok = _dual_stream_choices(self)
            if not acts_ok:
                raise UserError(
                    "search ranges: residual_channels allows a dual stream, which needs an activation with act(v) = v "
                    "on v >= 0; add relu, lrelu, prelu or none to activation, or set residual_channels = [0]"
                )
            if not blocks_ok and self.blocks.high >= 1:
                raise UserError(
                    "search ranges: residual_channels allows a dual stream, whose backbone kernels must fuse into one "
                    "conv; add conv, rep or ecb to block, or set residual_channels = [0]"
                )

    def to_dict(self) -> dict[str, Any]:
        """The ranges as a study-file table (lists and {low, high, step} tables)."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in V2_FIELDS and value == f.default:
                continue  # a version-1 study's table, and so its identity hash, stays as it was
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
    if allowed is None and kind is int:
        bad = [v for v in choices if type(v) is not int]
        if bad:
            raise UserError(f"search range {field!r}: choices must be integers, got {bad[0]!r}")
        allowed = tuple(choices)
    elif allowed is None:
        allowed = tuple(list_blocks())
    for value in choices:
        if type(value) is not kind or value not in allowed:
            raise UserError(
                f"search range {field!r}: {value!r} is not a valid choice; choose from {', '.join(map(repr, allowed))}"
            )
    if len(set(choices)) != len(choices):
        raise UserError(f"search range {field!r}: choices repeat, got {list(choices)!r}")


# -- the sampler ----------------------------------------------------------------------------------


#: The Optuna name of `feature_taps` when the block cannot give SPAN's inner tap ('span' left out).
_TAPS_WITHOUT_SPAN = "feature_taps_without_span"
#: The Optuna names of the dual stream's block and activation when the study's lists must be narrowed.
_DUAL_BLOCK = "dual_stream_block"
_DUAL_ACTIVATION = "dual_stream_activation"


def _walk(ranges: SearchRanges, get: Any) -> ArchConfig:
    """Decide every field in `suggest()`'s order; `get(field, choices_or_range, param=field)` gives
    the value of one that applies (`param`: its Optuna name). Shared by `suggest` (asks Optuna) and
    `arch_to_params` (reads an arch). The version-1 fields come in their old order, so studies that
    fix every version-2 field sample exactly as before."""
    u = get("down_factor", ranges.down_factor)
    residual_channels = get("residual_channels", ranges.residual_channels) if u == 1 else 0
    if residual_channels:
        return _walk_dual_stream(ranges, get, residual_channels)
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
    input_norm = get("input_norm", ranges.input_norm)
    head_activation = get("head_activation", ranges.head_activation)
    feature_taps = "last"
    if blocks >= 1 and not body_skip:
        if get_block(block).has_inner_tap:
            feature_taps = get("feature_taps", ranges.feature_taps)
        else:
            plain = tuple(t for t in ranges.feature_taps if t != "span") or ("last",)
            feature_taps = get("feature_taps", plain, param=_TAPS_WITHOUT_SPAN)
    fusion_kernel = get("fusion_kernel", ranges.fusion_kernel)
    strided = downsample == "strided" and u == 2
    strided_head = get("strided_head", ranges.strided_head) if strided else "conv"
    lr_channels = get("lr_channels", ranges.lr_channels) if reconstruction == "shuffle" else 0
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
        input_norm=input_norm,
        head_activation=head_activation,
        feature_taps=feature_taps,
        fusion_kernel=fusion_kernel,
        strided_head=strided_head,
        lr_channels=lr_channels,
    )


def _dual_stream_choices(ranges: SearchRanges) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The block and activation choices a dual stream can use: single-conv blocks, and activations
    with act(v) = v on v >= 0 (`ArchConfig`)."""
    from search_space.dual_stream import ANCHOR_SAFE_ACTIVATIONS  # noqa: PLC0415

    blocks = tuple(name for name in ranges.block if get_block(name).supports_channel_change)
    activations = tuple(name for name in ranges.activation if name in ANCHOR_SAFE_ACTIVATIONS)
    return blocks, activations


def _walk_dual_stream(ranges: SearchRanges, get: Any, residual_channels: int) -> ArchConfig:
    """The dual stream's own fields; its frame (u = 1, direct 3x3 tail, no skip/taps/anchor...) is fixed.

    Block and activation choices narrower than the study's get their own Optuna names, so that no
    categorical changes its choice list between trials."""
    blocks_ok, acts_ok = _dual_stream_choices(ranges)
    channels = get("channels", ranges.channels)
    blocks = get("blocks", ranges.blocks)
    block = "conv"
    if blocks >= 1:
        block = get("block", blocks_ok, param=None if blocks_ok == ranges.block else _DUAL_BLOCK)
    activation = get("activation", acts_ok, param=None if acts_ok == ranges.activation else _DUAL_ACTIVATION)
    bias = get("bias", ranges.bias)
    return ArchConfig(
        channels=channels,
        blocks=blocks,
        block=block,
        activation=activation,
        bias=bias,
        residual_channels=residual_channels,
    )


def suggest(trial: optuna.trial.BaseTrial, ranges: SearchRanges) -> ArchConfig:
    """Sample an `ArchConfig` from `ranges` with Optuna's define-by-run API (conditional parameters)."""

    def get(field: str, space: tuple[Any, ...] | IntRange, param: str | None = None) -> Any:
        name = param or field
        if isinstance(space, IntRange):
            return space.low if space.fixed else trial.suggest_int(name, space.low, space.high, step=space.step)
        return space[0] if len(space) == 1 else trial.suggest_categorical(name, list(space))

    return _walk(ranges, get)


def arch_to_params(arch: ArchConfig, ranges: SearchRanges) -> dict[str, Any]:
    """The Optuna params for which `suggest()` returns `arch`; `UserError` if `arch` is outside `ranges`."""
    params: dict[str, Any] = {}

    def get(field: str, space: tuple[Any, ...] | IntRange, param: str | None = None) -> Any:
        name = param or field
        value = getattr(arch, field)
        if isinstance(space, IntRange):
            if value not in space:
                raise UserError(
                    f"arch {arch.summary()!r}: {field}={value} is outside the search range "
                    f"{space.low}..{space.high} step {space.step}"
                )
            if not space.fixed:
                params[name] = value
            return value
        if type(value) is not type(space[0]) or value not in space:
            raise UserError(
                f"arch {arch.summary()!r}: {field}={value!r} is not among the search choices {list(space)!r}"
            )
        if len(space) > 1:
            params[name] = value
        return value

    rebuilt = _walk(ranges, get)
    if rebuilt != arch:  # cannot happen for a valid ArchConfig; guards the two walks drifting apart
        raise RuntimeError(f"arch_to_params: {arch} is rebuilt as {rebuilt}")
    return params
