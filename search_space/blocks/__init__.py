"""Registered body blocks. Importing this package registers every block module listed here."""

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
    ACTIVATIONS,
    Block,
    LinearBlock,
    OnlineReparam,
    get_block,
    list_blocks,
    make_activation,
    register_block,
    set_online_reparam,
)

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
