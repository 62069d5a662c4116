"""`ArchConfig`: one point of the search space, i.e. one instance of the network template.

The template (DESIGN.md, "The network template"):

    x (LR RGB, 1x3xHxW, H and W divisible by u)
     -> `input_norm` (learned path only): none | signed (2x - 1, RVSR) | mean255 ((x - mean) * 255, SPAN)
     -> downsample: pixel-unshuffle(u) | strided conv(u) (`strided_head`: conv, or dconv = USTC-Noah's
        4x4/stride-2 decoupled conv)
     -> head: 3*u^2 -> C (3x3, training form = `end_block`), or the strided conv itself, then
        `activation` if `head_activation`
     -> `blocks` x `block` (C -> C, `activation`), plus the head output if `body_skip`
     -> `feature_taps`: last (the body output) | all (Concat(O0, O1, ..., On)) | span (SPAN's
        Concat(O0, conv3x3(On), O1, inner(On)), inner = the last block's first conv output, activated)
     -> `fusion_kernel` 1 or 3: a conv from the (concatenated) features to C, no activation (SPAN's
        1x1 conv_cat; RVSR's 3x3 RepConv after the body skip); 0: none, the features go straight on
     -> reconstruction:
          direct : conv C -> 3*(4u)^2 (kernel `tail_kernel`) -> pixel-shuffle(4u)
          cascade: conv C -> 3*u^2 -> pixel-shuffle(u) -> + x -> conv 3 -> 48 -> pixel-shuffle(4)
          shuffle: conv C -> u^2 * L -> pixel-shuffle(u) (L = `lr_channels` at LR size) -> conv L -> 48
                   -> pixel-shuffle(4)  (RESR, USTC-Noah: a half-resolution body, one conv at LR size)
     -> + an x4 upsample of x if `global_residual` is not "none" (the anchor): nearest | bilinear
          | lanczos (fixed Lanczos-3, separable conv + shuffle) | linear (learnable 7x7 conv + shuffle,
          initialised to Lanczos-3) | fitted3 / fitted5 / fitted7 (the least-squares KxK filter of the
          run's training split, pooled over its QPs, frozen: `search_space.network.FittedAnchor`);
          with an anchor the last learned layer starts at zero, so the network's output at step 0 is
          exactly the anchor's
    `bias` switches every bias of every conv on or off.
    `residual_channels` > 0 replaces head, body and reconstruction by ETDS's dual-stream network
    (`search_space.dual_stream`): a backbone stream of C channels (kernels in the training form of
    `block`) and a residual stream of `residual_channels` channels, merged into plain convs at deploy.

`end_block` is the block type used for the *training form* of the 3x3 convs that change width
(the unshuffle head and the 3x3 reconstruction convs). It exists because published designs train
those convs differently from the body: ANUNet trains them as ECBs around a plain-conv body, CASR
trains every conv as a RepBlockV5. After `deploy()` they are plain convs either way, so `end_block`
changes training, never MACs or params. A 1x1 tail and the strided head are always plain convs
(every block is a 3x3, stride-1 conv), except the `dconv` strided head.

Each network has exactly one valid config: settings that would have no effect or that contradict
each other are rejected with a `UserError` rather than silently ignored, so equal networks hash
equal (the hash keys latency caches and exports):

- `downsample="strided"` needs `down_factor >= 2` (a stride-1 head is the unshuffle u=1 head);
  `strided_head="dconv"` needs `downsample="strided"` and `down_factor=2` (a 4x4 stride-2 window);
- `reconstruction="cascade"` or `"shuffle"` needs `down_factor >= 2` (with u=1 the "cascade" is only a
  3-channel bottleneck at full resolution) and keeps `tail_kernel=3` (it has no 1x1 variant);
  `lr_channels` >= 1 goes with `"shuffle"` and only with it;
- `body_skip=True` needs `blocks >= 1`, and `blocks=0` keeps `block="conv"`;
- `feature_taps` other than "last" needs `blocks >= 1` and no `body_skip` (the head output is
  already a tap); "span" needs a block with an inner tap (SPAB);
- `end_block` must be able to change width (`Block.supports_channel_change`); SPAB cannot, and is
  fine in the body, which is always C -> C;
- `residual_channels` > 0 (dual stream) needs the plain full-resolution frame: unshuffle u=1,
  direct 3x3 reconstruction, no body skip, taps, anchor, input normalisation or strided head.

Versions: version 1 had the first 12 fields; version 2 (this one) added `input_norm`,
`head_activation`, `feature_taps`, `fusion_kernel`, `residual_channels`, `strided_head`,
`lr_channels` and the "shuffle" reconstruction, each with a default that is version 1's behaviour. `to_dict()` writes
`version`; `from_dict()` migrates older dicts (no `version` key means 1) and refuses newer ones.
`arch_hash` leaves out the version and every version-2 field at its default, so a version-1
network keeps the hash its run directories, latency caches and exports were written with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_space.blocks import ACTIVATIONS, get_block, list_blocks
from search_space.configio import content_hash, reject_unknown_keys
from search_space.errors import UserError

__all__ = [
    "ARCH_VERSION",
    "DOWNSAMPLES",
    "DOWN_FACTORS",
    "FEATURE_TAPS",
    "FITTED_ANCHORS",
    "FUSION_KERNELS",
    "GLOBAL_RESIDUALS",
    "INPUT_NORMS",
    "RECONSTRUCTIONS",
    "SCALE",
    "STRIDED_HEADS",
    "TAIL_KERNELS",
    "V2_FIELDS",
    "ArchConfig",
    "migrate_arch_dict",
]

#: The super-resolution factor of every network in this project (540p -> 4K).
SCALE = 4
DOWNSAMPLES: tuple[str, ...] = ("unshuffle", "strided")
DOWN_FACTORS: tuple[int, ...] = (1, 2, 3, 4)
RECONSTRUCTIONS: tuple[str, ...] = ("direct", "cascade", "shuffle")
TAIL_KERNELS: tuple[int, ...] = (1, 3)
#: Global residual ("anchor"): an x4 interpolation of x added to the output; see search_space.network.
#: The `fitted` anchors and their kernel sides: the data's own least-squares filter, frozen (issue 20).
FITTED_ANCHORS: dict[str, int] = {"fitted3": 3, "fitted5": 5, "fitted7": 7}
GLOBAL_RESIDUALS: tuple[str, ...] = ("none", "nearest", "bilinear", "lanczos", "linear", *FITTED_ANCHORS)
#: Input normalisation of the learned path: RVSR feeds [-1, 1] ("signed"), SPAN (x - mean) * 255.
INPUT_NORMS: tuple[str, ...] = ("none", "signed", "mean255")
#: Which features reach the reconstruction (see the module docstring).
FEATURE_TAPS: tuple[str, ...] = ("last", "all", "span")
FUSION_KERNELS: tuple[int, ...] = (0, 1, 3)
STRIDED_HEADS: tuple[str, ...] = ("conv", "dconv")

#: The schema version `to_dict()` writes; `from_dict()` migrates every older one.
ARCH_VERSION = 2
#: Fields added by version 2, with the default that reproduces version 1. Left out of `arch_hash`
#: at that default, so version-1 networks keep their hashes.
_V2_DEFAULTS: dict[str, Any] = {
    "input_norm": "none",
    "head_activation": True,
    "feature_taps": "last",
    "fusion_kernel": 0,
    "residual_channels": 0,
    "strided_head": "conv",
    "lr_channels": 0,
}
#: The fields version 2 added (search ranges leave them out of a study's identity at their defaults).
V2_FIELDS: tuple[str, ...] = tuple(_V2_DEFAULTS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(values: tuple[object, ...]) -> str:
    return ", ".join(repr(v) for v in values)


@dataclass(frozen=True, kw_only=True)
class ArchConfig:
    """One network of the template; validated on construction (see the module docstring)."""

    channels: int
    blocks: int
    block: str = "conv"
    activation: str = "relu"
    downsample: str = "unshuffle"
    down_factor: int = 1
    body_skip: bool = False
    reconstruction: str = "direct"
    tail_kernel: int = 3
    global_residual: str = "none"
    bias: bool = True
    end_block: str = "conv"
    # -- version 2 (defaults = version 1's network) --
    input_norm: str = "none"
    head_activation: bool = True
    feature_taps: str = "last"
    fusion_kernel: int = 0
    residual_channels: int = 0
    strided_head: str = "conv"
    lr_channels: int = 0

    def __post_init__(self) -> None:
        self._check_types_and_values()
        self._check_combinations()

    # -- validation -------------------------------------------------------------------------------

    def _fail(self, field: str, problem: str) -> UserError:
        return UserError(f"ArchConfig.{field}: {problem}")

    def _check_types_and_values(self) -> None:
        if not _is_int(self.channels) or self.channels < 1:
            raise self._fail("channels", f"must be an integer >= 1, got {self.channels!r}")
        if not _is_int(self.blocks) or self.blocks < 0:
            raise self._fail("blocks", f"must be an integer >= 0, got {self.blocks!r}")
        if not _is_int(self.lr_channels) or self.lr_channels < 0:
            raise self._fail("lr_channels", f"must be an integer >= 0 (0: no 'shuffle' reconstruction), got {self.lr_channels!r}")
        if not _is_int(self.residual_channels) or self.residual_channels < 0:
            raise self._fail("residual_channels", f"must be an integer >= 0 (0: one stream), got {self.residual_channels!r}")
        for field, allowed in (
            ("downsample", DOWNSAMPLES),
            ("down_factor", DOWN_FACTORS),
            ("activation", ACTIVATIONS),
            ("reconstruction", RECONSTRUCTIONS),
            ("tail_kernel", TAIL_KERNELS),
            ("global_residual", GLOBAL_RESIDUALS),
            ("input_norm", INPUT_NORMS),
            ("feature_taps", FEATURE_TAPS),
            ("fusion_kernel", FUSION_KERNELS),
            ("strided_head", STRIDED_HEADS),
        ):
            value = getattr(self, field)
            # Exact types: `True in (1, 3)` and `2.0 in (1, 2)` are both true in Python.
            if type(value) is not type(allowed[0]) or value not in allowed:
                raise self._fail(field, f"got {value!r}; choose one of {_choices(allowed)}")
        for field in ("body_skip", "bias", "head_activation"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise self._fail(field, f"must be true or false, got {value!r}")
        for field in ("block", "end_block"):
            value = getattr(self, field)
            if not isinstance(value, str) or value not in list_blocks():
                raise self._fail(field, f"unknown block type {value!r}; registered: {', '.join(list_blocks())}")

    def _check_combinations(self) -> None:
        u = self.down_factor
        if self.downsample == "strided" and u < 2:
            raise self._fail(
                "downsample",
                "'strided' needs down_factor >= 2 (a stride-1 head is the unshuffle head); "
                "use downsample='unshuffle' with down_factor=1",
            )
        if self.strided_head == "dconv" and (self.downsample != "strided" or u != 2):
            raise self._fail(
                "strided_head",
                "'dconv' is USTC-Noah's 4x4 stride-2 head: it needs downsample='strided' and down_factor=2; "
                "leave it at 'conv' otherwise",
            )
        if self.reconstruction in ("cascade", "shuffle") and u < 2:
            raise self._fail(
                "reconstruction",
                f"{self.reconstruction!r} needs down_factor >= 2 (with u=1 there is no LR-size stage); "
                "use 'direct' or raise down_factor",
            )
        if self.reconstruction != "direct" and self.tail_kernel != 3:
            raise self._fail(
                "tail_kernel",
                f"applies to reconstruction='direct' only ({self.reconstruction} uses 3x3 convs); leave it at 3",
            )
        if (self.reconstruction == "shuffle") != (self.lr_channels >= 1):
            raise self._fail(
                "lr_channels",
                "is the LR-size width of reconstruction='shuffle': set it >= 1 with 'shuffle' and leave it at 0 "
                f"otherwise (got {self.lr_channels} with {self.reconstruction!r})",
            )
        if self.body_skip and self.blocks == 0:
            raise self._fail("body_skip", "needs blocks >= 1 (there is no body to skip); set it to false")
        if self.blocks == 0 and self.block != "conv":
            raise self._fail("block", f"has no effect with blocks=0; leave it at 'conv' (got {self.block!r})")
        self._check_taps()
        if not get_block(self.end_block).supports_channel_change:
            changing = [name for name in list_blocks() if get_block(name).supports_channel_change]
            raise self._fail(
                "end_block",
                f"{self.end_block!r} cannot change width, but the head/reconstruction convs do; "
                f"choose one of {', '.join(changing)}",
            )
        if self.residual_channels:
            self._check_dual_stream()

    @property
    def tapped_width(self) -> int:
        """Channels of the tapped features: C, (blocks + 1) C for 'all', 4 C for SPAN's four taps."""
        if self.feature_taps == "last":
            return self.channels
        return (self.blocks + 1 if self.feature_taps == "all" else 4) * self.channels

    @property
    def features_width(self) -> int:
        """Channels that reach the reconstruction: C after a fusion conv, else the tapped width."""
        return self.channels if self.fusion_kernel else self.tapped_width

    def _check_taps(self) -> None:
        if self.feature_taps == "last":
            return
        if self.blocks == 0:
            raise self._fail("feature_taps", f"{self.feature_taps!r} taps body blocks; it needs blocks >= 1")
        if self.body_skip:
            raise self._fail(
                "body_skip", f"has no effect with feature_taps={self.feature_taps!r} (the head output is a tap); set it to false"
            )
        if self.feature_taps == "span" and not get_block(self.block).has_inner_tap:
            tapping = [name for name in list_blocks() if get_block(name).has_inner_tap]
            raise self._fail(
                "feature_taps",
                f"'span' taps the last block's first conv, which {self.block!r} does not expose; "
                f"use block {' or '.join(map(repr, tapping))} or feature_taps='all'",
            )

    def _check_dual_stream(self) -> None:
        frame = {
            "downsample": "unshuffle",
            "down_factor": 1,
            "reconstruction": "direct",
            "tail_kernel": 3,
            "body_skip": False,
            "feature_taps": "last",
            "fusion_kernel": 0,
            "lr_channels": 0,
            "global_residual": "none",
            "input_norm": "none",
            "head_activation": True,
            "end_block": "conv",
        }
        for field, value in frame.items():
            if getattr(self, field) != value:
                raise self._fail(
                    field,
                    f"must be {value!r} with residual_channels > 0 (ETDS's dual stream is a plain full-resolution "
                    f"network whose residual stream is its own anchor); got {getattr(self, field)!r}",
                )
        if self.residual_channels < 3:
            raise self._fail("residual_channels", f"the residual stream carries the RGB image: use >= 3, got {self.residual_channels}")
        from search_space.dual_stream import ANCHOR_SAFE_ACTIVATIONS  # noqa: PLC0415

        if self.activation not in ANCHOR_SAFE_ACTIVATIONS:
            raise self._fail(
                "activation",
                f"{self.activation!r} would distort the dual stream's residual stream (the image must pass "
                f"unchanged: act(v) = v for v >= 0); choose one of {', '.join(ANCHOR_SAFE_ACTIVATIONS)}",
            )
        if not get_block(self.block).supports_channel_change and self.blocks:
            raise self._fail("block", f"{self.block!r} cannot be a dual-stream backbone kernel; use conv, rep or ecb")

    # -- serialization ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain JSON/TOML-compatible values, plus `version` (the schema)."""
        return {"version": ARCH_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchConfig:
        """The config in `data` (a study or export file's `[arch]` table, a run's trial record).

        Older schema versions are migrated (`migrate_arch_dict`); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise UserError(f"an architecture must be a table of settings, got {type(data).__name__}")
        data = migrate_arch_dict(data)
        reject_unknown_keys("ArchConfig", data, (f.name for f in dataclasses.fields(cls)))
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise UserError(f"ArchConfig is missing required key(s) {', '.join(map(repr, missing))}")
        return cls(**dict(data))

    @property
    def arch_hash(self) -> str:
        """First 12 hex digits of the sha256 of the canonical JSON of the fields: stable across runs.

        The version and the version-2 fields at their defaults are left out, so a network that
        version 1 could express keeps the hash version 1 gave it (tested against recorded hashes)."""
        fields = dataclasses.asdict(self)
        for name, default in _V2_DEFAULTS.items():
            if fields[name] == default and type(fields[name]) is type(default):
                del fields[name]
        return content_hash(fields)

    def summary(self) -> str:
        """A short one-line description, e.g. 'unshuffle2 C28 3xconv gelu direct-k3 +nearest end=ecb'."""
        head = f"{self.downsample}{self.down_factor}"
        if self.strided_head != "conv":
            head += f"-{self.strided_head}"
        parts = [head, f"C{self.channels}"]
        if self.residual_channels:
            parts.append(f"R{self.residual_channels}")
        parts += [f"{self.blocks}x{self.block}" if self.blocks else "0 blocks", self.activation]
        if not self.head_activation:
            parts.append("linear-head")
        if self.input_norm != "none":
            parts.append(f"norm={self.input_norm}")
        if self.body_skip:
            parts.append("skip")
        if self.feature_taps != "last":
            parts.append(f"taps={self.feature_taps}")
        if self.fusion_kernel:
            parts.append(f"fuse-k{self.fusion_kernel}")
        parts.append(f"direct-k{self.tail_kernel}" if self.reconstruction == "direct" else self.reconstruction)
        if self.global_residual != "none":
            parts.append(f"+{self.global_residual}")
        if not self.bias:
            parts.append("nobias")
        if self.end_block != "conv":
            parts.append(f"end={self.end_block}")
        return " ".join(parts)


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: only fields were added, each defaulting to version 1's network."""
    return data


#: from-version -> the function that lifts a dict (without its "version" key) one version up.
_MIGRATIONS = {1: _migrate_v1}


def migrate_arch_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` lifted to the current schema, without the `version` key; no key means version 1.

    A version newer than this code knows is refused with the fix (upgrade rtsr-nas), since guessing
    what an unknown field means could silently build a different network."""
    out = dict(data)
    version = out.pop("version", 1)
    if not _is_int(version) or version < 1:
        raise UserError(f"ArchConfig.version must be an integer >= 1, got {version!r}")
    if version > ARCH_VERSION:
        raise UserError(
            f"this architecture was written by a newer rtsr-nas (schema version {version}; this one reads up to "
            f"{ARCH_VERSION}); upgrade rtsr-nas to load it"
        )
    while version < ARCH_VERSION:
        out = _MIGRATIONS[version](out)
        version += 1
    return out
