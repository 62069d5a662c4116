"""Proxy trainer overhead: `Trainer` steps/s next to a bare PyTorch loop of the same work.

Both loops train the same preset's training form with the same batch and patch size, L1 loss and
Adam, for the same number of steps; rounds alternate (trainer, bare, trainer, bare, ...) so both
see the same machine state, and the median over rounds is reported. The bare loop draws its batches
from the same `PatchSampler`, so the ratio isolates what the trainer adds (stage/lr bookkeeping,
divergence checks, loss object). Target on the 2-core CPU machine: ratio >= 0.9.

    python benchmarks/trainer_overhead.py [--preset casr] [--steps 30] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search_space.network import build  # noqa: E402
from search_space.presets import get_preset  # noqa: E402
from trainers.data import PatchSampler, load_split  # noqa: E402
from trainers.degrade import QPS  # noqa: E402
from trainers.losses import LossSpec  # noqa: E402
from trainers.loop import Trainer  # noqa: E402
from trainers.recipe import Recipe, Stage  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="casr")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads"

    pairs = load_split("builtin", split="train", qps=QPS, progress=False)
    arch = get_preset(args.preset).arch
    stage = Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=1e-3, schedule="constant", patch=args.patch, batch=args.batch)
    recipe = Recipe(name="overhead", stages=(stage,))

    def trainer_rate() -> float:
        trainer = Trainer(arch, recipe, pairs, total_steps=args.steps + 1, seed=0)
        trainer.run(until=1)
        t0 = time.perf_counter()
        trainer.run()
        return args.steps / (time.perf_counter() - t0)

    def bare_rate() -> float:
        torch.manual_seed(0)
        model = build(arch)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sampler = PatchSampler(pairs, patch=args.patch, batch=args.batch, qp_sampling="uniform", seed=0)

        def step(i: int) -> None:
            lr, hr, _ = sampler.batch(i, args.steps + 1)
            loss = (model(lr) - hr).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(0)
        t0 = time.perf_counter()
        for i in range(1, args.steps + 1):
            step(i)
        return args.steps / (time.perf_counter() - t0)

    ours, bare = [], []
    for r in range(args.rounds):
        ours.append(trainer_rate())
        bare.append(bare_rate())
        print(f"round {r + 1}: trainer {ours[-1]:.2f} steps/s, bare loop {bare[-1]:.2f} steps/s ({cpu})")
    t, b = statistics.median(ours), statistics.median(bare)
    print(
        f"{args.preset}, batch {args.batch}, LR patch {args.patch}: trainer {t:.2f} steps/s, bare {b:.2f} steps/s, "
        f"ratio {t / b:.3f} (target >= 0.9; median of {args.rounds} alternating rounds, {cpu})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
