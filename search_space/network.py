"""The network template: `build(arch)` gives the training form, `deploy(model)` the fused form.

Input: LR RGB in [0, 1], shape (N, 3, H, W) with H and W divisible by the arch's `down_factor` u.
The network does not pad: padding would change what the border pixels see, so callers pad or crop
(540x960 is divisible by every u in {1, 2, 3, 4}, and the patch sampler draws multiples of u).
A non-divisible input raises a `UserError` instead of a shape error from deep inside torch.
Output: (N, 3, 4H, 4W), not clamped (metrics clamp and round, as the benchmark does).

Strided downsampling (PixelArtAI, Bicubic++, USTC-Noah's stride-2 conv): the head conv itself is
3 -> C with stride u, kernel `strided_kernel(u)` (the smallest odd size >= max(3, u): 3, 3, 3, 5
for u = 1..4) and padding (k - 1) / 2, so every input pixel is seen and the output is exactly
H/u x W/u. With u = 2 this is Bicubic++'s 3x3/stride-2 conv, which reproduces PixelArtAI's
9.67 GMACs (DESIGN.md table).

Global residual ("anchor", `ArchConfig.global_residual`): an x4 interpolation of x added to the
output. `nearest` and `bilinear` are `F.interpolate` (no conv: 0 counted MACs). `lanczos` is exact
Lanczos-3 (the challenge baseline, `trainers.lanczos.lanczos_upscale`) as a fixed separable conv on
the LR image plus pixel-shuffle(4), `linear` a learnable 7x7 conv 3 -> 48 plus pixel-shuffle(4)
initialised to the same filter (both checked against `lanczos_upscale` in
`tests/search_space/test_anchors.py`). `fitted3/5/7` is a frozen KxK conv 3 -> 48 plus
pixel-shuffle(4) holding the least-squares filter of the training data (`FittedAnchor`; the trainer
loads it, `trainers.linear_baseline.anchor_filters`). With any anchor the
last learned layer of the reconstruction starts at exactly zero (`zero_output_()`), so the network
scores exactly the anchor at step 0 instead of first having to learn to copy the image. Neither
the anchors nor the zeroing draw random numbers, so an anchored network's other weights equal
those of its no-anchor twin built from the same seed.

Version-2 parts (reference: survey Sec. 3.5, 3.7, 3.8, 3.9, 3.11): `InputNorm` normalises the input
of the learned path only (the anchor and the cascade's `+ x` see the image as it is; the output is
not mapped back, as in SPAN, so the last layer learns the scale); `FeatureTaps` concatenates
hierarchical features (the `fusion` conv then maps them, or the body output, to C); `ShuffleReconstruction` pixel-shuffles the
features to LR size before the last conv (RESR, USTC-Noah); the `dconv` strided head is USTC-Noah's
4x4 stride-2 decoupled conv; `residual_channels` hands the whole network to ETDS's dual stream
(`search_space.dual_stream.DualStreamSR`).

`deploy()` replaces every `Block` (and every other module with a `fuse()`, the dual stream) by its
`fuse()` in a copy of the model: the result holds plain `nn.Conv2d` layers, activations and
parameter-free glue (pixel (un)shuffle, additions, SPAB's attention; RepViT's squeeze-excite and
SAFM++'s pooled modulation keep their 1x1/depthwise convs), is in eval mode and has `requires_grad=False` everywhere. It is what is timed,
counted and exported. The anchors stay as they are (plain grouped/dense convs); they are not
folded into a neighbouring conv, since none sees the same input.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.arch import FITTED_ANCHORS, GLOBAL_RESIDUALS, SCALE, ArchConfig
from search_space.blocks import Block, get_block, make_activation
from search_space.blocks.base import zero_
from search_space.errors import UserError
from search_space.shuffle import PixelShuffle, PixelUnshuffle

__all__ = [
    "ANCHOR_KERNEL",
    "DIV2K_RGB_MEAN",
    "CascadeReconstruction",
    "DirectReconstruction",
    "FeatureTaps",
    "FittedAnchor",
    "InputNorm",
    "LanczosAnchor",
    "LinearAnchor",
    "SRNet",
    "ShuffleReconstruction",
    "UpsampleResidual",
    "build",
    "deploy",
    "fitted_anchors",
    "lanczos_taps",
    "make_anchor",
    "strided_kernel",
]

#: Lobes of the Lanczos anchor (Lanczos-3, the usual meaning of "Lanczos" and the baseline's default).
LANCZOS_LOBES = 3
#: Kernel size of the `lanczos` and `linear` anchors: the Lanczos-3 support at x4 (taps -3..3).
ANCHOR_KERNEL = 2 * LANCZOS_LOBES + 1


def strided_kernel(down_factor: int) -> int:
    """Kernel size of the strided head conv: the smallest odd size >= max(3, u)."""
    k = max(3, down_factor)
    return k if k % 2 else k + 1


def lanczos_taps(*, scale: int = SCALE, lobes: int = LANCZOS_LOBES) -> Tensor:
    """Per-phase 1-D Lanczos taps, float64 of shape (scale, 2 * lobes + 1); each row sums to 1.

    Output pixel `scale * i + p` samples the input at `i + d_p`, `d_p = (2p + 1) / (2 scale) - 1/2`
    (half-pixel centres, as `trainers.lanczos`; (2p - 3) / 8 at x4), so row p holds
    `h_p[k] = K(k - d_p)` for k = -lobes..lobes with `K(x) = sinc(x) sinc(x / lobes)` on |x| < lobes,
    normalised to sum 1. Applied as cross-correlation, tap k multiplies input pixel i + k.
    """
    k = torch.arange(-lobes, lobes + 1, dtype=torch.float64)
    d = (2 * torch.arange(scale, dtype=torch.float64) + 1) / (2 * scale) - 0.5
    x = k[None, :] - d[:, None]
    taps = torch.where(x.abs() < lobes, torch.sinc(x) * torch.sinc(x / lobes), torch.zeros_like(x))
    return taps / taps.sum(dim=1, keepdim=True)


def _fixed_conv(weight: Tensor, *, in_ch: int, groups: int, padding: tuple[int, int]) -> nn.Conv2d:
    """A replicate-padded, bias-free `nn.Conv2d` whose weight is a buffer, not a parameter.

    Why a buffer: the taps are a fixed filter, so they must never reach an optimizer (or weight
    decay), yet they belong in the state dict and follow `.to()`/`.half()`. Plain `nn.Conv2d` (not
    a subclass) keeps every conv counter (thop, FlopCounterMode) and exporter working unchanged.
    """
    out_ch, _, kh, kw = weight.shape
    # skip_init: no random init that would be overwritten (and no random numbers drawn).
    conv = nn.utils.skip_init(
        nn.Conv2d, in_ch, out_ch, (kh, kw), padding=padding, padding_mode="replicate", groups=groups, bias=False
    )
    del conv.weight
    conv.register_buffer("weight", weight.to(torch.get_default_dtype()))
    return conv


class LanczosAnchor(nn.Module):
    """Fixed Lanczos-3 x4 upsampling: 7x1 conv 3 -> 12, 1x7 conv 12 -> 48 (grouped), pixel-shuffle(4).

    Separable: the vertical pass gives channel 4c + p (row phase p of colour c), the horizontal pass
    channel 16c + 4p + q, which is PixelShuffle(4)'s order for HR pixel (4i + p, 4j + q). Replicate
    padding is the reference's clamped sampling (`trainers.lanczos`: taps outside the image land on
    the edge pixel), so borders match too. 518,400 x (12 + 48) x 7 = 0.218 GMACs at 540x960, the
    cheapest exact form (the 2-D grouped 7x7 costs 1.22 G). No parameters: the taps are buffers.
    """

    def __init__(self) -> None:
        super().__init__()
        taps = lanczos_taps()  # (4, 7), row = phase
        phases, size = taps.shape
        pad = size // 2
        vertical = taps.repeat(3, 1).view(3 * phases, 1, size, 1)  # channel 4c + p: h_p
        horizontal = taps.repeat(3 * phases, 1).view(3 * phases * phases, 1, 1, size)  # 16c + 4p + q: h_q
        self.vertical = _fixed_conv(vertical, in_ch=3, groups=3, padding=(pad, 0))
        self.horizontal = _fixed_conv(horizontal, in_ch=3 * phases, groups=3 * phases, padding=(0, pad))
        self.shuffle = PixelShuffle(phases)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.horizontal(self.vertical(x)))


class LinearAnchor(nn.Module):
    """Learnable x4 linear upsampling: a dense 7x7 conv 3 -> 48 (replicate padding), pixel-shuffle(4).

    Initialised to the Lanczos-3 filter (`W[16c + 4p + q, c] = h_p (outer) h_q`, zeros across
    colours, bias 0), so it starts equal to `LanczosAnchor`, borders included, and training can
    move it to the least-squares linear filter for the data (README, "Metrics": such a filter
    alone beats Lanczos by ~0.1 dB). 518,400 x 3 x 48 x 49 = 3.66 GMACs at 540x960.
    """

    def __init__(self, *, bias: bool) -> None:
        super().__init__()
        taps = lanczos_taps()
        phases, size = taps.shape
        # skip_init: the Lanczos init below replaces the random one, and no random numbers are drawn.
        self.conv = nn.utils.skip_init(
            nn.Conv2d, 3, 3 * phases * phases, size, padding=size // 2, padding_mode="replicate", bias=bias
        )
        kernel = torch.einsum("pi,qj->pqij", taps, taps).reshape(phases * phases, size, size)
        weight = torch.zeros(3 * phases * phases, 3, size, size, dtype=torch.float64)
        for c in range(3):
            weight[c * phases * phases : (c + 1) * phases * phases, c] = kernel
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            zero_(self.conv.bias)
        self.shuffle = PixelShuffle(phases)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


class FittedAnchor(nn.Module):
    """A frozen x4 linear filter fitted to the data: dense KxK conv 3 -> 48 with a bias (replicate
    padding), pixel-shuffle(4); the deploy form of `trainers.linear_baseline.LinearFilter`.

    Why frozen: a learnable anchor started at the least-squares filter is pushed 0.7-4.8 dB below it
    by Adam's first steps and ends below its start after 1000 (measured on builtin: README, "The
    search space", fitted anchors); frozen, a design starts at the best linear filter and the learned
    path can only add to it. Weights and bias are buffers (never given to an optimizer, yet in the
    state dict and moved by `.to()`/`.half()`), zero until `load_filter`; the bias is kept whatever
    the network's `bias` flag (it is part of the fixed filter, not a learned bias). `fit_key` names the
    fit (the training set, QPs and kernel) and travels in the state dict as extra state. The conv is a
    plain `nn.Conv2d`, so thop and the exporters see an ordinary conv: 518,400 x 3 x 48 x K^2 MACs at
    540x960 (3.66 G at K = 7, 1.87 G at 5, 0.67 G at 3).
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise UserError(f"a fitted anchor's kernel must be an odd size (3, 5 or 7), got {kernel}")
        out = 3 * SCALE * SCALE
        self.kernel = kernel
        self.conv = _fixed_conv(torch.zeros(out, 3, kernel, kernel), in_ch=3, groups=1, padding=(kernel // 2,) * 2)
        del self.conv.bias  # the bias-free conv's `bias = None` parameter slot, replaced by a buffer
        self.conv.register_buffer("bias", torch.zeros(out, dtype=torch.get_default_dtype()))
        self.shuffle = PixelShuffle(SCALE)
        self.fit_key: str | None = None

    @torch.no_grad()
    def load_filter(self, weight: Tensor, bias: Tensor, *, key: str) -> None:
        """Install a fitted filter (weight 48x3xKxK, bias 48, any float dtype; rounded once to the
        buffers' dtype) and name it."""
        if tuple(weight.shape) != tuple(self.conv.weight.shape) or tuple(bias.shape) != tuple(self.conv.bias.shape):
            raise ValueError(f"FittedAnchor(K={self.kernel}): filter of shape {tuple(weight.shape)} / {tuple(bias.shape)}")
        self.conv.weight.copy_(weight)
        self.conv.bias.copy_(bias)
        self.fit_key = key

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))

    def get_extra_state(self) -> dict[str, str | None]:
        return {"fit_key": self.fit_key}

    def set_extra_state(self, state: dict[str, str | None]) -> None:
        self.fit_key = state.get("fit_key")

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, fit_key={self.fit_key}"


def fitted_anchors(model: nn.Module) -> list[FittedAnchor]:
    """The `FittedAnchor` modules of `model` (at most one in a template network)."""
    return [m for m in model.modules() if isinstance(m, FittedAnchor)]


class UpsampleResidual(nn.Module):
    """The global residual: x upsampled x4 by `mode` ('nearest' = ANUNet's anchor, or 'bilinear').

    Both are `F.interpolate`, elementwise work that the conv-MAC count does not include (0 MACs;
    bilinear written as a grouped 3x3 conv would be 0.22 GMACs at 540x960, nearest is a copy).
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise UserError(
                f"global residual mode {mode!r}; UpsampleResidual does 'nearest' or 'bilinear' "
                "(make_anchor builds every ArchConfig.global_residual)"
            )
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=SCALE, mode="nearest")
        return F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class DirectReconstruction(nn.Module):
    """conv C -> 3*(4u)^2 -> pixel-shuffle(4u)."""

    def __init__(self, conv: nn.Module, factor: int) -> None:
        super().__init__()
        self.conv = conv
        self.shuffle = PixelShuffle(factor)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(features))

    def zero_output_(self) -> None:
        """Make the reconstruction output exactly 0 (the tail conv is the last learned layer)."""
        if isinstance(self.conv, Block):
            self.conv.zero_output_()
        else:
            zero_(self.conv.weight, self.conv.bias)


class CascadeReconstruction(nn.Module):
    """CASR: conv C -> 3u^2 -> pixel-shuffle(u) -> + x -> conv 3 -> 48 -> pixel-shuffle(4)."""

    def __init__(self, to_lr: nn.Module, to_hr: nn.Module, down_factor: int) -> None:
        super().__init__()
        self.to_lr = to_lr
        self.shuffle_lr = PixelShuffle(down_factor)
        self.to_hr = to_hr
        self.shuffle_hr = PixelShuffle(SCALE)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.shuffle_hr(self.to_hr(self.shuffle_lr(self.to_lr(features)) + x))

    def zero_output_(self) -> None:
        """Make the reconstruction output exactly 0: only the last conv (3 -> 48) is silenced."""
        self.to_hr.zero_output_()


class ShuffleReconstruction(CascadeReconstruction):
    """RESR / USTC-Noah: conv C -> u^2 L -> pixel-shuffle(u) -> conv L -> 48 -> pixel-shuffle(4).

    The cascade without its `+ x`, with L = `lr_channels` channels at LR size: the last conv runs
    there, which is how RESR's 7.0171 GMACs and USTC-Noah's 8.56 G come about (survey Sec. 3.7,
    3.9; `search_space.presets`). `zero_output_()` silences the last conv (L -> 48)."""

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        return self.shuffle_hr(self.to_hr(self.shuffle_lr(self.to_lr(features))))


#: DIV2K's RGB mean, which SPAN subtracts before scaling by 255 (hongyuanyu/SPAN span_arch.py).
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


class InputNorm(nn.Module):
    """The learned path's input normalisation: 'signed' = 2x - 1 (RVSR's [-1, 1]); 'mean255' =
    (x - DIV2K mean) * 255 (SPAN). Parameter- and buffer-free (an elementwise op, 0 MACs)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("signed", "mean255"):
            raise UserError(f"input normalisation {mode!r}; InputNorm does 'signed' or 'mean255'")
        self.mode = mode
        # The mean as a tensor per (dtype, device), made once: not per training step (on a GPU that
        # would be a host-to-device copy each step), and not a buffer, whose dtype casts would round
        # the decimals (a float32 buffer cast to float64 is not the float64 mean).
        self._means: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "signed":
            return 2.0 * x - 1.0
        key = (x.dtype, x.device)
        mean = self._means.get(key)
        if mean is None:
            mean = self._means[key] = torch.tensor(DIV2K_RGB_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) * 255.0

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class FeatureTaps(nn.Module):
    """Runs the body and concatenates hierarchical features (the network's `fusion` conv follows).

    'all':  Concat(O0, O1, ..., On), O0 the head output and Oi block i's output;
    'span': Concat(O0, conv(On), O1, inner(On)) in SPAN's order (hongyuanyu/SPAN span_arch.py:
            `conv_cat(cat([out_feature, conv_2(out_b6), out_b1, out_b5_2]))`, where out_b5_2 is the
            last block's first conv output after its activation: SPAN's in-place SiLU overwrites it
            before it is returned; the survey's Sec. 3.8 formula writes O5 there). `conv` is a 3x3
            C -> C (SPAN's conv_2 / the survey's W_f1)."""

    def __init__(self, mode: str, *, last_conv: nn.Module | None) -> None:
        super().__init__()
        self.mode = mode
        self.last_conv = last_conv

    def forward(self, head: Tensor, body: nn.Sequential) -> Tensor:
        """The concatenated features; `body` is the network's (not held here: no weight stored twice)."""
        blocks = list(body)
        if self.mode == "all":
            taps = [head]
            for block in blocks:
                taps.append(block(taps[-1]))
        else:
            out = head
            first = None
            for block in blocks[:-1]:
                out = block(out)
                if first is None:
                    first = out
            last, inner = blocks[-1].forward_with_inner(out)
            taps = [head, self.last_conv(last), last if first is None else first, inner]
        return torch.cat(taps, dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class SRNet(nn.Module):
    """One instance of the template; `arch` is kept on the module so any copy knows what it is."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        if not isinstance(arch, ArchConfig):
            raise TypeError(f"SRNet needs an ArchConfig, got {type(arch).__name__}")
        self.arch = arch
        u, c, bias, act = arch.down_factor, arch.channels, arch.bias, arch.activation
        end = get_block(arch.end_block)

        if arch.residual_channels:
            self._build_dual_stream(arch)
            return
        self.norm = InputNorm(arch.input_norm) if arch.input_norm != "none" else None
        head_act = act if arch.head_activation else "none"
        if arch.downsample == "strided" and arch.strided_head == "dconv":
            from search_space.blocks.dconv import DecoupledStridedConv  # noqa: PLC0415

            self.down: nn.Module = nn.Identity()
            self.head: nn.Module = DecoupledStridedConv(3, c, kernel=4, stride=2, bias=bias, act=head_act)
        elif arch.downsample == "strided":
            k = strided_kernel(u)
            self.down = nn.Identity()
            self.head = nn.Sequential(
                nn.Conv2d(3, c, k, stride=u, padding=(k - 1) // 2, bias=bias), make_activation(head_act, c)
            )
        else:
            self.down = PixelUnshuffle(u) if u > 1 else nn.Identity()
            self.head = end(3 * u * u, c, bias=bias, act=head_act)

        body = get_block(arch.block)
        self.body = nn.Sequential(*(body(c, c, bias=bias, act=act) for _ in range(arch.blocks)))
        self.body_skip = arch.body_skip
        self.taps: FeatureTaps | None = None
        if arch.feature_taps != "last":
            last_conv = end(c, c, bias=bias, act="none") if arch.feature_taps == "span" else None
            self.taps = FeatureTaps(arch.feature_taps, last_conv=last_conv)
        tapped = arch.tapped_width
        k = arch.fusion_kernel
        self.fusion: nn.Module | None = None
        if k == 3:
            self.fusion = end(tapped, c, bias=bias, act="none")
        elif k == 1:
            self.fusion = nn.Conv2d(tapped, c, 1, bias=bias)
        c = arch.features_width  # what the reconstruction receives

        if arch.reconstruction == "cascade":
            self.recon: nn.Module = CascadeReconstruction(
                end(c, 3 * u * u, bias=bias, act="none"), end(3, 3 * SCALE * SCALE, bias=bias, act="none"), u
            )
        elif arch.reconstruction == "shuffle":
            lr = arch.lr_channels
            self.recon = ShuffleReconstruction(
                end(c, u * u * lr, bias=bias, act="none"), end(lr, 3 * SCALE * SCALE, bias=bias, act="none"), u
            )
        else:
            out = 3 * (SCALE * u) ** 2
            conv = end(c, out, bias=bias, act="none") if arch.tail_kernel == 3 else nn.Conv2d(c, out, 1, bias=bias)
            self.recon = DirectReconstruction(conv, SCALE * u)

        # Built last and without random numbers: the other weights are those of the no-anchor twin.
        self.residual = make_anchor(arch.global_residual, bias=bias)
        if self.residual is not None:
            self.recon.zero_output_()  # start exactly at the anchor

    def _build_dual_stream(self, arch: ArchConfig) -> None:
        from search_space.dual_stream import DualStreamSR  # noqa: PLC0415

        self.dual = DualStreamSR(
            channels=arch.channels,
            residual_channels=arch.residual_channels,
            blocks=arch.blocks,
            backbone_block=arch.block,
            act=arch.activation,
            bias=arch.bias,
        )
        # Its residual stream is a nearest-neighbour anchor: like every anchored network of the
        # template, it starts exactly there (the backbone's tail at zero), not at ETDS's random init.
        self.dual.zero_output_()

    def forward(self, x: Tensor) -> Tensor:
        u = self.arch.down_factor
        if x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"the network takes RGB batches shaped (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % u or x.shape[-1] % u:
            raise UserError(
                f"input {x.shape[-2]}x{x.shape[-1]} is not divisible by down_factor {u}; "
                f"pad or crop it to a multiple of {u} first"
            )
        if self.arch.residual_channels:
            return self.dual(x)
        head = self.head(self.down(x if self.norm is None else self.norm(x)))
        if self.taps is not None:
            features = self.taps(head, self.body)
        else:
            features = self.body(head)
            if self.body_skip:
                features = features + head
        if self.fusion is not None:
            features = self.fusion(features)
        y = self.recon(features, x)
        if self.residual is not None:
            y = y + self.residual(x)
        return y

    def extra_repr(self) -> str:
        return f"arch={self.arch.summary()!r} ({self.arch.arch_hash})"


def make_anchor(mode: str, *, bias: bool) -> nn.Module | None:
    """The global-residual module for `ArchConfig.global_residual` (`None` for 'none').

    `bias` only matters for 'linear', the one anchor with learned weights (a fitted anchor keeps
    its filter's bias). A fitted anchor is built empty (zeros): the trainer loads the data's filter.
    """
    if mode == "none":
        return None
    if mode in FITTED_ANCHORS:
        return FittedAnchor(FITTED_ANCHORS[mode])
    if mode == "lanczos":
        return LanczosAnchor()
    if mode == "linear":
        return LinearAnchor(bias=bias)
    if mode in ("nearest", "bilinear"):
        return UpsampleResidual(mode)
    raise UserError(f"global residual {mode!r}; choose one of {', '.join(map(repr, GLOBAL_RESIDUALS))}")


def build(arch: ArchConfig) -> SRNet:
    """The training form of `arch` (float32, CPU, train mode, fresh initialization)."""
    return SRNet(arch)


def _fuse_blocks(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, Block) or callable(getattr(child, "fuse", None)):
            setattr(module, name, child.fuse())
        else:
            _fuse_blocks(child)


@torch.no_grad()
def deploy(model: nn.Module) -> nn.Module:
    """A fused copy of `model`: every `Block` replaced by its `fuse()`, eval mode, no gradients.

    `model` itself is left unchanged (still trainable). Deploying a deployed model is a no-op copy.
    The kernel arithmetic runs in float64 and the result is cast back to the model's dtype, so a
    float32 deploy model holds the correctly rounded fused weights (fusing in float32 left about
    3x the error on a six-SPAB SPAN: 3e-7 vs 1e-7 relative, measured on random weights).
    """
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    work = copy.deepcopy(model)
    if dtype is not None and dtype != torch.float64:
        work.double()
    if isinstance(work, Block):
        fused = work.fuse()
    else:
        fused = work
        _fuse_blocks(fused)
    if dtype is not None and dtype != torch.float64:
        fused.to(dtype)
    fused.eval()
    fused.requires_grad_(False)
    return fused
