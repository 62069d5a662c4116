"""Proxy-train published presets on `builtin` data and print their gain over Lanczos per QP.

Calibrates the default proxy budget (trainers.proxy.DEFAULT_PROXY_STEPS): with it, the exact
presets should beat Lanczos at QP31. Prints wall time, device and thread count with every number.

    python benchmarks/proxy_presets.py                         # casr and anunet, default budget
    python benchmarks/proxy_presets.py --presets casr --steps 600 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_space.presets import get_preset  # noqa: E402
from trainers.proxy import DEFAULT_PROXY_STEPS, ProxyData, proxy_train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["casr", "anunet"])
    parser.add_argument("--steps", type=int, default=DEFAULT_PROXY_STEPS)
    parser.add_argument("--recipe", default="proxy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    data = ProxyData.load("builtin", progress=True)
    print(f"data: {data.train.summary()}\n      {data.val.summary()}  (loaded in {time.perf_counter() - started:.1f} s)")
    device = f"cpu ({platform.processor() or platform.machine()}, {args.threads} threads)"
    for name in args.presets:
        t0 = time.perf_counter()
        result = proxy_train(get_preset(name).arch, args.recipe, data, steps=args.steps, seed=args.seed, threads=args.threads)
        wall = time.perf_counter() - t0
        print(f"\n== {name}: recipe {args.recipe}, {args.steps} steps, seed {args.seed}, {device}")
        if not result.ok:
            print(f"FAILED: {result.reason}")
            continue
        print(result.eval.table())
        print(f"wall {wall:.1f} s (train {result.train_seconds:.1f} s, eval {result.eval_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
