"""Moved to `search_space.configio` (kept until every importer is updated)."""

from search_space.configio import content_hash

__all__ = ["content_hash"]
