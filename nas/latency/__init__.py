"""Runtime of a deploy-form network under a stated, hashable protocol, with a result cache.

Latency is one of the two search objectives, and a number is only meaningful with how and where
it was taken: `protocol` (what is measured, and its hash), `stats` (summaries, spread, Spearman),
`measure` (timing on cpu or cuda, batches interleaved on cpu, labelled results), `software` (the
torch/CUDA/cuDNN stack a number was taken with), `cache` (the run directory's `latency.jsonl`).
The command line lives in `rtsr.latency`; `python -m nas.latency` still runs it. This package
imports with torch and the standard library alone: GPU machines may lack optuna, ray, thop, tqdm.
"""

from __future__ import annotations

from nas.latency.cache import LatencyCache
from nas.latency.measure import LatencyResult, device_name_for, measure_latency, measure_latency_batch
from nas.latency.protocol import PROTOCOL_VERSION, LatencyProtocol
from nas.latency.software import SoftwareStack
from nas.latency.stats import LatencyStats, average_ranks, spearman, spread_of, summarize_times

__all__ = [
    "PROTOCOL_VERSION",
    "LatencyCache",
    "LatencyProtocol",
    "LatencyResult",
    "LatencyStats",
    "SoftwareStack",
    "average_ranks",
    "device_name_for",
    "measure_latency",
    "measure_latency_batch",
    "spearman",
    "spread_of",
    "summarize_times",
]
