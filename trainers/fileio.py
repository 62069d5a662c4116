"""Moved to `search_space.configio` (kept until every importer is updated)."""

from search_space.configio import atomic_write

__all__ = ["atomic_write"]
