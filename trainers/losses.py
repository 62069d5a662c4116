"""Pixel losses for SR training, their registry, and weighted combinations described as data.

A recipe stage names its loss as a mapping `{name: weight}` (e.g. `{"l1": 1.0, "fft": 0.05}`,
BasicVision's L1 + gradient + FFT mix), so ablations over losses are config edits, not code edits.
`LossSpec` is that mapping as a frozen, hashable value; `build_loss(spec)` turns it into a callable.

Every loss takes `(output, target)`, two tensors of the same shape `B x C x H x W` (RGB: C = 3),
and returns a scalar averaged over all elements, so weights are comparable across batch and patch
sizes. All built-in losses are symmetric in their two arguments, which is why the distillation term
`L(teacher, student)` of CASR can be computed with the same functions.

Definitions (the FFT and gradient losses have several published variants; these are ours):

- `l1`: mean |o - t|.
- `mse` (alias `l2`): mean (o - t)^2.
- `charbonnier`: mean sqrt((o - t)^2 + eps^2); eps defaults to 1e-3 and is set per spec with the
  reserved key `charbonnier_eps`. eps is squared so that it is in pixel units: a zero difference
  costs exactly eps.
- `fft`: L1 on the complex difference of the 2-D real FFTs over (H, W), `torch.fft.rfft2` with
  `norm="ortho"`: mean over every real and every imaginary component of rfft2(o) - rfft2(t)
  (the half spectrum that rfft2 returns, so the mean runs over B*C*H*(W//2+1)*2 numbers). The
  ortho norm keeps the spectrum on the same scale as the pixels whatever the patch size. This is
  the common "FFT loss" of BasicSR-style codebases, not the focal frequency loss.
- `gradient`: the gradient-map loss: the average of the L1 between horizontal finite differences
  (x[..., :, 1:] - x[..., :, :-1]) of output and target and the L1 between vertical ones
  (x[..., 1:, :] - x[..., :-1, :]). It needs H >= 2 and W >= 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import torch
from torch import Tensor

from search_space.errors import UserError

__all__ = [
    "CHARBONNIER_EPS",
    "CombinedLoss",
    "LossFn",
    "LossSpec",
    "build_loss",
    "charbonnier_loss",
    "distillation_loss",
    "fft_l1_loss",
    "gradient_loss",
    "l1_loss",
    "list_losses",
    "mse_loss",
    "register_loss",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
F = TypeVar("F", bound=LossFn)

#: Default Charbonnier epsilon (pixel units, images in [0, 1]).
CHARBONNIER_EPS = 1e-3
#: Reserved key in a loss mapping that sets the Charbonnier epsilon instead of naming a loss.
_EPS_KEY = "charbonnier_eps"
#: Alternative spellings, rewritten to the registered name so that equal losses hash equally.
_ALIASES = {"l2": "mse"}

_LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[F], F]:
    """Function decorator: make `fn(output, target) -> scalar` usable in a `LossSpec` as `name`."""
    if not name.isidentifier() or name != name.lower() or name == _EPS_KEY or name in _ALIASES:
        raise ValueError(
            f"loss name {name!r} must be a lowercase identifier other than {_EPS_KEY!r} and the "
            f"aliases {sorted(_ALIASES)}"
        )

    def decorate(fn: F) -> F:
        if name in _LOSSES:
            raise RuntimeError(f"loss {name!r} registered twice ({_LOSSES[name]} and {fn})")
        _LOSSES[name] = fn
        return fn

    return decorate


def list_losses() -> list[str]:
    """Names usable in a loss mapping, sorted."""
    return sorted(_LOSSES)


def _check_pair(output: Tensor, target: Tensor) -> None:
    # Shape errors here are bugs in the caller (model output vs target crop), not user input.
    if output.dim() != 4 or output.shape != target.shape:
        raise ValueError(
            "losses need two B x C x H x W tensors of the same shape, got "
            f"{tuple(output.shape)} and {tuple(target.shape)}"
        )


@register_loss("l1")
def l1_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    _check_pair(output, target)
    return (output - target).abs().mean()


@register_loss("mse")
def mse_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error (the L2 loss of the CASR/URPNet fine-tuning stages)."""
    _check_pair(output, target)
    return (output - target).square().mean()


@register_loss("charbonnier")
def charbonnier_loss(output: Tensor, target: Tensor, eps: float = CHARBONNIER_EPS) -> Tensor:
    """Mean sqrt(d^2 + eps^2): L1-like for large errors, smooth (finite gradient) at zero."""
    _check_pair(output, target)
    return torch.sqrt((output - target).square() + eps * eps).mean()


@register_loss("fft")
def fft_l1_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean |Re| and |Im| of rfft2(output) - rfft2(target), ortho norm (see the module docstring)."""
    _check_pair(output, target)
    # The FFT is linear, so the spectrum of the difference equals the difference of the spectra;
    # float32 keeps half-precision inputs (AMP) from losing the small high-frequency terms.
    diff = torch.fft.rfft2((output - target).float(), dim=(-2, -1), norm="ortho")
    return torch.view_as_real(diff).abs().mean().to(output.dtype)


@register_loss("gradient")
def gradient_loss(output: Tensor, target: Tensor) -> Tensor:
    """Average of the L1s between horizontal and between vertical finite differences."""
    _check_pair(output, target)
    if output.shape[-1] < 2 or output.shape[-2] < 2:
        raise ValueError(f"the gradient loss needs H, W >= 2, got {tuple(output.shape)}")
    d = output - target  # differences are linear: grad(o) - grad(t) = grad(o - t)
    horizontal = (d[..., :, 1:] - d[..., :, :-1]).abs().mean()
    vertical = (d[..., 1:, :] - d[..., :-1, :]).abs().mean()
    return 0.5 * (horizontal + vertical)


def _as_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"loss {name!r}: the weight must be a number, got {value!r}")
    weight = float(value)
    if not math.isfinite(weight) or weight <= 0:
        raise UserError(
            f"loss {name!r}: the weight must be a finite number > 0, got {value!r} "
            "(to turn a loss off, remove it from the mapping)"
        )
    return weight


@dataclass(frozen=True)
class LossSpec:
    """A weighted sum of registered losses, e.g. `LossSpec.from_dict({"l1": 1.0, "fft": 0.05})`.

    `weights` is stored as name-sorted `(name, weight)` pairs so that equal mappings compare and
    hash equally whatever the order they were written in; a mapping is accepted too.
    `charbonnier_eps` only matters (and may only differ from the default) when `charbonnier` is
    one of the terms, so the same loss never has two spellings.
    """

    weights: tuple[tuple[str, float], ...]
    charbonnier_eps: float = CHARBONNIER_EPS

    def __post_init__(self) -> None:
        raw = self.weights
        pairs = list(raw.items()) if isinstance(raw, Mapping) else list(_pairs(raw))
        if not pairs:
            raise UserError(f"the loss mapping is empty; name at least one of: {', '.join(list_losses())}")
        canonical: dict[str, float] = {}
        for key, value in pairs:
            if not isinstance(key, str):
                raise UserError(f"loss names must be strings, got {key!r}")
            name = _ALIASES.get(key, key)
            if name not in _LOSSES:
                raise UserError(f"unknown loss {key!r}; valid losses: {', '.join(list_losses())}")
            if name in canonical:
                raise UserError(f"loss {name!r} is given twice (as {key!r} and another spelling); keep one")
            canonical[name] = _as_weight(key, value)
        object.__setattr__(self, "weights", tuple(sorted(canonical.items())))

        eps = self.charbonnier_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise UserError(f"{_EPS_KEY} must be a finite number > 0, got {eps!r}")
        object.__setattr__(self, "charbonnier_eps", float(eps))
        if "charbonnier" not in canonical and self.charbonnier_eps != CHARBONNIER_EPS:
            raise UserError(f"{_EPS_KEY} is set but the loss has no 'charbonnier' term; remove it or add the term")

    def as_mapping(self) -> dict[str, float]:
        """`{name: weight}` in name order."""
        return dict(self.weights)

    def to_dict(self) -> dict[str, float]:
        """The mapping as written in a recipe; `charbonnier_eps` appears iff charbonnier is a term."""
        out = self.as_mapping()
        if "charbonnier" in out:
            out[_EPS_KEY] = self.charbonnier_eps
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LossSpec:
        """Inverse of `to_dict`; loss names map to weights, `charbonnier_eps` sets the epsilon."""
        if not isinstance(data, Mapping):
            raise UserError(
                f"a loss must be a table of name = weight (e.g. {{ l1 = 1.0 }}), got {data!r}"
            )
        weights = {k: v for k, v in data.items() if k != _EPS_KEY}
        eps = data.get(_EPS_KEY, CHARBONNIER_EPS)
        return cls(weights=weights, charbonnier_eps=eps)  # type: ignore[arg-type]


def _pairs(items: Iterable[object]) -> Iterable[tuple[object, object]]:
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise UserError(f"loss weights must be (name, weight) pairs or a mapping, got {item!r}")
        yield item[0], item[1]


@dataclass(frozen=True)
class CombinedLoss:
    """The callable built from a `LossSpec`: sum of weight * loss over its terms."""

    spec: LossSpec
    _fns: tuple[tuple[str, float, LossFn], ...] = field(repr=False, compare=False)

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        total: Tensor | None = None
        for _, weight, fn in self._fns:
            term = weight * fn(output, target)
            total = term if total is None else total + term
        assert total is not None  # a LossSpec has at least one term
        return total

    def terms(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Unweighted value of every term, for logging which part of the loss moves."""
        return {name: fn(output, target) for name, _, fn in self._fns}


def build_loss(spec: LossSpec | Mapping[str, object]) -> CombinedLoss:
    """The weighted-sum loss `(output, target) -> scalar` for a spec (or a plain mapping)."""
    if not isinstance(spec, LossSpec):
        spec = LossSpec.from_dict(spec)
    fns: list[tuple[str, float, LossFn]] = []
    for name, weight in spec.weights:
        fn = _LOSSES[name]
        if name == "charbonnier":
            fn = functools.partial(charbonnier_loss, eps=spec.charbonnier_eps)
        fns.append((name, weight, fn))
    return CombinedLoss(spec=spec, _fns=tuple(fns))


def distillation_loss(
    student: Tensor, teacher: Tensor, *, spec: LossSpec | CombinedLoss, weight: float = 1.0
) -> Tensor:
    """`weight * L(teacher, student)`: the output-distillation term of CASR and URPNet.

    CASR's fine-tuning objective is `L(sr, hr) + 0.1 * L(sr_teacher, sr)`; a trainer computes it as
    `build_loss(spec)(sr, hr) + distillation_loss(sr, sr_teacher, spec=spec, weight=0.1)`. The
    teacher output is detached: the teacher is a fixed target and must receive no gradient.
    """
    loss = spec if isinstance(spec, CombinedLoss) else build_loss(spec)
    return weight * loss(student, teacher.detach())
