"""Study files: what one search is (space, data, proxy budget, objectives, constraints, sampler, budget).

A study is data, not code (BasicSR style): `studies/NAME.toml` is read into a frozen `Study`, checked
completely before anything runs, and hashed so that a run directory can tell whether a resumed
command still describes the same experiment. Layout (every table optional; missing keys keep the
defaults shown)::

    name = "rtsr"                       # default: the file's stem
    description = "..."
    seed = 0                            # sampler seed and proxy-training seed (--seed)

    [search]                            # search_space.ranges.SearchRanges (see its docstring)
    down_factor = [1, 2, 3, 4]
    channels = { low = 8, high = 48, step = 4 }

    [data]
    train = "builtin"                   # 'builtin' or a folder of HR images (--data)
    val = "builtin"                     # default: same source as train, its val split (--val-data)
    qps = [31, 63]                      # AVIF QPs the proxy trains and evaluates on

    [proxy]
    recipe = "proxy"                    # a shipped recipe name or a .toml path
    steps = 300                         # optimizer steps per trial (--steps)
    threads = 1                         # CPU threads per training task (Ray num_cpus)
    gpus = 0.25                         # GPU share per training task on cuda (Ray num_gpus)

    [objectives]
    gain = "gain_y"                     # gain_y (mean PSNR-Y gain over qps) | delta_y (mean of QP31, QP63)
    latency = "mean_ms"                 # the latency statistic minimized: mean_ms | median_ms | p90_ms

    [constraints]
    latency_ms = { cuda = 16.7, cpu = 3000.0 }   # per device kind, or one number for both; optional
    macs_g = 10.0                       # deploy MACs cap at 540x960 in G; optional
    train_infeasible = false            # false: trials that break a constraint are not trained

    [latency]
    cpu_threads = 1                     # torch threads for CPU timing (part of the device label)
    cpu = { warmup = 1, runs = 5, time_budget_s = 5.0 }   # LatencyProtocol overrides per device kind
    cuda = {}

    [sampler]
    name = "tpe"                        # tpe | nsga2 | random
    n_startup_trials = 10               # tpe only
    population_size = 20                # nsga2 only

    [budget]
    trials = 40                         # finished trials (--trials)
    workers = 2                         # concurrent training tasks (--workers)
    max_retries = 2                     # re-runs of a trial whose task crashed or was killed

    [warm_start]
    presets = ["casr", "urpnet"]        # published designs evaluated first (must lie in [search])

    [ablation]                          # optional: makes the study an ablation (see `AblationSpec`)
    reference = "bias"                  # the arm every other arm is compared with
    seeds = [0, 1, 2]                   # or a count: 3 means seeds 0, 1, 2; one trial per arm and seed
    factor = "bias removal in the last stage"
    [[ablation.arms]]
    name = "bias"
    preset = "casr"                     # or arch = { channels = 16, blocks = 1, ... }
    overrides = { bias = true }         # ArchConfig fields changed on top of preset/arch
    [[ablation.arms]]
    name = "bias_removed"               # no preset/arch: the reference arm's arch (+ overrides)
    recipe = "ablation_casr_nobias"     # default: [proxy] recipe
    # eval_dtype = "float16"            # an eval-time arm: re-evaluates the reference's weights
    [[ablation.claims]]
    arm = "bias_removed"                # default: the only non-reference arm
    metric = "delta_y"                  # gain_y | delta_y | gain_qpNN | latency_ms | macs_g | params_k
    expect = "decrease"                 # increase | decrease | equal (arm - reference)
    low = -0.03                         # claimed effect size range (optional, see `Claim`)
    high = -0.01
    number = "about -0.02 dB"           # the published number, as published
    source = "AIS 2024 survey, section 3.4 (CASR), training step (iii)"
    text = "removing the bias costs about 0.02 dB PSNR"

An ablation study has no sampler work: the driver enqueues every (arm, seed) pair as a fixed
trial, so its trial budget is always arms x seeds ([budget] trials and --trials do not apply),
[warm_start] and [constraints] are refused (every arm must be trained), and [search] is unused.

Unknown keys and bad values raise one `UserError` naming the key and listing what is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.errors import UserError
from search_space.ranges import SearchRanges

__all__ = [
    "ABLATION_METRICS",
    "BUDGET_FIELDS",
    "EVAL_DTYPES",
    "EXPECTATIONS",
    "GAIN_METRICS",
    "LATENCY_STATS",
    "SAMPLERS",
    "STUDIES_DIR",
    "AblationSpec",
    "Arm",
    "Budget",
    "Claim",
    "Constraints",
    "DataSpec",
    "LatencySpec",
    "Objectives",
    "ProxySpec",
    "SamplerSpec",
    "Study",
    "find_study_file",
    "list_studies",
    "load_study",
]

#: The folder of shipped study files (`--study rtsr` reads STUDIES_DIR / "rtsr.toml").
STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")
GAIN_METRICS: tuple[str, ...] = ("gain_y", "delta_y")
LATENCY_STATS: tuple[str, ...] = ("mean_ms", "median_ms", "p90_ms")
DEVICE_KINDS: tuple[str, ...] = ("cuda", "cpu")
#: Study fields that may change when a run is resumed (they size the run, not the experiment).
BUDGET_FIELDS: tuple[str, ...] = ("trials", "workers", "max_retries")
#: What an ablation claim can be about (besides `gain_qpNN`, the gain at one evaluated QP).
ABLATION_METRICS: tuple[str, ...] = ("gain_y", "delta_y", "latency_ms", "macs_g", "params_k")
#: The direction a claim states for (arm - reference).
EXPECTATIONS: tuple[str, ...] = ("increase", "decrease", "equal")
#: Evaluation dtypes of an ablation arm (float16: the challenge's pure-fp16 inference).
EVAL_DTYPES: tuple[str, ...] = ("float32", "float16")


# -- value checks ---------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(where: str, value: object, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise UserError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(where: str, value: object) -> float:
    if not _is_number(value) or value <= 0:
        raise UserError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def _choice(where: str, value: object, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise UserError(f"{where} is {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def _table(where: str, data: object, cls: type) -> Mapping[str, Any]:
    """`data` as a mapping whose keys are all fields of `cls`, else one clear error."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a table of settings, got {data!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")
    return data


# -- the tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Training/validation sources and the QPs trained and evaluated on."""

    train: str = "builtin"
    val: str | None = None
    qps: tuple[int, ...] = (31, 63)

    def __post_init__(self) -> None:
        for key in ("train", "val"):
            value = getattr(self, key)
            if value is None and key == "val":
                continue
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"[data] {key} must be 'builtin' or a folder path, got {value!r}")
        qps = tuple(self.qps) if isinstance(self.qps, (list, tuple)) else self.qps
        if not isinstance(qps, tuple) or not qps or not all(_is_int(q) and 0 <= q <= 63 for q in qps):
            raise UserError(f"[data] qps must be a non-empty list of AVIF QPs in 0..63 (e.g. [31, 63]), got {self.qps!r}")
        if len(set(qps)) != len(qps):
            raise UserError(f"[data] qps repeat: {list(qps)!r}")
        object.__setattr__(self, "qps", qps)

    @property
    def val_source(self) -> str:
        return self.train if self.val is None else self.val


@dataclass(frozen=True)
class ProxySpec:
    """How each trial is trained: recipe, steps, and the resources of one training task."""

    recipe: str = "proxy"
    steps: int = 300
    threads: int = 1
    gpus: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise UserError(f"[proxy] recipe must be a recipe name (e.g. 'proxy') or a .toml path, got {self.recipe!r}")
        _int("[proxy] steps", self.steps, minimum=1)
        _int("[proxy] threads", self.threads, minimum=1)
        gpus = _positive("[proxy] gpus", self.gpus)
        if gpus > 1:
            raise UserError(f"[proxy] gpus is the GPU share of one training task, in (0, 1]; got {self.gpus!r}")
        object.__setattr__(self, "gpus", gpus)


@dataclass(frozen=True)
class Objectives:
    """Which gain is maximized and which latency statistic is minimized."""

    gain: str = "gain_y"
    latency: str = "mean_ms"

    def __post_init__(self) -> None:
        _choice("[objectives] gain", self.gain, GAIN_METRICS)
        _choice("[objectives] latency", self.latency, LATENCY_STATS)


@dataclass(frozen=True)
class Constraints:
    """Feasibility: a latency budget per device kind and a MACs cap (either may be absent)."""

    latency_ms: tuple[tuple[str, float], ...] = ()
    macs_g: float | None = None
    train_infeasible: bool = False

    def __post_init__(self) -> None:
        lat = self.latency_ms
        if _is_number(lat):
            lat = tuple((kind, float(lat)) for kind in DEVICE_KINDS)
        elif isinstance(lat, Mapping):
            unknown = sorted(set(lat) - set(DEVICE_KINDS))
            if unknown:
                raise UserError(
                    f"[constraints] latency_ms: unknown device kind(s) {', '.join(map(repr, unknown))}; "
                    f"valid: {', '.join(DEVICE_KINDS)} (or give one number for both)"
                )
            lat = tuple((k, lat[k]) for k in DEVICE_KINDS if k in lat)
        elif isinstance(lat, (list, tuple)):
            lat = tuple(tuple(item) for item in lat)
        else:
            raise UserError(
                f"[constraints] latency_ms must be a number of ms or a table like {{ cuda = 16.7, cpu = 3000 }}, got {lat!r}"
            )
        checked = []
        for kind, value in lat:
            _choice("[constraints] latency_ms device kind", kind, DEVICE_KINDS)
            checked.append((kind, _positive(f"[constraints] latency_ms.{kind}", value)))
        object.__setattr__(self, "latency_ms", tuple(checked))
        if self.macs_g is not None:
            object.__setattr__(self, "macs_g", _positive("[constraints] macs_g", self.macs_g))
        if not isinstance(self.train_infeasible, bool):
            raise UserError(f"[constraints] train_infeasible must be true or false, got {self.train_infeasible!r}")

    def latency_budget(self, device_kind: str) -> float | None:
        """The latency budget in ms for `cuda` or `cpu` timings, or None if unconstrained there."""
        return dict(self.latency_ms).get(device_kind)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"latency_ms": dict(self.latency_ms), "train_infeasible": self.train_infeasible}
        if self.macs_g is not None:
            d["macs_g"] = self.macs_g
        return d


_PROTOCOL_OVERRIDES = ("warmup", "runs", "time_budget_s", "backend", "dtype", "input_hw")


@dataclass(frozen=True)
class LatencySpec:
    """Per-device-kind overrides of the standard latency protocols, and the CPU timing threads."""

    cpu_threads: int = 1
    cpu: tuple[tuple[str, Any], ...] = ()
    cuda: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _int("[latency] cpu_threads", self.cpu_threads, minimum=1)
        for kind in DEVICE_KINDS:
            value = getattr(self, kind)
            if isinstance(value, Mapping):
                value = tuple(sorted(value.items()))
            if not isinstance(value, tuple):
                raise UserError(f"[latency] {kind} must be a table of protocol settings, got {value!r}")
            unknown = sorted({k for k, _ in value} - set(_PROTOCOL_OVERRIDES))
            if unknown:
                raise UserError(
                    f"[latency] {kind}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(_PROTOCOL_OVERRIDES)}"
                )
            value = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in value)
            object.__setattr__(self, kind, value)
            self.protocol(kind)  # validates the values (LatencyProtocol raises UserError)

    def protocol(self, device_kind: str) -> Any:
        """The `nas.latency.LatencyProtocol` used for `cuda` or `cpu` timings in this study."""
        from nas.latency import LatencyProtocol

        overrides = dict(getattr(self, device_kind))
        try:
            return LatencyProtocol.default_for(device_kind, **overrides)
        except UserError as err:
            raise UserError(f"[latency] {device_kind}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_threads": self.cpu_threads,
            "cpu": {k: list(v) if isinstance(v, tuple) else v for k, v in self.cpu},
            "cuda": {k: list(v) if isinstance(v, tuple) else v for k, v in self.cuda},
        }


@dataclass(frozen=True)
class SamplerSpec:
    """The Optuna sampler, always explicit (Optuna 5 changed the multi-objective default)."""

    name: str = "tpe"
    n_startup_trials: int = 10
    population_size: int = 20

    def __post_init__(self) -> None:
        _choice("[sampler] name", self.name, SAMPLERS)
        _int("[sampler] n_startup_trials", self.n_startup_trials, minimum=0)
        _int("[sampler] population_size", self.population_size, minimum=2)


@dataclass(frozen=True)
class Budget:
    """How many trials, how many at once, and how often a crashed trial is retried."""

    trials: int = 40
    workers: int = 2
    max_retries: int = 2

    def __post_init__(self) -> None:
        _int("[budget] trials", self.trials, minimum=1)
        _int("[budget] workers", self.workers, minimum=1)
        _int("[budget] max_retries", self.max_retries, minimum=0)


@dataclass(frozen=True)
class WarmStart:
    """Published designs (preset names) enqueued before the sampler's own trials."""

    presets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        presets = tuple(self.presets) if isinstance(self.presets, (list, tuple)) else self.presets
        if not isinstance(presets, tuple) or not all(isinstance(p, str) for p in presets):
            raise UserError(f"[warm_start] presets must be a list of preset names, got {self.presets!r}")
        from search_space.presets import list_presets

        unknown = [p for p in presets if p not in list_presets()]
        if unknown:
            raise UserError(
                f"[warm_start] presets: unknown preset(s) {', '.join(map(repr, unknown))}; available: {', '.join(list_presets())}"
            )
        if len(set(presets)) != len(presets):
            raise UserError(f"[warm_start] presets repeat: {list(presets)!r}")
        object.__setattr__(self, "presets", presets)


# -- ablations ------------------------------------------------------------------------------------

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _items(where: str, value: object) -> tuple[tuple[str, Any], ...]:
    """A TOML table as sorted (key, value) pairs: immutable, hashable, one spelling."""
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise UserError(f"{where} must be a table like {{ channels = 16, blocks = 1 }}, got {value!r}")
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in value.items()))


@dataclass(frozen=True)
class Arm:
    """One arm of an ablation: an architecture, a recipe and an evaluation dtype.

    The architecture is `preset` or `arch` (a full `ArchConfig` table), with `overrides` applied on
    top; an arm with neither is "the reference arm's architecture with `overrides`", which keeps
    the one factor an ablation changes visible in the file. `recipe` defaults to the study's
    `[proxy] recipe`. An arm with `eval_dtype` other than float32 is an eval-time arm: it changes
    nothing else, and re-evaluates the reference arm's trained weights (same seed) in that dtype.
    """

    name: str
    preset: str | None = None
    arch: tuple[tuple[str, Any], ...] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    recipe: str | None = None
    eval_dtype: str = "float32"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not set(self.name) <= _NAME_CHARS:
            raise UserError(f"[[ablation.arms]] name must be a non-empty name of letters, digits, '_', '-' or '.', got {self.name!r}")
        where = f"[[ablation.arms]] {self.name!r}"
        if self.preset is not None and self.arch is not None:
            raise UserError(f"{where}: give preset or arch, not both (use overrides to change a preset)")
        if self.preset is not None:
            from search_space.presets import list_presets

            if self.preset not in list_presets():
                raise UserError(f"{where}: unknown preset {self.preset!r}; available: {', '.join(list_presets())}")
        if self.arch is not None:
            object.__setattr__(self, "arch", _items(f"{where} arch", self.arch))
        object.__setattr__(self, "overrides", _items(f"{where} overrides", self.overrides))
        if self.recipe is not None and (not isinstance(self.recipe, str) or not self.recipe.strip()):
            raise UserError(f"{where}: recipe must be a recipe name or a .toml path, got {self.recipe!r}")
        _choice(f"{where} eval_dtype", self.eval_dtype, EVAL_DTYPES)
        if not isinstance(self.description, str):
            raise UserError(f"{where}: description must be a string")
        if self.eval_dtype != "float32" and (self.preset or self.arch or self.overrides or self.recipe):
            raise UserError(
                f"{where}: an eval_dtype arm re-evaluates the reference arm's trained weights, so it cannot also set "
                "preset, arch, overrides or recipe; make those a separate arm"
            )

    @property
    def own_arch(self) -> bool:
        """Whether the arm names its architecture (else it is the reference's, with overrides)."""
        return self.preset is not None or self.arch is not None

    def resolve_arch(self, base: Any = None) -> Any:
        """The arm's `ArchConfig`: preset/arch (or `base`, the reference's) with the overrides."""
        from search_space.arch import ArchConfig
        from search_space.presets import get_preset

        where = f"[[ablation.arms]] {self.name!r}"
        try:
            if self.preset is not None:
                arch = get_preset(self.preset).arch
            elif self.arch is not None:
                arch = ArchConfig.from_dict(dict(self.arch))
            else:
                arch = base
            if self.overrides:
                valid = [f.name for f in dataclasses.fields(ArchConfig)]
                unknown = sorted(k for k, _ in self.overrides if k not in valid)
                if unknown:
                    raise UserError(f"overrides: unknown ArchConfig key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")
                arch = dataclasses.replace(arch, **dict(self.overrides))
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        return arch

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.preset is not None:
            d["preset"] = self.preset
        if self.arch is not None:
            d["arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.arch}
        if self.overrides:
            d["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides}
        if self.recipe is not None:
            d["recipe"] = self.recipe
        if self.eval_dtype != "float32":
            d["eval_dtype"] = self.eval_dtype
        if self.description:
            d["description"] = self.description
        return d


def _bound(where: str, value: object) -> float:
    if value in ("inf", "-inf"):  # how `Claim.to_dict` spells infinities (strict JSON has none)
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"{where} must be a number (inf and -inf allowed), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Claim:
    """A published statement about (arm - reference) that an ablation tests.

    `metric` is what is compared (`gain_y`, `delta_y`, `gain_qpNN` in dB; `latency_ms`; `macs_g`;
    `params_k`), `expect` the claimed direction, and [`low`, `high`] the claimed size of the
    difference (in the metric's unit, or in percent of the reference arm's mean if `relative`):

    - increase: default [0, inf]; `low` >= 0 (e.g. "+0.01 to +0.05 dB" is low 0.01, high 0.05);
    - decrease: default [-inf, 0]; `high` <= 0;
    - equal: a tolerance band that contains 0, default [0, 0] (exactly equal, e.g. deploy MACs).

    `reports.stats.verdict` turns the measured interval and this range into consistent,
    inconclusive or contradicts. `number`, `source` and `text` are the published words, kept
    verbatim for the report (a published point "about X" is written as a range by the study file).
    """

    metric: str
    expect: str
    arm: str | None = None
    low: float | None = None
    high: float | None = None
    relative: bool = False
    number: str = ""
    source: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        where = "[[ablation.claims]]"
        if not isinstance(self.metric, str) or not (self.metric in ABLATION_METRICS or _qp_metric(self.metric) is not None):
            raise UserError(
                f"{where} metric is {self.metric!r}; choose one of {', '.join(ABLATION_METRICS)} or gain_qpNN (e.g. gain_qp31)"
            )
        _choice(f"{where} expect", self.expect, EXPECTATIONS)
        if self.arm is not None and not isinstance(self.arm, str):
            raise UserError(f"{where} arm must be an arm name, got {self.arm!r}")
        if not isinstance(self.relative, bool):
            raise UserError(f"{where} relative must be true or false, got {self.relative!r}")
        for key in ("number", "source", "text"):
            if not isinstance(getattr(self, key), str):
                raise UserError(f"{where} {key} must be a string")
        defaults = {"increase": (0.0, math.inf), "decrease": (-math.inf, 0.0), "equal": (0.0, 0.0)}[self.expect]
        low = defaults[0] if self.low is None else _bound(f"{where} low", self.low)
        high = defaults[1] if self.high is None else _bound(f"{where} high", self.high)
        if low > high:
            raise UserError(f"{where}: low ({low:g}) is above high ({high:g})")
        if self.expect == "increase" and low < 0:
            raise UserError(f"{where}: expect = 'increase' needs low >= 0 (got {low:g}); use 'equal' for a band around 0")
        if self.expect == "decrease" and high > 0:
            raise UserError(f"{where}: expect = 'decrease' needs high <= 0 (got {high:g}); use 'equal' for a band around 0")
        if self.expect == "equal" and not low <= 0 <= high:
            raise UserError(f"{where}: expect = 'equal' needs a band that contains 0, got [{low:g}, {high:g}]")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def unit(self) -> str:
        if self.relative:
            return "%"
        return {"latency_ms": "ms", "macs_g": "G", "params_k": "k"}.get(self.metric, "dB")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite bounds as the strings 'inf' / '-inf', which `from_dict` reads back)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["arm"] is None:
            d.pop("arm")
        for key in ("low", "high"):
            if math.isinf(d[key]):
                d[key] = "inf" if d[key] > 0 else "-inf"
        return d


def _qp_metric(metric: str) -> int | None:
    """The QP of a `gain_qpNN` metric name, else None."""
    if metric.startswith("gain_qp") and metric[7:].isdigit() and metric[7:].isascii():
        return int(metric[7:])
    return None


@dataclass(frozen=True)
class AblationSpec:
    """Arms x seeds as fixed trials, one reference arm, and the published claims they test."""

    reference: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    claims: tuple[Claim, ...] = ()
    factor: str = ""

    def __post_init__(self) -> None:
        seeds = self.seeds
        if _is_int(seeds):
            if seeds < 1:
                raise UserError(f"[ablation] seeds must be a count >= 1 or a list of seeds, got {seeds!r}")
            seeds = tuple(range(seeds))
        elif isinstance(seeds, (list, tuple)) and seeds and all(_is_int(x) and x >= 0 for x in seeds):
            seeds = tuple(seeds)
        else:
            raise UserError(f"[ablation] seeds must be a count (e.g. 3) or a list of integers >= 0, got {self.seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise UserError(f"[ablation] seeds repeat: {list(seeds)!r}")
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.factor, str):
            raise UserError("[ablation] factor must be a string (the one thing the arms change)")
        arms = tuple(self.arms)
        if len(arms) < 2:
            raise UserError("[ablation] needs at least two [[ablation.arms]]: the reference and one that changes a factor")
        names = [a.name for a in arms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"[ablation] arm names repeat: {', '.join(map(repr, repeated))}")
        if self.reference not in names:
            raise UserError(f"[ablation] reference is {self.reference!r}; it must name an arm: {', '.join(names)}")
        ref = arms[names.index(self.reference)]
        if not ref.own_arch:
            raise UserError(f"[ablation] the reference arm {ref.name!r} must give preset or arch (other arms default to its arch)")
        if ref.eval_dtype != "float32":
            raise UserError(f"[ablation] the reference arm {ref.name!r} must evaluate in float32 (eval-time arms compare with it)")
        object.__setattr__(self, "arms", arms)
        base = ref.resolve_arch()
        for arm in arms:
            arm.resolve_arch(base)  # every arm's architecture is valid now, not when its trial starts
        claims = []
        others = [n for n in names if n != self.reference]
        for claim in self.claims:
            arm = claim.arm
            if arm is None:
                if len(others) != 1:
                    raise UserError(f"[[ablation.claims]] about {claim.metric}: name its arm (one of {', '.join(others)})")
                claim = dataclasses.replace(claim, arm=others[0])
            elif arm not in others:
                raise UserError(
                    f"[[ablation.claims]] arm is {arm!r}; it must name a non-reference arm: {', '.join(others)}"
                )
            claims.append(claim)
        object.__setattr__(self, "claims", tuple(claims))

    @property
    def n_trials(self) -> int:
        return len(self.arms) * len(self.seeds)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    @property
    def reference_arm(self) -> Arm:
        return self.arm(self.reference)

    def arch_of(self, name: str) -> Any:
        """The `ArchConfig` an arm trains (an arm without its own arch starts from the reference's)."""
        arm = self.arm(name)
        return arm.resolve_arch(None if arm.own_arch else self.reference_arm.resolve_arch())

    def recipe_of(self, name: str, default: str) -> str:
        """The recipe name or path an arm trains with (eval-time arms: the reference's)."""
        arm = self.arm(name)
        if arm.eval_dtype != "float32":
            arm = self.reference_arm
        return arm.recipe or default

    def check_distinct(self, default_recipe: str) -> None:
        """Refuse an arm that trains and evaluates exactly like the reference (it measures nothing)."""
        ref = self.reference_arm
        base = ref.resolve_arch()
        for arm in self.arms:
            if arm.name == ref.name or arm.eval_dtype != "float32":
                continue
            if arm.resolve_arch(base) == base and (arm.recipe or default_recipe) == (ref.recipe or default_recipe):
                raise UserError(f"[[ablation.arms]] {arm.name!r} is identical to the reference arm; change one factor")

    def trial_order(self) -> list[tuple[str, int]]:
        """(arm, seed) pairs in enqueue order: seed by seed, the reference first, eval-time arms last,
        so that one latency batch holds every arm of a seed and eval-time arms find their weights."""
        ordered = sorted(self.arms, key=lambda a: (a.name != self.reference, a.eval_dtype != "float32"))
        return [(arm.name, seed) for seed in self.seeds for arm in ordered]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reference": self.reference, "seeds": list(self.seeds)}
        if self.factor:
            d["factor"] = self.factor
        d["arms"] = [a.to_dict() for a in self.arms]
        d["claims"] = [c.to_dict() for c in self.claims]
        return d

    @classmethod
    def from_dict(cls, data: object) -> AblationSpec:
        table = _table("[ablation]", data, cls)
        for key in ("reference", "arms"):
            if key not in table:
                raise UserError(f"[ablation] needs {key!r} (the reference arm's name and a list of [[ablation.arms]])")
        arms_data = table["arms"]
        if not isinstance(arms_data, list):
            raise UserError("[ablation] arms must be a list of tables ([[ablation.arms]])")
        arms = []
        for item in arms_data:
            arm_table = _table("[[ablation.arms]]", item, Arm)
            if "name" not in arm_table:
                raise UserError("[[ablation.arms]] needs a name")
            arms.append(Arm(**arm_table))
        claims_data = table.get("claims", [])
        if not isinstance(claims_data, list):
            raise UserError("[ablation] claims must be a list of tables ([[ablation.claims]])")
        claims = []
        for item in claims_data:
            claim_table = _table("[[ablation.claims]]", item, Claim)
            missing = [k for k in ("metric", "expect") if k not in claim_table]
            if missing:
                raise UserError(f"[[ablation.claims]] needs {', '.join(map(repr, missing))}")
            claims.append(Claim(**claim_table))
        return cls(
            reference=table["reference"],
            arms=tuple(arms),
            seeds=table.get("seeds", (0, 1, 2)),
            claims=tuple(claims),
            factor=table.get("factor", ""),
        )


_TABLES: dict[str, type] = {
    "data": DataSpec,
    "proxy": ProxySpec,
    "objectives": Objectives,
    "constraints": Constraints,
    "latency": LatencySpec,
    "sampler": SamplerSpec,
    "budget": Budget,
    "warm_start": WarmStart,
}
_TOP_LEVEL = ("name", "description", "seed", "search", *_TABLES, "ablation")


def _plain(value: Any) -> Any:
    """Dataclass tables as TOML/JSON-ready dicts (tuples -> lists)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Study:
    """One search, fully validated; `identity_hash` ignores the budget (what may change on resume)."""

    name: str
    description: str = ""
    seed: int = 0
    search: SearchRanges = field(default_factory=SearchRanges)
    data: DataSpec = field(default_factory=DataSpec)
    proxy: ProxySpec = field(default_factory=ProxySpec)
    objectives: Objectives = field(default_factory=Objectives)
    constraints: Constraints = field(default_factory=Constraints)
    latency: LatencySpec = field(default_factory=LatencySpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    budget: Budget = field(default_factory=Budget)
    warm_start: WarmStart = field(default_factory=WarmStart)
    ablation: AblationSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise UserError(f"a study needs a non-empty name, got {self.name!r}")
        if not isinstance(self.description, str):
            raise UserError(f"study {self.name!r}: description must be a string")
        _int("seed", self.seed, minimum=0)
        if self.objectives.gain == "delta_y" and not {31, 63} <= set(self.data.qps):
            raise UserError("[objectives] gain = 'delta_y' is the mean gain at QP31 and QP63; add both to [data] qps or use 'gain_y'")
        if self.ablation is not None:
            self._check_ablation()
        self._check_presets_in_space()

    def _check_ablation(self) -> None:
        """An ablation trains every arm for every seed: its budget is fixed, nothing is skipped."""
        ab = self.ablation
        assert ab is not None
        if not isinstance(ab, AblationSpec):
            raise UserError(f"[ablation] must be an AblationSpec, got {type(ab).__name__}")
        if self.warm_start.presets:
            raise UserError("[warm_start] does not apply to an ablation (its trials are the arms); remove it")
        if self.constraints.latency_ms or self.constraints.macs_g is not None:
            raise UserError("[constraints] do not apply to an ablation (every arm is trained and compared); remove them")
        ab.check_distinct(self.proxy.recipe)
        for claim in ab.claims:
            qp = _qp_metric(claim.metric)
            if qp is not None and qp not in self.data.qps:
                raise UserError(f"[[ablation.claims]] metric {claim.metric!r}: QP {qp} is not evaluated; add it to [data] qps")
            if claim.metric == "delta_y" and not {31, 63} <= set(self.data.qps):
                raise UserError("[[ablation.claims]] metric 'delta_y' needs QP31 and QP63 in [data] qps")
        if self.budget.trials != ab.n_trials:
            object.__setattr__(self, "budget", dataclasses.replace(self.budget, trials=ab.n_trials))

    def _check_presets_in_space(self) -> None:
        from search_space.presets import get_preset
        from search_space.ranges import arch_to_params

        for name in self.warm_start.presets:
            try:
                arch_to_params(get_preset(name).arch, self.search)
            except UserError as err:
                raise UserError(
                    f"[warm_start] preset {name!r} lies outside the study's [search] ranges ({err}); "
                    "widen [search] or drop the preset"
                ) from None

    # -- identity -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed}
        out["search"] = self.search.to_dict()
        for key in _TABLES:
            out[key] = _plain(getattr(self, key))
        if self.ablation is not None:  # absent otherwise: search studies keep their identity hash
            out["ablation"] = self.ablation.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_name: str | None = None) -> Study:
        if not isinstance(data, Mapping):
            raise UserError(f"a study must be a table of settings, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_LEVEL))
        if unknown:
            raise UserError(
                f"study: unknown key(s) {', '.join(map(repr, unknown))}; valid top-level keys and tables: {', '.join(_TOP_LEVEL)}"
            )
        kwargs: dict[str, Any] = {}
        for key in ("name", "description", "seed"):
            if key in data:
                kwargs[key] = data[key]
        kwargs.setdefault("name", default_name)
        if "search" in data:
            kwargs["search"] = SearchRanges.from_dict(data["search"])
        for key, table_cls in _TABLES.items():
            if key in data:
                kwargs[key] = table_cls(**_table(f"[{key}]", data[key], table_cls))
        if "ablation" in data:
            ablation = AblationSpec.from_dict(data["ablation"])
            trials = data.get("budget", {}).get("trials") if isinstance(data.get("budget"), Mapping) else None
            if trials is not None and trials != ablation.n_trials:
                raise UserError(
                    f"[budget] trials = {trials!r} does not apply to an ablation: it runs every arm for every seed "
                    f"({len(ablation.arms)} x {len(ablation.seeds)} = {ablation.n_trials} trials); remove it and change "
                    "[ablation] seeds instead"
                )
            kwargs["ablation"] = ablation
        return cls(**kwargs)

    def with_overrides(self, **changes: Any) -> Study:
        """A copy with dotted-path overrides such as `budget.trials=10` (from command-line flags)."""
        tables: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None:
                continue
            table, _, sub = key.partition("__")
            if sub:
                tables.setdefault(table, {})[sub] = value
            else:
                top[key] = value
        updated = {t: dataclasses.replace(getattr(self, t), **v) for t, v in tables.items()}
        return dataclasses.replace(self, **top, **updated)

    def identity_dict(self) -> dict[str, Any]:
        """Everything that defines the experiment: all but labels and the budget."""
        d = self.to_dict()
        d.pop("description")
        d["budget"] = {k: v for k, v in d["budget"].items() if k not in BUDGET_FIELDS}
        return d

    @property
    def identity_hash(self) -> str:
        return _short_hash(self.identity_dict())

    @property
    def study_hash(self) -> str:
        return _short_hash(self.to_dict())


def _short_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# -- finding and loading --------------------------------------------------------------------------


def list_studies(root: Path | None = None) -> list[str]:
    """Names of the study files under `root` (default: the shipped `studies/`), e.g. 'ablations/x'."""
    root = STUDIES_DIR if root is None else root
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.toml"))


def find_study_file(name_or_path: str | os.PathLike[str]) -> Path:
    """`studies/NAME.toml` for a name (looked up in ./studies, then the shipped folder), or a path.

    A value that names an existing file, ends in .toml, or contains a path separator is a path.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise UserError("--study is empty; give a study name (e.g. rtsr, smoke) or a .toml path")
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if text.endswith(".toml") or (os.sep in text and not (STUDIES_DIR / f"{text}.toml").is_file()):
        raise UserError(f"study file {text!r} does not exist; check the path, or give a study name ({', '.join(list_studies())})")
    for root in (Path.cwd() / "studies", STUDIES_DIR):
        path = root / f"{text}.toml"
        if path.is_file():
            return path
    raise UserError(
        f"unknown study {text!r}; shipped studies: {', '.join(list_studies()) or '(none)'} "
        "(studies/NAME.toml), or pass the path of a .toml file"
    )


def load_study(name_or_path: str | os.PathLike[str]) -> Study:
    """Read, validate and return a study (see the module docstring for the file layout)."""
    path = find_study_file(name_or_path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"study file {str(path)!r} is not UTF-8 text") from None
    except ValueError as err:  # TOMLDecodeError
        raise UserError(f"study file {str(path)!r} is not valid TOML: {err}") from None
    try:
        return Study.from_dict(data, default_name=path.stem)
    except UserError as err:
        raise UserError(f"study file {str(path)!r}: {err}") from None
    except TypeError as err:  # e.g. a scalar where a table belongs
        raise UserError(f"study file {str(path)!r}: {err}") from None
