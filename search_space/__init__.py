"""What a network is: blocks, the network template, `ArchConfig`, presets, cost and search ranges.

Imports with torch alone: thop (in `cost`) and optuna (in `ranges.suggest`) are imported inside
the functions that need them. The preset names are loaded on first access (PEP 562) so that
`python -m search_space.presets` does not import its own module twice.
"""

from __future__ import annotations

from typing import Any

from search_space.arch import ArchConfig
from search_space.blocks import ACTIVATIONS, Block, get_block, list_blocks, register_block
from search_space.cost import DEFAULT_HW, Cost, cost, profile_macs
from search_space.errors import UserError
from search_space.network import SRNet, build, deploy
from search_space.ranges import IntRange, SearchRanges, arch_to_params, suggest

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_HW",
    "ArchConfig",
    "Block",
    "Cost",
    "IntRange",
    "Preset",
    "SRNet",
    "SearchRanges",
    "UserError",
    "arch_to_params",
    "build",
    "cost",
    "deploy",
    "get_block",
    "get_preset",
    "list_blocks",
    "list_presets",
    "profile_macs",
    "register_block",
    "register_preset",
    "suggest",
]

_LAZY_PRESET_NAMES = ("Preset", "get_preset", "list_presets", "register_preset")


def __getattr__(name: str) -> Any:
    if name in _LAZY_PRESET_NAMES:
        from search_space import presets  # noqa: PLC0415

        return getattr(presets, name)
    raise AttributeError(f"module 'search_space' has no attribute {name!r}")
