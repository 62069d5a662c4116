"""Registered body blocks. Importing this package registers every block module listed here.

The look-ups (`get_block`, `list_blocks`) live here, after those imports, and not in `base`: only
this package knows the full list of block modules, so a look-up cannot run before they registered,
and `base` (which every block module imports) never imports them back."""

from __future__ import annotations

from search_space.blocks import (
    conv,  # noqa: F401  (registers "conv")
    dconv,  # noqa: F401  (registers "dconv")
    ecb,  # noqa: F401  (registers "ecb")
    rep,  # noqa: F401  (registers "rep", "rep_expand", "rep_casr")
    rep_edge,  # noqa: F401  (registers "rep_edge")
    repvit,  # noqa: F401  (registers "rep_rvsr", "repvit")
    safmpp,  # noqa: F401  (registers "safmpp")
    spab,  # noqa: F401  (registers "spab", "spab_noatt", "conv3xc")
)
from search_space.blocks.base import (
    _BLOCKS,
    ACTIVATIONS,
    Block,
    LinearBlock,
    OnlineReparam,
    make_activation,
    register_block,
    set_online_reparam,
)
from search_space.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "Block",
    "LinearBlock",
    "OnlineReparam",
    "get_block",
    "list_blocks",
    "make_activation",
    "register_block",
    "set_online_reparam",
]


def get_block(name: str) -> type[Block]:
    """The block class registered as `name`, with the valid names in the error if there is none."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise UserError(f"unknown block type {name!r}; registered: {', '.join(list_blocks())}") from None


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    return sorted(_BLOCKS)
