"""Block contract, block registry and activations shared by every body block.

A block is a module with a *training form* (possibly many branches) and a `fuse()` that returns the
*deploy form*: plain `nn.Conv2d` layers plus whatever non-linear parts cannot be folded. The deploy
form is what is timed, counted and exported, so `fuse()` must be exact over the whole image,
borders included (see DESIGN.md and reference/blocks_and_protocol.md section 1.0).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, TypeVar

from torch import nn

from search_space.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "Block",
    "get_block",
    "list_blocks",
    "make_activation",
    "register_block",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "lrelu", "prelu", "gelu", "silu", "none")

_BLOCKS: dict[str, type["Block"]] = {}

B = TypeVar("B", bound=type["Block"])


def make_activation(name: str, channels: int) -> nn.Module:
    """The activation module for `name`; `prelu` has one learnable slope per channel."""
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.1)
    if name == "prelu":
        return nn.PReLU(num_parameters=channels, init=0.25)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    if name == "none":
        return nn.Identity()
    raise UserError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class Block(nn.Module, ABC):
    """A 3x3, stride-1, same-size block from `in_ch` to `out_ch` channels, activation included.

    Subclasses build their training branches in `__init__` and implement `fuse()`. The activation
    is applied last (after the summed branches), so it carries over unchanged to the deploy form.
    """

    name: ClassVar[str] = ""
    #: False for blocks whose structure needs in_ch == out_ch (e.g. SPAB's residual).
    supports_channel_change: ClassVar[bool] = True

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise UserError(f"block {self.name!r}: channels must be >= 1, got {in_ch}->{out_ch}")
        if not self.supports_channel_change and in_ch != out_ch:
            raise UserError(
                f"block {self.name!r} needs in_ch == out_ch (got {in_ch}->{out_ch}); "
                "use it only in the body, or pick a block that changes channels"
            )
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.bias = bias
        self.act_name = act
        self.act = make_activation(act, out_ch)

    @abstractmethod
    def fuse(self) -> nn.Module:
        """The deploy form: an independent module (no shared parameters) computing the same output."""

    def _deploy_act(self) -> nn.Module:
        """A copy of the activation for the deploy form (PReLU slopes included)."""
        return copy.deepcopy(self.act)

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, bias={self.bias}, act={self.act_name}"


def register_block(name: str) -> Callable[[B], B]:
    """Class decorator: make a block available to configs and the search under `name`."""

    def decorate(cls: B) -> B:
        if name in _BLOCKS:
            raise RuntimeError(f"block {name!r} registered twice ({_BLOCKS[name]} and {cls})")
        cls.name = name
        _BLOCKS[name] = cls
        return cls

    return decorate


def get_block(name: str) -> type[Block]:
    """The block class registered as `name`, with the valid names in the error if there is none."""
    _ensure_loaded()
    try:
        return _BLOCKS[name]
    except KeyError:
        raise UserError(f"unknown block type {name!r}; registered: {', '.join(list_blocks())}") from None


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    _ensure_loaded()
    return sorted(_BLOCKS)


def _ensure_loaded() -> None:
    # Importing the package registers every block module it lists.
    import search_space.blocks  # noqa: F401
