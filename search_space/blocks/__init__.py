"""Registered body blocks. Importing this package registers every block module listed here."""

from __future__ import annotations

from search_space.blocks import conv  # noqa: F401  (registers "conv")
from search_space.blocks.base import (
    ACTIVATIONS,
    Block,
    get_block,
    list_blocks,
    make_activation,
    register_block,
)

__all__ = ["ACTIVATIONS", "Block", "get_block", "list_blocks", "make_activation", "register_block"]
