"""`ArchConfig`: one point of the search space, i.e. one instance of the network template.

The template (DESIGN.md, "The network template"):

    x (LR RGB, 1x3xHxW, H and W divisible by u)
     -> downsample: pixel-unshuffle(u) | strided conv(u)
     -> head: 3*u^2 -> C (3x3, training form = `end_block`), or the strided conv itself, then `activation`
     -> `blocks` x `block` (C -> C, `activation`), plus the head output if `body_skip`
     -> reconstruction:
          direct : conv C -> 3*(4u)^2 (kernel `tail_kernel`) -> pixel-shuffle(4u)
          cascade: conv C -> 3*u^2 -> pixel-shuffle(u) -> + x -> conv 3 -> 48 -> pixel-shuffle(4)
     -> + an x4 upsample of x if `global_residual` is not "none" (the anchor): nearest | bilinear
          | lanczos (fixed Lanczos-3, separable conv + shuffle) | linear (learnable 7x7 conv + shuffle,
          initialised to Lanczos-3); with an anchor the last learned layer starts at zero, so the
          network's output at step 0 is exactly the anchor's
    `bias` switches every bias of every conv on or off.

`end_block` is the block type used for the *training form* of the 3x3 convs that change width
(the unshuffle head and the 3x3 reconstruction convs). It exists because published designs train
those convs differently from the body: ANUNet trains them as ECBs around a plain-conv body, CASR
trains every conv as a RepBlockV5. After `deploy()` they are plain convs either way, so `end_block`
changes training, never MACs or params. A 1x1 tail and the strided head are always plain convs
(every block is a 3x3, stride-1 conv).

Each network has exactly one valid config: settings that would have no effect or that contradict
each other are rejected with a `UserError` rather than silently ignored, so equal networks hash
equal (the hash keys latency caches and exports):

- `downsample="strided"` needs `down_factor >= 2` (a stride-1 head is the unshuffle u=1 head);
- `reconstruction="cascade"` needs `down_factor >= 2` (with u=1 the "cascade" is only a
  3-channel bottleneck at full resolution) and keeps `tail_kernel=3` (it has no 1x1 variant);
- `body_skip=True` needs `blocks >= 1`, and `blocks=0` keeps `block="conv"`;
- `end_block` must be able to change width (`Block.supports_channel_change`); SPAB cannot, and is
  fine in the body, which is always C -> C.
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
    "DOWNSAMPLES",
    "DOWN_FACTORS",
    "GLOBAL_RESIDUALS",
    "RECONSTRUCTIONS",
    "SCALE",
    "TAIL_KERNELS",
    "ArchConfig",
]

#: The super-resolution factor of every network in this project (540p -> 4K).
SCALE = 4
DOWNSAMPLES: tuple[str, ...] = ("unshuffle", "strided")
DOWN_FACTORS: tuple[int, ...] = (1, 2, 3, 4)
RECONSTRUCTIONS: tuple[str, ...] = ("direct", "cascade")
TAIL_KERNELS: tuple[int, ...] = (1, 3)
#: Global residual ("anchor"): an x4 interpolation of x added to the output; see search_space.network.
GLOBAL_RESIDUALS: tuple[str, ...] = ("none", "nearest", "bilinear", "lanczos", "linear")


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
        for field, allowed in (
            ("downsample", DOWNSAMPLES),
            ("down_factor", DOWN_FACTORS),
            ("activation", ACTIVATIONS),
            ("reconstruction", RECONSTRUCTIONS),
            ("tail_kernel", TAIL_KERNELS),
            ("global_residual", GLOBAL_RESIDUALS),
        ):
            value = getattr(self, field)
            # Exact types: `True in (1, 3)` and `2.0 in (1, 2)` are both true in Python.
            if type(value) is not type(allowed[0]) or value not in allowed:
                raise self._fail(field, f"got {value!r}; choose one of {_choices(allowed)}")
        for field in ("body_skip", "bias"):
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
        if self.reconstruction == "cascade" and u < 2:
            raise self._fail(
                "reconstruction",
                "'cascade' needs down_factor >= 2 (with u=1 it is only a 3-channel bottleneck); "
                "use 'direct' or raise down_factor",
            )
        if self.reconstruction == "cascade" and self.tail_kernel != 3:
            raise self._fail(
                "tail_kernel",
                "applies to reconstruction='direct' only (cascade uses 3x3 convs); leave it at 3",
            )
        if self.body_skip and self.blocks == 0:
            raise self._fail("body_skip", "needs blocks >= 1 (there is no body to skip); set it to false")
        if self.blocks == 0 and self.block != "conv":
            raise self._fail("block", f"has no effect with blocks=0; leave it at 'conv' (got {self.block!r})")
        if not get_block(self.end_block).supports_channel_change:
            changing = [name for name in list_blocks() if get_block(name).supports_channel_change]
            raise self._fail(
                "end_block",
                f"{self.end_block!r} cannot change width, but the head/reconstruction convs do; "
                f"choose one of {', '.join(changing)}",
            )

    # -- serialization ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain JSON/TOML-compatible values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchConfig:
        """The config in `data` (e.g. a study or export file's `[arch]` table); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise UserError(f"an architecture must be a table of settings, got {type(data).__name__}")
        reject_unknown_keys("ArchConfig", data, (f.name for f in dataclasses.fields(cls)))
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise UserError(f"ArchConfig is missing required key(s) {', '.join(map(repr, missing))}")
        return cls(**dict(data))

    @property
    def arch_hash(self) -> str:
        """First 12 hex digits of the sha256 of the canonical JSON of `to_dict()`: stable across runs."""
        return content_hash(self.to_dict())

    def summary(self) -> str:
        """A short one-line description, e.g. 'unshuffle2 C28 3xconv gelu direct-k3 +nearest end=ecb'."""
        parts = [
            f"{self.downsample}{self.down_factor}",
            f"C{self.channels}",
            f"{self.blocks}x{self.block}" if self.blocks else "0 blocks",
            self.activation,
        ]
        if self.body_skip:
            parts.append("skip")
        parts.append(f"direct-k{self.tail_kernel}" if self.reconstruction == "direct" else "cascade")
        if self.global_residual != "none":
            parts.append(f"+{self.global_residual}")
        if not self.bias:
            parts.append("nobias")
        if self.end_block != "conv":
            parts.append(f"end={self.end_block}")
        return " ".join(parts)
