"""Data-pipeline throughput: AVIF encode, patch sampling, and what proxy training consumes.

Prints, measured side by side in one run on this machine (CPU; every number with its unit):

1. LR encode throughput (Lanczos-5 downscale + SVT-AV1 AVIF encode + decode) of the `builtin`
   train images at every QP, into an empty temporary cache, with 1 and with N encoder threads;
2. patch-sampler throughput (patches/s) at the default proxy batch and patch size;
3. a proxy-training step's consumption rate (patches/s) for the casr and anunet presets,
   and the ratio sampler / consumption (> 1 means the sampler is never the bottleneck).

With ``--device cuda`` the encode and CPU sampler lines stay, and the GPU gets its own: the device
sampler's rate (patches cut on the GPU, `trainers.device_sampler`), the CPU sampler plus its
host -> device copy (what the device path replaces), and the training steps on the GPU, with the ratio
device sampler / consumption. CUDA work is synchronized before every clock read.

    python benchmarks/data_pipeline.py [--images 8] [--workers 2] [--threads 2] [--device cpu|cuda]
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
from trainers.device_sampler import DevicePatchSampler, patch_sampler  # noqa: E402
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(batch_of, *, steps: int, batch: int, device: torch.device) -> float:
    """Patches/s of ``batch_of(step, steps)`` over ``steps`` batches, after one warm-up batch."""
    batch_of(0, steps)
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        batch_of(step, steps)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _gpu_lines(pairs, stage, *, device: torch.device, name: str, steps: int, threads: int, cpu_rate: float) -> None:
    """The --device cuda part: device sampler, host sampler + copy, and training steps on the GPU."""
    sampler = patch_sampler(pairs, device=device, patch=stage.patch, batch=stage.batch, qp_sampling="uniform", seed=0)
    if not isinstance(sampler, DevicePatchSampler):
        print(f"device sampler: not used on {name} (the images do not fit; see the warning above)")
        device_rate = None
    else:
        device_rate = _rate(sampler.batch, steps=200, batch=stage.batch, device=device)
        print(f"device sampler: {device_rate:8.0f} patches/s (batch {stage.batch}, LR patch {stage.patch}px, cut on {name}); "
              f"{device_rate / cpu_rate:.1f}x the CPU sampler")
    host = PatchSampler(pairs, patch=stage.patch, batch=stage.batch, qp_sampling="uniform", seed=0)

    def host_and_copy(step: int, total: int) -> None:
        lr, hr, _ = host.batch(step, total)
        lr.to(device), hr.to(device)

    copy_rate = _rate(host_and_copy, steps=200, batch=stage.batch, device=device)
    print(f"host sampler + copy: {copy_rate:8.0f} patches/s (numpy on the CPU, 1 thread, then copied to {name})")
    torch.set_num_threads(threads)
    for preset in ("casr", "anunet"):
        trainer = Trainer(get_preset(preset).arch, load_recipe("proxy"), pairs, total_steps=steps + 2, seed=0, device=device)
        trainer.run(until=2)  # warm-up: first-step allocations, cuDNN autotuning, the device copy
        _sync(device)
        t0 = time.perf_counter()
        trainer.run()
        _sync(device)
        consume = steps * stage.batch / (time.perf_counter() - t0)
        ratio = f"device sampler/consumption = {device_rate / consume:.0f}x" if device_rate else "no device sampler"
        print(f"train:   {consume:8.1f} patches/s consumed by {preset} proxy steps on {name}; {ratio} (both on {name})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="builtin train images to encode (x 5 QPs)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the training step")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per preset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: also time the device sampler and training steps on the GPU")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and a CUDA build of torch; this machine has neither (use --device cpu)")
    cpu = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"device {cpu}; torch {torch.__version__}")
    gpu = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else None
    if gpu is not None:
        print(f"device cuda: {torch.cuda.get_device_name(gpu)}")

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

    if gpu is not None:
        name = f"cuda: {torch.cuda.get_device_name(gpu)}"
        _gpu_lines(pairs, stage, device=gpu, name=name, steps=args.steps, threads=args.threads, cpu_rate=sample_rate)
        return 0

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
