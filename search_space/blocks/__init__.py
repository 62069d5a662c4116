"""Registered body blocks. Importing this package registers every block module listed here."""

from __future__ import annotations

from search_space.blocks import conv  # noqa: F401  (registers "conv")
from search_space.blocks import dconv  # noqa: F401  (registers "dconv")
from search_space.blocks import ecb  # noqa: F401  (registers "ecb")
from search_space.blocks import rep  # noqa: F401  (registers "rep", "rep_expand", "rep_casr")
from search_space.blocks import spab  # noqa: F401  (registers "spab", "spab_noatt")
from search_space.blocks.base import (
    ACTIVATIONS,
    Block,
    get_block,
    list_blocks,
    make_activation,
    register_block,
)

__all__ = ["ACTIVATIONS", "Block", "get_block", "list_blocks", "make_activation", "register_block"]
