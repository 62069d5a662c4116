"""Ablation tables of a study file: arms x seeds as fixed trials, and the published claims they test.

Why apart from `nas.study`: a study is a search unless it has an `[ablation]` table, and the rules of
that table (one reference arm, arms that change one factor, claims with a direction and a size) are
a subject of their own that `reports.ablation` reads too. The TOML layout is in `nas.study`'s module
docstring; `Study` checks what involves other tables (the QPs a claim needs, budget, warm start).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas._checks import choice as _choice
from nas._checks import is_int as _is_int
from nas._checks import table as _table
from search_space.configio import reject_unknown_keys
from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.task import JSONDict
    from search_space.arch import ArchConfig

__all__ = ["ABLATION_METRICS", "EVAL_DTYPES", "EXPECTATIONS", "AblationSpec", "Arm", "Claim"]

#: What an ablation claim can be about (besides `gain_qpNN`, the gain at one evaluated QP).
ABLATION_METRICS: tuple[str, ...] = ("gain_y", "delta_y", "latency_ms", "macs_g", "params_k")
#: The direction a claim states for (arm - reference).
EXPECTATIONS: tuple[str, ...] = ("increase", "decrease", "equal")
#: Evaluation dtypes of an ablation arm (float16: the challenge's pure-fp16 inference).
EVAL_DTYPES: tuple[str, ...] = ("float32", "float16")

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

    def resolve_arch(self, base: ArchConfig | None = None) -> ArchConfig:
        """The arm's `ArchConfig`: preset/arch (or `base`, the reference's) with the overrides."""
        from search_space.arch import ArchConfig
        from search_space.presets import get_preset

        where = f"[[ablation.arms]] {self.name!r}"
        try:
            if self.preset is not None:
                arch = get_preset(self.preset).arch
            elif self.arch is not None:
                arch = ArchConfig.from_dict(dict(self.arch))
            elif base is not None:
                arch = base
            else:
                raise UserError(f"{where}: the reference arm needs a preset or an arch")
            if self.overrides:
                overrides = dict(self.overrides)
                reject_unknown_keys("overrides", overrides, (f.name for f in dataclasses.fields(ArchConfig)))
                arch = dataclasses.replace(arch, **overrides)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        return arch

    def to_dict(self) -> JSONDict:
        d: JSONDict = {"name": self.name}
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

    def to_dict(self) -> JSONDict:
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
        seeds: object = self.seeds  # a count or a list as read from TOML
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
            named = claim.arm
            if named is None:
                if len(others) != 1:
                    raise UserError(f"[[ablation.claims]] about {claim.metric}: name its arm (one of {', '.join(others)})")
                claim = dataclasses.replace(claim, arm=others[0])
            elif named not in others:
                raise UserError(
                    f"[[ablation.claims]] arm is {named!r}; it must name a non-reference arm: {', '.join(others)}"
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

    def arch_of(self, name: str) -> ArchConfig:
        """The `ArchConfig` an arm trains (an arm without its own arch starts from the reference's)."""
        arm = self.arm(name)
        return arm.resolve_arch(None if arm.own_arch else self.reference_arm.resolve_arch())

    def recipe_of(self, name: str, default: str) -> str:
        """The recipe name or path an arm trains with (eval-time arms: the reference's)."""
        arm = self.arm(name)
        if arm.eval_dtype != "float32":
            arm = self.reference_arm
        return arm.recipe or default

    def check_qps(self, qps: tuple[int, ...]) -> None:
        """Refuse a claim about a QP the study does not evaluate (its number could never be measured)."""
        for claim in self.claims:
            qp = _qp_metric(claim.metric)
            if qp is not None and qp not in qps:
                raise UserError(f"[[ablation.claims]] metric {claim.metric!r}: QP {qp} is not evaluated; add it to [data] qps")
            if claim.metric == "delta_y" and not {31, 63} <= set(qps):
                raise UserError("[[ablation.claims]] metric 'delta_y' needs QP31 and QP63 in [data] qps")

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

    def to_dict(self) -> JSONDict:
        d: JSONDict = {"reference": self.reference, "seeds": list(self.seeds)}
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
