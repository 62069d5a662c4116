"""ETDS's dual-stream network for x4 SR at full LR resolution, and its merge into one plain conv per layer.

Survey Sec. 3.11 (team MegastudyEdu: ETDS with ECB kernels in the backbone). Follows the public ETDS
code, ECNUSR/ETDS `core/archs/ir/ETDS/arch.py` (classes `ETDS`, `ETDSForInference` and the ablation
`ETDSAblationAdvancedResidual`), `converter.py` (the equivalent transformation) and
`core/models/ir/etds_model.py` (the dual loss and the frozen residual stream).

Training form, two streams side by side at LR size (B = `channels`, R = `residual_channels`):

    b = act(head(x))                   r = act(residual_head(x))           3 -> B,   3 -> R
    b, r = act(K_b(b) + K_r2b(r)),     act(K_r(r) [+ K_b2r(b)])            M times (K_b2r: off in ETDS)
    y = shuffle4(tail(b)) + shuffle4(residual_tail(r))                     B -> 48,  R -> 48

The backbone kernels K_b are blocks of the registered type `backbone_block` (ECB for MegastudyEdu,
a plain conv in ETDS); every other conv is a plain 3x3. The residual stream starts as ETDS's
`init_weights` makes it: the head copies the RGB input into its first 3 channels (the other R - 3
start at 0), each K_r is the identity, K_r2b and K_b2r are 0 and the residual tail repeats each
colour 16 times, so `shuffle4(residual_tail(r))` is a nearest-neighbour x4 upsampling of `act(x)`.
The residual stream passes through the activation after every layer, exactly like the backbone:
that is what lets the two streams merge into one conv + one activation per layer. It carries the
image unchanged only because the image is non-negative and `act(v) = v` for `v >= 0`; a negative
input pixel is clipped by the residual stream's ReLUs (the ETDS assumption: inputs in [0, 1]).
Hence only activations that are the identity on [0, inf) are allowed (relu, lrelu, prelu, none).

Deploy form (`fuse()`): each layer is one 3x3 conv on B + R channels with the block kernel
[[K_b, K_r2b], [K_b2r, K_r]], the head stacks [head; residual_head] and the tail concatenates
[tail, residual_tail] along its input (the two pixel-shuffled outputs are summed, and the shuffle is
linear). This equals the training form for every input, negative ones included, since the
activations are in both. `fuse(clip=True)` adds ETDS's conv/ReLU clamp to [0, 1] (negated tail, ReLU,
1x1 conv `1 - v`, ReLU): the form ETDS deploys and counts, equal to `clamp(training output, 0, 1)`.

Online re-parameterization (`search_space.blocks.OnlineReparam`): in training mode with the switch on,
`forward` runs the merged form, one conv per layer, whose kernels `_merged_convs()` builds every step
from the live weights; `fuse()` builds its convs from the same `_merged_convs()`, so the two cannot
drift. Exact at the borders: every merged conv is a 3x3 on zero-padded inputs, as are the convs it
merges. `forward_streams` always runs the two streams apart (it also returns the residual output).

Differences from the ETDS code: the cross convs K_r2b and K_b2r carry no bias (in ETDS K_r2b's bias
is added to K_b's: two biases for one sum; the deploy conv is the same); K_b2r is optional (ETDS's
"advanced residual" ablation, off by default as in ETDS); the Feature-Enhanced Module of
MegastudyEdu (SPSR-style gradient map of the input concatenated to it) is not modelled.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.blocks import LinearBlock, OnlineReparam, get_block, make_activation
from search_space.blocks.base import zero_
from search_space.blocks.fusion import Conv, add_bias, to_conv2d
from search_space.errors import UserError
from search_space.shuffle import PixelShuffle

__all__ = ["ANCHOR_SAFE_ACTIVATIONS", "SCALE", "DualStreamSR"]

#: Upscaling factor of the network (the challenge's x4).
SCALE = 4
#: Activations with act(v) = v for v >= 0: only these let the residual stream carry the image.
ANCHOR_SAFE_ACTIVATIONS: tuple[str, ...] = ("relu", "lrelu", "prelu", "none")
_COLORS = 3


class DualStreamSR(OnlineReparam, nn.Module):
    """ETDS's training form (x4, no unshuffle): a backbone of `channels` and a residual stream of
    `residual_channels` channels, merged by `fuse()` into plain convs of `channels + residual_channels`.

    Channel convention: `channels` is the backbone width (ETDS's `num_feat - num_residual_feat`), so
    ETDS's "M5C24" x4 model (num_feat 24, num_residual_feat 3, num_block 5) is
    `DualStreamSR(channels=21, residual_channels=3, blocks=5)`; the deploy width is the sum.
    `residual_channels >= 3`: the residual stream must hold the RGB image.
    """

    def __init__(
        self,
        *,
        channels: int,
        residual_channels: int,
        blocks: int,
        backbone_block: str = "conv",
        act: str = "relu",
        bias: bool = True,
        backbone_to_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_args(channels=channels, residual_channels=residual_channels, blocks=blocks, act=act)
        b, r, out = channels, residual_channels, _COLORS * SCALE * SCALE
        self.channels = channels
        self.residual_channels = residual_channels
        self.blocks = blocks
        self.backbone_block = backbone_block
        self.act_name = act
        self.bias = bias

        block = get_block(backbone_block)
        self.head = nn.Conv2d(_COLORS, b, 3, padding=1, bias=bias)
        self.body = nn.ModuleList(block(b, b, bias=bias, act="none") for _ in range(blocks))
        self.tail = nn.Conv2d(b, out, 3, padding=1, bias=bias)
        self.residual_head = nn.Conv2d(_COLORS, r, 3, padding=1, bias=bias)
        self.residual_body = nn.ModuleList(nn.Conv2d(r, r, 3, padding=1, bias=bias) for _ in range(blocks))
        self.residual_to_backbone = nn.ModuleList(nn.Conv2d(r, b, 3, padding=1, bias=False) for _ in range(blocks))
        self.backbone_to_residual = nn.ModuleList(
            nn.Conv2d(b, r, 3, padding=1, bias=False) for _ in range(blocks if backbone_to_residual else 0)
        )
        self.residual_tail = nn.Conv2d(r, out, 3, padding=1, bias=bias)
        # One activation per layer and stream (PReLU slopes are per channel, so they merge by concatenation).
        self.acts = nn.ModuleList(make_activation(act, b) for _ in range(blocks + 1))
        self.residual_acts = nn.ModuleList(make_activation(act, r) for _ in range(blocks + 1))
        self.shuffle = PixelShuffle(SCALE)
        if blocks:  # fail here, not at deploy time
            _check_single_conv(self.body[0], backbone_block)
        self.reset_residual_stream_()

    # -- training form ------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """LR RGB (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W), not clamped."""
        if self.runs_online():
            _check_input(x)
            *layers, tail = self._merged_convs()
            for index, (weight, bias) in enumerate(layers):
                x = self._merged_act_forward(index, F.conv2d(x, weight, bias, padding=1))
            return self.shuffle(F.conv2d(x, *tail, padding=1))
        return self.forward_streams(x)[0]

    def forward_streams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(network output, residual stream's own output), both (N, 3, 4H, 4W).

        ETDS trains with `L(output, hr) + 0.5 * L(residual output, hr)` (etds_model.py,
        `interpolation_loss_weight` 0.5), so the residual stream stays a low-frequency image.
        """
        _check_input(x)
        b = self.acts[0](self.head(x))
        r = self.residual_acts[0](self.residual_head(x))
        for i, block in enumerate(self.body):
            new_b = block(b) + self.residual_to_backbone[i](r)
            new_r = self.residual_body[i](r)
            if self.backbone_to_residual:
                new_r = new_r + self.backbone_to_residual[i](b)
            b, r = self.acts[i + 1](new_b), self.residual_acts[i + 1](new_r)
        residual_out = self.shuffle(self.residual_tail(r))
        return self.shuffle(self.tail(b)) + residual_out, residual_out

    def residual_parameters(self) -> Iterator[nn.Parameter]:
        """The residual stream's parameters and the cross convs (K_r, K_r2b, K_b2r, residual head/tail).

        ETDS freezes exactly these for its first 100k of 1.6M iterations (`fixed_residual_model_iters`),
        so the backbone first learns the correction on top of the nearest-neighbour anchor.
        """
        residual = (self.residual_head, self.residual_body, self.residual_to_backbone, self.backbone_to_residual)
        for module in (*residual, self.residual_tail):
            yield from module.parameters()
        for act in self.residual_acts:
            yield from act.parameters()

    # -- initialisation -----------------------------------------------------------------------------

    @torch.no_grad()
    def reset_residual_stream_(self) -> None:
        """ETDS's `init_weights`: the residual stream carries the image, the cross convs are zero.

        Head: identity into the first 3 channels; K_r: identity; K_r2b, K_b2r: 0; residual tail:
        output channel `c * 16 + k` reads colour `c` (pixel-shuffle then places it on all 16 sub-pixels:
        nearest-neighbour x4). Biases 0. Draws no random numbers.
        """
        _set_identity_(self.residual_head, [(c, c) for c in range(_COLORS)])
        for conv in self.residual_body:
            _set_identity_(conv, [(c, c) for c in range(self.residual_channels)])
        for conv in (*self.residual_to_backbone, *self.backbone_to_residual):
            zero_(conv.weight)
        subpixels = SCALE * SCALE
        _set_identity_(self.residual_tail, [(c * subpixels + k, c) for c in range(_COLORS) for k in range(subpixels)])

    @torch.no_grad()
    def zero_output_(self) -> None:
        """Silence the backbone: the output becomes exactly the residual stream's output.

        Zeroes the backbone tail (weight and bias) and K_b2r, the only paths from the backbone to the
        output. With the residual stream as initialised, the network then outputs exactly the
        nearest-neighbour x4 upsampling of the input (for inputs >= 0): ETDS's residual stream is
        itself the anchor. The earlier backbone layers keep their weights. Draws no random numbers.
        """
        zero_(self.tail.weight, self.tail.bias)
        for conv in self.backbone_to_residual:
            zero_(conv.weight)

    # -- deploy form --------------------------------------------------------------------------------

    @torch.no_grad()
    def fuse(self, *, clip: bool = False) -> nn.Sequential:
        """The ETDS inference form: plain 3x3 convs of B + R channels with activations, tail, shuffle.

        `clip=False`: equal to the training form for every input. `clip=True`: ETDS's deployed
        `ETDSForInference` (negated tail, ReLU, 1x1 conv computing `1 - v`, ReLU), equal to
        `clamp(training output, 0, 1)`; its tail and 1x1 conv carry biases (the constant 1) even
        when `bias=False`.
        """
        *merged, (weight, bias) = self._merged_convs()
        layers: list[nn.Module] = []
        for index, conv in enumerate(merged):
            layers += [to_conv2d(conv), self._merged_act(index)]
        if clip:
            layers += _clip_tail(weight, bias)
        else:
            layers.append(to_conv2d((weight, bias)))
        layers.append(nn.PixelShuffle(SCALE))  # the deploy form: plain torch modules only
        return nn.Sequential(*layers)

    def _merged_convs(self) -> list[Conv]:
        """`(weight, bias)` of every merged conv, head first, tail last: differentiable in the weights.

        Head: [head; residual_head] stacked along the output. Layer i: the block kernel
        [[K_b, K_r2b], [K_b2r, K_r]] (K_b2r = 0 when absent). Tail: [tail, residual_tail] along the
        input (the two shuffled outputs are summed, and the shuffle is linear).
        """
        widths = (self.channels, self.residual_channels)
        weight = torch.cat([self.head.weight, self.residual_head.weight])
        convs = [(weight, _cat_bias(self.head.bias, self.residual_head.bias, sizes=widths, like=weight))]
        for i, block in enumerate(self.body):
            kb, kb_bias = block.fused_kernel()
            kr2b = self.residual_to_backbone[i].weight
            kr = self.residual_body[i].weight
            if self.backbone_to_residual:
                kb2r = self.backbone_to_residual[i].weight
            else:
                kb2r = kr.new_zeros(self.residual_channels, self.channels, 3, 3)
            weight = torch.cat([torch.cat([kb, kr2b], dim=1), torch.cat([kb2r, kr], dim=1)])
            convs.append((weight, _cat_bias(kb_bias, self.residual_body[i].bias, sizes=widths, like=weight)))
        weight = torch.cat([self.tail.weight, self.residual_tail.weight], dim=1)
        convs.append((weight, add_bias(self.tail.bias, self.residual_tail.bias)))
        return convs

    def _merged_act_forward(self, index: int, z: Tensor) -> Tensor:
        """Layer `index`'s two activations applied to the merged B + R channels, differentiably
        (PReLU: the two slope vectors concatenated; the others are the same map on every channel)."""
        backbone, residual = self.acts[index], self.residual_acts[index]
        if isinstance(backbone, nn.PReLU):
            return F.prelu(z, torch.cat([backbone.weight, residual.weight]))
        return backbone(z)

    def _merged_act(self, index: int) -> nn.Module:
        backbone, residual = self.acts[index], self.residual_acts[index]
        if isinstance(backbone, nn.PReLU):
            merged = nn.PReLU(num_parameters=self.channels + self.residual_channels)
            merged = merged.to(dtype=backbone.weight.dtype, device=backbone.weight.device)
            merged.weight.copy_(torch.cat([backbone.weight, residual.weight]))
            return merged
        return make_activation(self.act_name, self.channels + self.residual_channels)

    @property
    def deploy_channels(self) -> int:
        """Width of every fused layer (ETDS's `num_feat`)."""
        return self.channels + self.residual_channels

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, residual_channels={self.residual_channels}, blocks={self.blocks}, "
            f"backbone_block={self.backbone_block!r}, act={self.act_name!r}, bias={self.bias}, "
            f"backbone_to_residual={bool(self.backbone_to_residual)}"
        )


def _check_args(*, channels: int, residual_channels: int, blocks: int, act: str) -> None:
    if not isinstance(channels, int) or channels < 1:
        raise UserError(f"dual stream: channels (the backbone width) must be an integer >= 1, got {channels!r}")
    if not isinstance(residual_channels, int) or residual_channels < _COLORS:
        raise UserError(
            f"dual stream: residual_channels must be an integer >= {_COLORS} (the residual stream carries the "
            f"RGB image), got {residual_channels!r}"
        )
    if not isinstance(blocks, int) or blocks < 0:
        raise UserError(f"dual stream: blocks must be an integer >= 0, got {blocks!r}")
    if act not in ANCHOR_SAFE_ACTIVATIONS:
        raise UserError(
            f"dual stream: activation {act!r} would distort the residual stream, which passes through the "
            f"activation after every layer and carries the image only if act(v) = v for v >= 0; "
            f"use one of {', '.join(ANCHOR_SAFE_ACTIVATIONS)}"
        )


def _check_input(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != _COLORS:
        raise UserError(f"the dual-stream network takes RGB batches shaped (N, 3, H, W), got {tuple(x.shape)}")


def _check_single_conv(block: nn.Module, name: str) -> None:
    """A UserError unless `block` fuses to a single dense 3x3 conv (a `LinearBlock`)."""
    if not isinstance(block, LinearBlock):
        raise UserError(
            f"block {name!r} does not fuse to a single dense 3x3 conv, so it cannot be a dual-stream backbone "
            "kernel (each layer merges into one conv); use a block such as 'conv', 'rep' or 'ecb'"
        )


def _set_identity_(conv: nn.Conv2d, pairs: list[tuple[int, int]]) -> None:
    """Weight 0 except 1 at the centre tap of each (output, input) channel pair; bias 0."""
    zero_(conv.weight, conv.bias)
    centre = conv.kernel_size[0] // 2
    for out_ch, in_ch in pairs:
        conv.weight[out_ch, in_ch, centre, centre] = 1.0


def _cat_bias(first: Tensor | None, second: Tensor | None, *, sizes: tuple[int, int], like: Tensor) -> Tensor | None:
    """Stacked biases of two output groups of `sizes`; `None` if both are bias-free (else 0 stands in)."""
    if first is None and second is None:
        return None
    parts = [part if part is not None else like.new_zeros(size) for part, size in zip((first, second), sizes)]
    return torch.cat(parts)


def _clip_tail(weight: Tensor, bias: Tensor | None) -> list[nn.Module]:
    """ETDS's conv/ReLU clamp: relu(1 - relu(1 - v)) = clamp(v, 0, 1), with v = W * x + b.

    The tail conv computes `1 - v` (weight -W, bias 1 - b), then a 1x1 conv computes `1 - u`.
    """
    out_ch = weight.shape[0]
    ones = weight.new_ones(out_ch)
    tail = to_conv2d((-weight, ones - (bias if bias is not None else 0.0)))
    flip = nn.Conv2d(out_ch, out_ch, 1, dtype=weight.dtype, device=weight.device)
    flip.weight.copy_(-torch.eye(out_ch, dtype=weight.dtype, device=weight.device).view(out_ch, out_ch, 1, 1))
    flip.bias.copy_(ones)
    return [tail, nn.ReLU(), flip, nn.ReLU()]
