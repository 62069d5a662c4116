"""Data-pipeline throughput: AVIF encode, patch sampling, and what proxy training consumes.

Prints, measured side by side in one run on this machine (CPU; every number with its unit):

1. LR encode throughput (Lanczos-5 downscale + SVT-AV1 AVIF encode + decode) of the `builtin`
   train images at every QP, into an empty temporary cache, with 1 and with N encoder threads;
2. patch-sampler throughput (patches/s) at the default proxy batch and patch size;
3. a proxy-training step's consumption rate (patches/s) for the casr and anunet presets,
   and the ratio sampler / consumption (> 1 means the sampler is never the bottleneck).

    python benchmarks/data_pipeline.py [--images 8] [--workers 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search_space.presets import get_preset  # noqa: E402
from trainers.builtin import builtin_images  # noqa: E402
from trainers.cache import LRCache  # noqa: E402
from trainers.data import PatchSampler, load_split  # noqa: E402
from trainers.degrade import QPS  # noqa: E402
from trainers.loop import Trainer  # noqa: E402
from trainers.recipe import load_recipe  # noqa: E402


def _encode_rate(hrs, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cache = LRCache(Path(tmp))
        t0 = time.perf_counter()
        cache.lr_images(hrs, QPS, workers=workers, progress=False)
        elapsed = time.perf_counter() - t0
        assert cache.stats.encoded == len(hrs) * len(QPS)
    return len(hrs) * len(QPS) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="builtin train images to encode (x 5 QPs)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the training step")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per preset")
    args = parser.parse_args()
    cpu = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"device {cpu}; torch {torch.__version__}")

    hrs = [img for _, img in builtin_images("train", progress=False)[: args.images]]
    size = f"{hrs[0].shape[1]}x{hrs[0].shape[0]} HR"
    for workers in sorted({1, args.workers}):
        rate = _encode_rate(hrs, workers)
        print(f"encode: {rate:6.1f} LR images/s ({size} -> x4 down -> AVIF at 5 QPs, {workers} encoder thread(s), {cpu})")

    pairs = load_split("builtin", split="train", qps=QPS, progress=False)
    stage = load_recipe("proxy").stages[0]
    sampler = PatchSampler(pairs, patch=stage.patch, batch=stage.batch, qp_sampling="uniform", seed=0)
    sampler.batch(0, 100)
    n = 200
    t0 = time.perf_counter()
    for step in range(n):
        sampler.batch(step, n)
    sample_rate = n * stage.batch / (time.perf_counter() - t0)
    print(f"sampler: {sample_rate:8.0f} patches/s (batch {stage.batch}, LR patch {stage.patch}px, 1 thread, {cpu})")

    torch.set_num_threads(args.threads)
    for name in ("casr", "anunet"):
        trainer = Trainer(get_preset(name).arch, load_recipe("proxy"), pairs, total_steps=args.steps + 2, seed=0)
        trainer.run(until=2)  # warm-up: first-step allocations
        t0 = time.perf_counter()
        trainer.run()
        consume = args.steps * stage.batch / (time.perf_counter() - t0)
        print(
            f"train:   {consume:8.1f} patches/s consumed by {name} proxy steps ({args.threads} torch threads, {cpu}); "
            f"sampler/consumption = {sample_rate / consume:.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
