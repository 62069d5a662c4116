"""The one content hash every config uses (ArchConfig, Recipe, DegradeSpec, study, latency protocol).

Artefacts (cache entries, latency records, exports, run directories) are keyed by these hashes, so
they must be identical across runs, processes, machines and Python versions: sha256 over canonical
JSON (sorted keys, no whitespace, ASCII, NaN refused), first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["content_hash"]


def content_hash(payload: Any) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of `payload` (JSON-serializable)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
