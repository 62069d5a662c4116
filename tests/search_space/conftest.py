"""Shared set-up of the search-space tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors on a shared machine: one thread is fastest (oversubscription is slow)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _conv_macs_per_layer(module: nn.Module, x: Tensor) -> list[int]:
    """MACs of every nn.Conv2d in one forward of `module` on `x`, in call order: output elements x
    Cin/groups x kh x kw. Counted from the real output shapes, independently of thop."""
    counts: list[int] = []

    def hook(conv: nn.Module, _inputs: object, output: Tensor) -> None:
        kh, kw = conv.kernel_size
        counts.append(output.numel() * conv.in_channels // conv.groups * kh * kw)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts


@pytest.fixture
def conv_macs() -> Callable[[nn.Module, Tensor], list[int]]:
    """`conv_macs(module, x)`: the per-conv MAC counts of one forward pass (a hand-count helper)."""
    return _conv_macs_per_layer
