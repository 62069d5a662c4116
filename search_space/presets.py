"""Published AIS 2024 Real-Time SR designs as presets, with their Table 1 numbers.

Sources: the challenge survey (Conde et al., "Real-Time 4K Super-Resolution of Compressed AVIF Images.
AIS 2024 Challenge Survey", arXiv:2404.16484: Table 1 and Sec. 3) and the teams' public code where it
exists (each preset's builder names its repository and file). Status of
each preset's architecture:

- "exact": the team's public code read and expressed layer for layer (ANUNet, CASR, RVSR, VPEG-S's
  SAFMN++); its deploy cost reproduces Table 1;
- "fitted": no code; a config of the template that follows the survey's description and matches
  Table 1's MACs (within 2%) and params (within its rounding), found by arithmetic. Fits are not
  unique: they are search anchors, not facts (RESR's fit reproduces the team's own 7.0171 GMACs,
  USTC-Noah's is the one fit of its Fig. 16 layout at Table 1's precision);
- "approximate": the design is expressed as closely as the template and the public record allow,
  but its cost misses Table 1 (the reason is in the note, and `python -m search_space.presets`
  prints it): VPEG-R's RepRB is unpublished, XiaomiMM's SPAN has no width within 2%, MegastudyEdu's
  gradient input module and ETDS's deploy clamp are not modelled.

Table 1 numbers are the survey's: MACs in G and params in M at a 960x540 input, runtime in ms on
an RTX 4090 (FP16), delta = PSNR-Y gain over Lanczos averaged over QP31/QP63, PSNR-Y in dB.
Unknown values (URPNet's score and delta) are None.

`python -m search_space.presets` prints every preset's deploy MACs/params at 540x960 next to
Table 1 and the relative errors, then the reason of every approximate one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from search_space.arch import ArchConfig
from search_space.errors import UserError

__all__ = ["STATUSES", "Preset", "get_preset", "list_presets", "main", "register_preset"]

STATUSES: tuple[str, ...] = ("exact", "fitted", "approximate")

_PRESETS: dict[str, Callable[[], Preset]] = {}


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A published design: its architecture, how sure we are of it, and its Table 1 row."""

    name: str
    arch: ArchConfig
    status: str
    team: str
    section: str
    macs_g: float
    params_m: float
    runtime_ms: float
    delta_db: float | None
    psnr_y_qp31: float
    psnr_y_qp63: float
    score: float | None
    note: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"preset {self.name!r}: status {self.status!r} is not one of {STATUSES}")


def register_preset(fn: Callable[[], Preset]) -> Callable[[], Preset]:
    """Function decorator: register a zero-argument factory of a `Preset` under the function's name."""
    name = fn.__name__
    if name in _PRESETS:
        raise RuntimeError(f"preset {name!r} registered twice")
    _PRESETS[name] = fn
    return fn


def list_presets() -> list[str]:
    """Names of all registered presets, sorted."""
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`, with the valid names in the error if there is none."""
    try:
        factory = _PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; available: {', '.join(list_presets())}") from None
    preset = factory()
    if preset.name != name:
        raise RuntimeError(f"preset factory {name!r} returned a preset named {preset.name!r}")
    return preset


# -- exact ------------------------------------------------------------------------------------------


@register_preset
def anunet() -> Preset:
    return Preset(
        name="anunet",
        arch=ArchConfig(
            down_factor=2,
            channels=28,
            blocks=3,
            block="conv",
            activation="gelu",
            end_block="ecb",
            global_residual="nearest",
        ),
        status="exact",
        team="LeRTSR (Lenovo)",
        section="3.6",
        macs_g=9.40,
        params_m=0.072,
        runtime_ms=1.642,
        delta_db=0.545,
        psnr_y_qp31=33.66,
        psnr_y_qp63=29.30,
        score=22.77,
        note=(
            "zhoumenghan/AIS2024_ANUNet LeRTSR.py (deploy): unshuffle 2, ECB 12->28 + GELU, 3 x conv 28->28 + GELU, "
            "ECB 28->192, nearest (repeat_interleave) anchor; its PS(2)+PS(4) is PS(8) up to a channel permutation. "
            "The NRB training form of the body is not modelled (body trains as plain convs)."
        ),
    )


@register_preset
def casr() -> Preset:
    return Preset(
        name="casr",
        arch=ArchConfig(
            down_factor=3,
            channels=32,
            blocks=1,
            block="rep_casr",
            activation="gelu",
            reconstruction="cascade",
            bias=False,
            end_block="rep_casr",
        ),
        status="exact",
        team="Z6",
        section="3.4",
        macs_g=2.10,
        params_m=0.026,
        runtime_ms=0.468,
        delta_db=0.205,
        psnr_y_qp31=33.11,
        psnr_y_qp63=29.17,
        score=33.70,
        note=(
            "rlghksdbs/CASR RepNetworkPlain.py: unshuffle 3, 27->32 GELU, 1 x 32->32 GELU, 32->27, PS3, +x, "
            "3->48, PS4; "
            "every conv a RepBlockV5 in training; bias off as in the final (submitted) stage"
        ),
    )


@register_preset
def rvsr() -> Preset:
    return Preset(
        name="rvsr",
        arch=ArchConfig(
            channels=16,
            blocks=8,
            block="repvit",
            activation="gelu",
            input_norm="signed",
            head_activation=False,
            body_skip=True,
            fusion_kernel=3,
            tail_kernel=1,
            global_residual="bilinear",
            end_block="rep_rvsr",
        ),
        status="exact",
        team="XJTU-AIR",
        section="3.5",
        macs_g=15.6,
        params_m=0.033,
        runtime_ms=7.542,
        delta_db=0.720,
        psnr_y_qp31=33.88,
        psnr_y_qp63=29.43,
        score=12.00,
        note=(
            "huai-chang/RVSR models/train_arch.py (N=16): conv 3->16 (no activation), 8 x RepViT (dense RepConv token "
            "mixer, squeeze-excite, GELU FFN), + head, RepConv 16->16, conv 1x1 16->48, PS4, + bilinear x4 of the "
            "input; the trainer feeds [-1, 1] (our input_norm 'signed'; RVSR adds the bilinear image in [-1, 1], "
            "which is ours up to a factor 1/2 on the learned path). The head trains as a RepConv here (plain in RVSR)"
        ),
    )


@register_preset
def vpeg_s() -> Preset:
    return Preset(
        name="vpeg_s",
        arch=ArchConfig(
            channels=32,
            blocks=2,
            block="safmpp",
            activation="gelu",
            head_activation=False,
            body_skip=True,
            bias=False,
        ),
        status="exact",
        team="VPEG (NJUST)",
        section="3.3",
        macs_g=34.2,
        params_m=0.066,
        runtime_ms=4.251,
        delta_db=0.735,
        psnr_y_qp31=33.93,
        psnr_y_qp63=29.41,
        score=16.15,
        note=(
            "SAFMN++ (sunny2109/SAFMN AIS2024-RTSR, SAFMN_VIS24(dim=32, n_blocks=2, ffn_scale=1.5)): conv 3->32, "
            "2 x [SimpleSAFM -> CCM], + head, conv 32->48, PS4, bias-free; 34.1587 G / 66,176 as the team's "
            "Table 3 (the survey's VPEG-S row)"
        ),
    )


# -- fitted ---------------------------------------------------------------------------------------


@register_preset
def reptcn() -> Preset:
    return Preset(
        name="reptcn",
        arch=ArchConfig(channels=16, blocks=1, block="rep", activation="relu", bias=False),
        status="fitted",
        team="CameraAI",
        section="3.1",
        macs_g=5.02,
        params_m=0.010,
        runtime_ms=0.685,
        delta_db=0.355,
        psnr_y_qp31=33.31,
        psnr_y_qp63=29.27,
        score=30.91,
        note="three bias-free convs with ReLU, the middle one a RepBlock in training (survey 3.1); C=16 fitted",
    )


@register_preset
def c3() -> Preset:
    return Preset(
        name="c3",
        arch=ArchConfig(channels=32, blocks=1, block="conv", activation="relu"),
        status="fitted",
        team="C3 (Xiaomi)",
        section="3.8",
        macs_g=12.4,
        params_m=0.024,
        runtime_ms=1.932,
        delta_db=0.500,
        psnr_y_qp31=33.52,
        psnr_y_qp63=29.35,
        score=20.35,
        note="three-layer CNN, 12.39 GFLOPs / 0.024 M (survey 3.8); C=32 fitted; activation unknown",
    )


@register_preset
def basicvision() -> Preset:
    return Preset(
        name="basicvision",
        arch=ArchConfig(channels=16, blocks=2, block="ecb", activation="prelu"),
        status="fitted",
        team="BasicVision (China Mobile)",
        section="3.10",
        macs_g=6.20,
        params_m=0.012,
        runtime_ms=0.874,
        delta_db=0.350,
        psnr_y_qp31=33.30,
        psnr_y_qp63=29.27,
        score=27.27,
        note="conv, 2 re-parameterization (ECB) modules, conv to 48, PS4 (survey 3.10); C=16 fitted; PReLU as ECBSR",
    )


@register_preset
def cmvg() -> Preset:
    return Preset(
        name="cmvg",
        arch=ArchConfig(channels=14, blocks=2, block="ecb", activation="prelu"),
        status="fitted",
        team="CMVG (China Mobile)",
        section="3.10",
        macs_g=5.16,
        params_m=0.010,
        runtime_ms=0.833,
        delta_db=0.330,
        psnr_y_qp31=33.27,
        psnr_y_qp63=29.26,
        score=27.55,
        note="KREN student: two convs and two ECBs with 14 feature maps (survey 3.10); distillation not modelled",
    )


@register_preset
def ivp() -> Preset:
    return Preset(
        name="ivp",
        arch=ArchConfig(channels=14, blocks=3, block="ecb", activation="prelu"),
        status="fitted",
        team="IVP (China Mobile)",
        section="3.10",
        macs_g=6.07,
        params_m=0.011,
        runtime_ms=0.905,
        delta_db=0.365,
        psnr_y_qp31=33.33,
        psnr_y_qp63=29.27,
        score=27.08,
        note=(
            "RDEN: five convs, three of them ECBs, x4 head (survey 3.10); the x2 auxiliary head is train-only; "
            "C=14 fitted"
        ),
    )


@register_preset
def pixelartai() -> Preset:
    return Preset(
        name="pixelartai",
        arch=ArchConfig(downsample="strided", down_factor=2, channels=32, blocks=2, block="ecb", activation="relu"),
        status="fitted",
        team="PixelArtAI (MangoTV)",
        section="3.1",
        macs_g=9.68,
        params_m=0.075,
        runtime_ms=0.623,
        delta_db=0.395,
        psnr_y_qp31=33.40,
        psnr_y_qp63=29.26,
        score=33.32,
        note="stride-2 conv downsampling, two ECBs, conv + PS8 (survey 3.1); C=32 fitted; activation unknown",
    )


@register_preset
def lanczospp() -> Preset:
    return Preset(
        name="lanczospp",
        arch=ArchConfig(
            down_factor=3, channels=24, blocks=1, block="rep_expand", activation="relu", tail_kernel=1, bias=False
        ),
        status="fitted",
        team="ZXVIP (ZTE)",
        section="3.2",
        macs_g=1.25,
        params_m=0.022,
        runtime_ms=0.399,
        delta_db=0.070,
        psnr_y_qp31=32.88,
        psnr_y_qp63=29.13,
        score=33.24,
        note=(
            "Lanczos++: unshuffle 3, 1x1-expand-x4 RepBlock, no bias, 1x1 reconstruction conv, PS12 (survey 3.2); "
            "C=24 and 1 block fitted"
        ),
    )


@register_preset
def urpnet() -> Preset:
    return Preset(
        name="urpnet",
        arch=ArchConfig(
            down_factor=2, channels=16, blocks=2, block="rep", activation="relu", tail_kernel=1, bias=False
        ),
        status="fitted",
        team="402Lab (KETI)",
        section="3.12",
        macs_g=1.24,
        params_m=0.009,
        runtime_ms=0.621,
        delta_db=None,
        psnr_y_qp31=32.64,
        psnr_y_qp63=29.07,
        score=None,
        note="unshuffle, RepConv body, 1x1 pointwise last layer (survey 3.12); C=16, 2 blocks and bias-free fitted",
    )


@register_preset
def resr() -> Preset:
    return Preset(
        name="resr",
        arch=ArchConfig(
            down_factor=2,
            channels=32,
            blocks=3,
            block="rep_edge",
            activation="relu",
            reconstruction="shuffle",
            lr_channels=8,
            end_block="rep_edge",
        ),
        status="fitted",
        team="FZUQXT",
        section="3.7",
        macs_g=7.04,
        params_m=0.044,
        runtime_ms=0.914,
        delta_db=0.455,
        psnr_y_qp31=33.50,
        psnr_y_qp63=29.28,
        score=28.68,
        note=(
            "pixel unshuffle, edge RepConv blocks (3x3, 1x1 expand/compress, Sobel, Laplacian), pixel shuffle (survey "
            "3.7, Fig. 12-13). Fitted: unshuffle 2, conv 12->32, 3 x 32->32, conv 32->32, PS2 to 8 channels at LR "
            "size, conv 8->48, PS4 = 7.0171 GMACs, the team's own figure to 4 decimals, and 43,984 params; activation unknown (ReLU)"
        ),
    )


@register_preset
def ustc_noah() -> Preset:
    return Preset(
        name="ustc_noah",
        arch=ArchConfig(
            downsample="strided",
            down_factor=2,
            strided_head="dconv",
            channels=32,
            blocks=2,
            block="dconv",
            activation="relu",
            reconstruction="shuffle",
            lr_channels=16,
            bias=False,
            end_block="dconv",
        ),
        status="fitted",
        team="USTC Noah Terminal Vision",
        section="3.9",
        macs_g=8.56,
        params_m=0.045,
        runtime_ms=1.193,
        delta_db=0.485,
        psnr_y_qp31=33.52,
        psnr_y_qp63=29.32,
        score=25.63,
        note=(
            "Fig. 16: one 4x4 stride-2 DConv (3->32), three 3x3 DConvs at half size (32->32, 32->32, 32->64), "
            "PS2 to 16 channels at LR size, one DConv 16->48, PS4 (survey 3.9; the text says four DConvs, the "
            "caption three). Widths fitted, bias-free: 8.5598 G / 45,312, the only fit at Table 1's precision "
            "(with biases 45,520). DConv's branch weighting is our reading of the text (no code is public); "
            "activation unknown (ReLU)"
        ),
    )


# -- approximate ----------------------------------------------------------------------------------


@register_preset
def vpeg_r() -> Preset:
    return Preset(
        name="vpeg_r",
        arch=ArchConfig(down_factor=2, channels=6, blocks=3, block="rep", activation="relu"),
        status="approximate",
        team="VPEG (NJUST)",
        section="3.3",
        macs_g=1.56,
        params_m=0.012,
        runtime_ms=0.692,
        delta_db=0.100,
        psnr_y_qp31=32.94,
        psnr_y_qp63=29.13,
        score=25.77,
        note=(
            "unshuffle, conv, 3 RepRBs, conv + pixel shuffle (survey 3.3); RepRB is unpublished, so `rep` stands in; "
            "C=6 is the only fit of that topology (1.55 G / 0.0122 M)"
        ),
    )


@register_preset
def xiaomimm() -> Preset:
    return Preset(
        name="xiaomimm",
        arch=ArchConfig(
            channels=11,
            blocks=6,
            block="spab",
            activation="silu",
            input_norm="mean255",
            head_activation=False,
            feature_taps="span",
            fusion_kernel=1,
            end_block="conv3xc",
        ),
        status="approximate",
        team="XiaomiMM",
        section="3.8",
        macs_g=13.3,
        params_m=0.026,
        runtime_ms=3.010,
        delta_db=0.690,
        psnr_y_qp31=33.85,
        psnr_y_qp63=29.40,
        score=18.60,
        note=(
            "SPAN's topology exactly (hongyuanyu/SPAN span_arch.py: (x - mean) * 255, Conv3XC head without "
            "activation, SPABs, Concat(head, conv(last), first, the last block's activated first conv) + 1x1 fusion, "
            "conv + PS4); "
            "no width fits Table 1 within 2%: the text says 2 SPABs (C=16: 12.70 G, -4.5%; C=17: 14.08 G), "
            "the formula taps O5 and O6 (6 SPABs); 6 SPABs at C=11 is the nearest, +2.2% MACs, params within rounding"
        ),
    )


@register_preset
def megastudy() -> Preset:
    return Preset(
        name="megastudy",
        arch=ArchConfig(channels=21, residual_channels=3, blocks=5, block="ecb", activation="relu"),
        status="approximate",
        team="MegastudyEdu Vision AI",
        section="3.11",
        macs_g=20.7,
        params_m=0.040,
        runtime_ms=3.109,
        delta_db=0.210,
        psnr_y_qp31=33.01,
        psnr_y_qp63=29.28,
        score=13.12,
        note=(
            "ETDS (ECNUSR/ETDS, M5C24: 21 backbone + 3 residual channels, 5 layers) with ECB backbone kernels "
            "(survey 3.11). Not modelled: the Feature-Enhanced Module (an SPSR gradient map of the input concatenated "
            "to it: +648 MACs/px) and ETDS's deploy clamp (1x1 48->48: +2,304 MACs/px); with both, the arithmetic "
            "gives 20.678 G / 40,128, their Table 6's 20.677 G / 0.0401 M"
        ),
    )


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    """Print every preset's deploy MACs/params at 540x960 next to Table 1, with relative errors."""
    from search_space.cost import DEFAULT_HW, cost  # noqa: PLC0415  (cost imports thop lazily)

    import argparse

    stream = out if out is not None else sys.stdout
    argparse.ArgumentParser(
        prog="python -m search_space.presets",
        description="Published AIS 2024 designs in our template: deploy MACs/params at 540x960 vs the survey's Table 1.",
    ).parse_args(argv)
    h, w = DEFAULT_HW
    header = (
        f"{'preset':<12} {'status':<11} {'MACs G':>8} {'Table1':>7} {'err':>7}   "
        f"{'params M':>8} {'Table1':>7} {'err':>7}   arch"
    )
    stream.write(f"Deploy-model cost at {h}x{w} input (conv MACs, all parameters) vs AIS 2024 Table 1\n")
    stream.write(header + "\n" + "-" * len(header) + "\n")
    for name in list_presets():
        preset = get_preset(name)
        c = cost(preset.arch, (h, w))
        macs_err = (c.gmacs - preset.macs_g) / preset.macs_g
        params_err = (c.mparams - preset.params_m) / preset.params_m
        stream.write(
            f"{name:<12} {preset.status:<11} {c.gmacs:8.3f} {preset.macs_g:7.2f} {macs_err:+7.1%}   "
            f"{c.mparams:8.4f} {preset.params_m:7.3f} {params_err:+7.1%}   {preset.arch.summary()}\n"
        )
    stream.write(
        "MACs: multiply-accumulates of the convolutions of the fused model, counted with thop; "
        "Table 1 rounds params to 0.001 M, so small-model param errors are mostly rounding.\n"
        "exact: the team's code, layer for layer; fitted: the survey's description with widths fitted to Table 1; "
        "approximate: why not, below.\n"
    )
    for name in list_presets():
        preset = get_preset(name)
        if preset.status == "approximate":
            stream.write(f"approximate {name}: {preset.note}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
