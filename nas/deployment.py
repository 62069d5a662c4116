"""Which network a trial deploys, and evaluating deployed weights.

The deployed network is what is counted, timed, exported and evaluated, and it is not always the
trained one: a recipe stage that removes the biases (CASR's last stage) delivers a bias-free
network. The scheduler and `nas.export` both ask `deployed_arch`, so the rule lives here once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from search_space.arch import ArchConfig
    from trainers.recipe import Recipe

__all__ = ["deployed_arch", "evaluate_weights", "plain_equivalent", "removes_bias"]


def removes_bias(recipe: Recipe) -> bool:
    """Whether any stage of `recipe` removes the network's biases."""
    return any(getattr(stage, "remove_bias", False) for stage in recipe.stages)


def deployed_arch(arch: ArchConfig, recipe: Recipe) -> ArchConfig:
    """The architecture a recipe delivers: bias-free if any stage removes the biases."""
    if arch.bias and removes_bias(recipe):
        return dataclasses.replace(arch, bias=False)
    return arch


def _deploy_signature(arch: ArchConfig) -> list[tuple[str, str]]:
    """Every module of the deployed network below the root: class and configuration, in order."""
    import torch

    from search_space.network import build, deploy

    with torch.random.fork_rng():  # building initializes weights; keep the caller's RNG untouched
        net = deploy(build(arch))
    return [(f"{type(m).__module__}.{type(m).__qualname__}", m.extra_repr()) for m in list(net.modules())[1:]]


def plain_equivalent(arch: ArchConfig) -> ArchConfig:
    """The same deployed network spelled with plain-conv training forms, if there is one, else `arch`.

    Re-parameterized blocks (rep, ecb, ...) fuse to exactly the modules a plain conv deploys to, so
    e.g. RepTCN and its plain-conv twin are one network at inference. Ablation arms that differ only
    in training form therefore share one latency measurement instead of two noisy ones. Only
    `block`/`end_block` change, and the network's own forward depends on them only through its
    modules, so equal module lists (types and settings) mean the same computation."""
    try:
        candidate = dataclasses.replace(arch, block="conv", end_block="conv")
    except UserError:  # e.g. SPAN's taps need a SPAB body: a plain-conv spelling does not exist
        return arch
    if candidate == arch:
        return arch
    return candidate if _deploy_signature(candidate) == _deploy_signature(arch) else arch


def evaluate_weights(*, weights: bytes | Path, arch: JSONDict, data: Any, dtype: str, device: str, threads: int,
                     splits: tuple[str, ...] = ("val", "test")) -> dict[str, JSONDict | None]:
    """`EvalReport.to_dict()` of fused weights (`torch.save` bytes or a file) of `arch` on each of
    `data`'s `splits` ('val', 'test'; None for a split the data does not have).

    The deploy network is rebuilt from the arch (plain convs after `deploy`), loaded strictly, and
    evaluated in `dtype` (float16: pure fp16 weights and input, as the challenge's `--fp16`)."""
    import io

    import torch

    from search_space.arch import ArchConfig
    from search_space.network import build, deploy
    from trainers.evaluate import evaluate

    source = io.BytesIO(weights) if isinstance(weights, (bytes, bytearray)) else weights
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = deploy(build(ArchConfig.from_dict(arch)))
    model.load_state_dict(state)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {
            split: None if getattr(data, split) is None else evaluate(model, getattr(data, split), device=device,
                                                                      dtype=getattr(torch, dtype)).to_dict()
            for split in splits
        }
    finally:
        torch.set_num_threads(previous)
