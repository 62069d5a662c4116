"""Block contract, block registry and activations shared by every body block.

A block is a module with a *training form* (possibly many branches) and a `fuse()` that returns the
*deploy form*: plain `nn.Conv2d` layers plus whatever non-linear parts cannot be folded. The deploy
form is what is timed, counted and exported, so `fuse()` must be exact over the whole image,
borders included (a 1x1 -> 3x3 chain pads with the 1x1's bias: ECBSR models/ecb.py, github.com/xindongzhang/ECBSR).

A block also knows how to silence itself (`zero_output_()`): a network with an interpolation anchor
starts with its last learned layer at exactly zero, so its output at step 0 is the anchor's. Only
the block knows which of its tensors end each branch (and how to cancel a parameter-free identity).

Online re-parameterization (`OnlineReparam`, `set_online_reparam`): a module whose branches are all
linear equals one conv whose kernel is a function of the branch weights. In training mode with the
switch on, it builds that kernel every step with the same differentiable algebra `fuse()` uses
(`fused_kernel()`) and runs one conv: the same function of the same parameters, so the same loss
and gradients (up to round-off), at the deploy network's cost. Off by default, so the training form
stays the independent multi-branch reference the fusion tests compare `fuse()` against; the trainer
switches it on (recipe key `online_reparam`). In eval mode the multi-branch form always runs: the
proxy's fusion check compares the deploy model with it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks.fusion import Conv, to_conv2d
from search_space.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "Block",
    "LinearBlock",
    "OnlineReparam",
    "check_width",
    "make_activation",
    "register_block",
    "minus_identity_",
    "set_online_reparam",
    "zero_",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "lrelu", "prelu", "gelu", "silu", "none")

#: name -> block class, filled by `register_block` as each block module is imported; read through
#: `search_space.blocks.get_block` / `list_blocks`, which import every block module first.
_BLOCKS: dict[str, type["Block"]] = {}

B = TypeVar("B", bound=type["Block"])


def make_activation(name: str, channels: int) -> nn.Module:
    """The activation module for `name`; `prelu` has one learnable slope per channel."""
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.1)
    if name == "prelu":
        return nn.PReLU(num_parameters=channels, init=0.25)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    if name == "none":
        return nn.Identity()
    raise UserError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def check_width(block: str, name: str, value: int) -> None:
    """A block's integer width setting (an expansion ratio, a hidden width) must be >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"block {block!r}: {name} must be an integer >= 1, got {value!r}")


@torch.no_grad()
def zero_(*tensors: Tensor | None) -> None:
    """Set every given tensor to 0 in place; `None` (an absent bias) is skipped.

    The helper of `Block.zero_output_()`: bias-free blocks pass `conv.bias`, which is None.
    """
    for tensor in tensors:
        if tensor is not None:
            tensor.zero_()


@torch.no_grad()
def minus_identity_(conv: nn.Conv2d) -> None:
    """Make a dense, same-width conv compute exactly `-x`: -1 at the kernel centre, 0 elsewhere.

    Cancels a block's parameter-free identity (`+ x`) in `Block.zero_output_()`: `-x + x` is
    exactly 0 in floating point, and so is the fused kernel `-I + I`. (A convolution that rounds
    its inputs, e.g. TF32 on a GPU, leaves a round-off residue; CPU float32/float64 are exact.)
    """
    out_ch, in_ch, kh, kw = conv.weight.shape
    if out_ch != in_ch or conv.groups != 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"minus_identity_ needs a dense, odd-kernel conv with in == out channels, got {conv}")
    conv.weight.zero_()
    index = torch.arange(out_ch, device=conv.weight.device)
    conv.weight[index, index, kh // 2, kw // 2] = -1.0
    zero_(conv.bias)


class OnlineReparam:
    """Mixin of modules that can run their linear branches as the one conv they fuse to.

    `online_reparam` is a plain attribute (not a buffer): it is a way of computing, not a weight, so
    state dicts, checkpoints and `deploy()` do not see it. `set_online_reparam` sets it on a tree.
    """

    #: Off by default: the multi-branch form is the reference (see the module docstring).
    online_reparam: bool = False
    training: bool

    def runs_online(self) -> bool:
        """True when this forward should run the fused kernel: switched on and in training mode."""
        return self.online_reparam and self.training


def set_online_reparam(module: nn.Module, enabled: bool) -> int:
    """Switch online re-parameterization on or off for every `OnlineReparam` module in `module`.

    Returns how many modules were switched (0: nothing in the model has linear branches to fuse).
    Why a walk, not a global: two models in one process (a teacher, a comparison run) may differ.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, OnlineReparam):
            sub.online_reparam = bool(enabled)
            count += 1
    return count


class Block(nn.Module, ABC):
    """A 3x3, stride-1, same-size block from `in_ch` to `out_ch` channels, activation included.

    Subclasses build their training branches in `__init__` and implement `fuse()`. The activation
    is applied last (after the summed branches), so it carries over unchanged to the deploy form.
    """

    name: ClassVar[str] = ""
    #: False for blocks whose structure needs in_ch == out_ch (e.g. SPAB's residual).
    supports_channel_change: ClassVar[bool] = True
    #: False for blocks whose output no weight setting can make zero (a parameter-free identity
    #: added after non-linear branches, as in SPAB without attention); `zero_output_()` raises then.
    #: Every block that can change width must be able to: it may be a network's last layer.
    can_zero_output: ClassVar[bool] = True
    #: False for blocks whose deploy MACs do not grow in proportion to the image area (a
    #: squeeze-excite on a pooled 1x1 map, a pooling to a fixed fraction of the size): the cost
    #: counter then profiles the real input size instead of a few cells scaled up
    #: (`search_space.cost`).
    cost_scales_with_area: ClassVar[bool] = True
    #: True for blocks that also give the activated output of their first conv (`forward_with_inner`),
    #: the feature SPAN concatenates from its last block (`ArchConfig.feature_taps = "span"`).
    has_inner_tap: ClassVar[bool] = False

    def __init__(self, in_ch: int, out_ch: int, *, bias: bool = True, act: str = "relu") -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise UserError(f"block {self.name!r}: channels must be >= 1, got {in_ch}->{out_ch}")
        if not self.supports_channel_change and in_ch != out_ch:
            raise UserError(
                f"block {self.name!r} needs in_ch == out_ch (got {in_ch}->{out_ch}); "
                "use it only in the body, or pick a block that changes channels"
            )
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.bias = bias
        self.act_name = act
        self.act = make_activation(act, out_ch)

    @abstractmethod
    def fuse(self) -> nn.Module:
        """The deploy form: an independent module (no shared parameters) computing the same output."""

    @abstractmethod
    def zero_output_(self) -> None:
        """Set weights in place so that the block outputs exactly 0 for every input.

        Why: an anchored network starts at its anchor (DESIGN.md, the network template), so its
        last learned layer must add exactly nothing at step 0. Each branch's *last* conv (weight and
        bias) is zeroed rather than every weight, so the earlier convs keep their random init and
        receive gradients as soon as the last one moves; a parameter-free identity is cancelled by a
        branch set to minus the identity. The fused form of a zeroed block is exactly zero too
        (the fused kernel is a sum of products with zero factors, or -1 + 1). Activations map 0 to 0,
        so the activation may stay. Consumes no random numbers. Blocks with `can_zero_output`
        False raise NotImplementedError.
        """

    def _deploy_act(self) -> nn.Module:
        """A copy of the activation for the deploy form (PReLU slopes included)."""
        return copy.deepcopy(self.act)

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, bias={self.bias}, act={self.act_name}"


class LinearBlock(OnlineReparam, Block):
    """A block whose branches are all linear: `act(sum of branches)` at training, `act(one 3x3 conv)` at deploy.

    Subclasses give the two computations of the same linear map: `forward_branches()` (the
    multi-branch training form, before the activation) and `fused_kernel()` (the 3x3 conv, built
    with differentiable ops from the live parameters). `fuse()` and the online forward both use
    `fused_kernel()`, so the deploy conv and the kernel trained online cannot drift apart.
    """

    @abstractmethod
    def forward_branches(self, x: Tensor) -> Tensor:
        """The multi-branch training form, before the activation."""

    @abstractmethod
    def fused_kernel(self) -> Conv:
        """`(weight (out, in, 3, 3), bias or None)` of the conv (`padding=1`) the branches sum to.

        Differentiable in the branch parameters (no `no_grad`, no detach): the online forward
        backpropagates through it.
        """

    def forward(self, x: Tensor) -> Tensor:
        if self.runs_online():
            weight, bias = self.fused_kernel()
            return self.act(F.conv2d(x, weight, bias, padding=1))
        return self.act(self.forward_branches(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return nn.Sequential(to_conv2d(self.fused_kernel()), self._deploy_act())


def register_block(name: str) -> Callable[[B], B]:
    """Class decorator: make a block available to configs and the search under `name`."""

    def decorate(cls: B) -> B:
        if name in _BLOCKS:
            raise RuntimeError(f"block {name!r} registered twice ({_BLOCKS[name]} and {cls})")
        cls.name = name
        _BLOCKS[name] = cls
        return cls

    return decorate
