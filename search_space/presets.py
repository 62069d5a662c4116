"""Published AIS 2024 Real-Time SR designs as presets, with their Table 1 numbers.

Sources: the challenge survey (`reference/ais2024_rtsr_survey.txt`, Table 1 and Sec. 3) and
`reference/blocks_and_protocol.md` (section 2). Status of each preset's architecture:

- "confirmed": read from the team's public code (ANUNet, CASR);
- "fitted": no code; a config of the template that matches the survey's description and Table 1's
  MACs (within 2%) and params (within 0.0015 M), found by arithmetic. Fits are not unique: they
  are search anchors, not facts;
- "approximate": the design cannot be expressed by the template (VPEG-R's RepRB, USTC-Noah's
  mixed-resolution DConv net, XiaomiMM's SPAN with feature concatenation); the closest expressible
  design, with its own MACs/params.

Table 1 numbers are the survey's: MACs in G and params in M at a 960x540 input, runtime in ms on
an RTX 4090 (FP16), delta = PSNR-Y gain over Lanczos averaged over QP31/QP63, PSNR-Y in dB.
Unknown values (URPNet's score and delta) are None.

`python -m search_space.presets` prints every preset's deploy MACs/params at 540x960 next to
Table 1 and the relative errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from search_space.arch import ArchConfig
from search_space.errors import UserError

__all__ = ["STATUSES", "Preset", "get_preset", "list_presets", "main", "register_preset"]

STATUSES: tuple[str, ...] = ("confirmed", "fitted", "approximate")

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


# -- confirmed ------------------------------------------------------------------------------------


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
        status="confirmed",
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
        status="confirmed",
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
def ustc_noah() -> Preset:
    return Preset(
        name="ustc_noah",
        arch=ArchConfig(
            downsample="strided",
            down_factor=2,
            channels=40,
            blocks=4,
            block="dconv",
            activation="relu",
            reconstruction="cascade",
        ),
        status="approximate",
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
            "stride-2 DConv (their kernel 4, ours 3), 4 DConvs, pixel shuffle to LR size, one DConv at LR size, PS4 "
            "(survey 3.9). Their LR-size stage works on C/4 shuffled features; ours is CASR's conv -> PS2 -> +x -> "
            "3->48 conv. C=40 matches the MACs (+3%) but not the params (about 64k vs 45k): no template config "
            "fits both"
        ),
    )


@register_preset
def xiaomimm() -> Preset:
    return Preset(
        name="xiaomimm",
        arch=ArchConfig(channels=18, blocks=2, block="spab", activation="silu", body_skip=True),
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
            "SPAN with 2 SPABs (survey 3.8); the concat of block outputs + 1x1 fusion conv is not expressible, "
            "a long body skip stands in. C=18 gives 13.35 G / 0.026 M"
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
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
