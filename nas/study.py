"""Study files: what one search is (space, data, proxy budget, objectives, constraints, sampler, budget).

A study is data, not code (BasicSR style): a TOML file is read into a frozen `Study`, checked
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
    train = "builtin"                   # 'builtin', 'photos' (real photographs, trainers.photos) or a folder of HR images (--data)
    val = "builtin"                     # selection split; default: the source's val split or val/ subfolder,
                                        # else ~10 % carved from the training images (--val-data)
    test = "builtin"                    # reported, never selected on; default as val (test/) (--test-data)
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
    minutes = 25                        # optional wall-time limit per invocation (--time-limit)

    [warm_start]
    presets = ["casr", "urpnet"]        # published designs evaluated first (must lie in [search])

    [halving]                           # optional: multi-fidelity successive halving (see `nas.halving`)
    min_steps = 100                     # rung 0's steps (--steps); rung k trains min_steps * eta**k
    eta = 3                             # the top 1/eta of a rung continue to the next
    rungs = 3                           # 100, 300, 900 steps
    decay = 0.2                         # each evaluation branches off a decay of 0.2 x the rung's steps
    top_seeds = 2                       # seeds trained at the top rung (spread recorded)

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
The [ablation] table itself (`Arm`, `Claim`, `AblationSpec`) lives in `nas.ablation_spec`.

Shipped studies are package data (`nas/studies/`, so a non-editable install has them); your own
go in `./studies/NAME.toml`, which `--study NAME` finds first, or anywhere as a .toml path.
Unknown keys and bad values raise one `UserError` naming the key and listing what is valid.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._checks import choice as _choice
from nas._checks import integer as _int
from nas._checks import is_int as _is_int
from nas._checks import is_number as _is_number
from nas._checks import positive as _positive
from nas._checks import table as _table
from nas.ablation_spec import ABLATION_METRICS, EVAL_DTYPES, EXPECTATIONS, AblationSpec, Arm, Claim
from nas.halving import HalvingSpec
from search_space.configio import content_hash, load_toml, reject_unknown_keys, shipped_folder
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
STUDIES_DIR: Path = shipped_folder("nas", "studies")
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")
GAIN_METRICS: tuple[str, ...] = ("gain_y", "delta_y")
LATENCY_STATS: tuple[str, ...] = ("mean_ms", "median_ms", "p90_ms")
DEVICE_KINDS: tuple[str, ...] = ("cuda", "cpu")
#: Study fields that may change when a run is resumed (they size the run, not the experiment).
BUDGET_FIELDS: tuple[str, ...] = ("trials", "workers", "max_retries", "minutes")


# -- the tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Training/validation/test sources and the QPs trained and evaluated on.

    `val` and `test` default to the source's own split (builtin's or photos', or a folder's `val/` and `test/`
    subfolders), else a deterministic ~10 % each carved from the training images (trainers.data)."""

    train: str = "builtin"
    val: str | None = None
    test: str | None = None
    qps: tuple[int, ...] = (31, 63)
    fallback: str | None = None
    """A named source used for every split when ``train`` is 'photos' and the photos cannot be had on
    this machine (`Study.with_available_data`); the run then says so in one line. None: no fallback."""

    def __post_init__(self) -> None:
        if self.fallback is not None and (self.train != "photos" or self.fallback != "builtin" or self.val or self.test):
            raise UserError(f"[data] fallback = {self.fallback!r}: only 'builtin', and only for train = 'photos' with its own "
                            "val and test splits (no val/test keys); remove it otherwise")
        for key in ("train", "val", "test"):
            value = getattr(self, key)
            if value is None and key != "train":
                continue
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"[data] {key} must be 'builtin', 'photos' or a folder path, got {value!r}")
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
        lat: object = self.latency_ms  # a number, a table or pairs as read from TOML
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


_PROTOCOL_OVERRIDES = ("warmup", "runs", "time_budget_s", "backend", "dtype", "input_hw", "runtime")


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
            reject_unknown_keys(f"[latency] {kind}", dict(value), _PROTOCOL_OVERRIDES)
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
    """How many trials, how many at once, how often a crashed trial is retried, and a wall-time limit.

    `minutes` (optional, per invocation's search loop): a training starts only if it is expected to
    end within it (`nas.durations`), nothing starts after it; running trainings finish.
    It makes a run's wall time predictable on any machine; the trial budget stays the upper bound."""

    trials: int = 40
    workers: int = 2
    max_retries: int = 2
    minutes: float | None = None

    def __post_init__(self) -> None:
        _int("[budget] trials", self.trials, minimum=1)
        _int("[budget] workers", self.workers, minimum=1)
        _int("[budget] max_retries", self.max_retries, minimum=0)
        if self.minutes is not None:
            object.__setattr__(self, "minutes", _positive("[budget] minutes", self.minutes))


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
_TOP_LEVEL = ("name", "description", "seed", "search", *_TABLES, "ablation", "halving")


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
    halving: HalvingSpec | None = None

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
        if self.halving is not None and not isinstance(self.halving, HalvingSpec):
            raise UserError(f"[halving] must be a HalvingSpec, got {type(self.halving).__name__}")
        if self.halving is not None and self.ablation is not None:
            raise UserError("[halving] does not apply to an ablation (every arm trains the same budget); remove one of them")
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
        ab.check_qps(self.data.qps)
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
        if out["data"].get("fallback") is None:  # absent when unset: studies without it keep their identity hash
            out["data"].pop("fallback", None)
        if self.ablation is not None:  # absent otherwise: search studies keep their identity hash
            out["ablation"] = self.ablation.to_dict()
        if self.halving is not None:  # likewise
            out["halving"] = _plain(self.halving)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_name: str | None = None) -> Study:
        if not isinstance(data, Mapping):
            raise UserError(f"a study must be a table of settings, got {type(data).__name__}")
        reject_unknown_keys("study", data, _TOP_LEVEL)
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
        if "halving" in data:
            kwargs["halving"] = HalvingSpec(**_table("[halving]", data["halving"], HalvingSpec))
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
                if table == "data" and sub in ("train", "val", "test"):
                    tables["data"]["fallback"] = None  # the data named by a flag is the data used
            else:
                top[key] = value
        updated = {t: dataclasses.replace(getattr(self, t), **v) for t, v in tables.items()}
        return dataclasses.replace(self, **top, **updated)

    def with_available_data(self, *, progress: bool = True) -> tuple[Study, str | None]:
        """``(study, notice)``: with ``[data] fallback`` and photos that cannot be had here, every split
        from the fallback, and one line saying so (None when nothing changed). The result has no
        fallback key, so its identity is that of a study written for the data it uses."""
        if self.data.fallback is None:
            return self, None
        from trainers.photos import resolve_default_source

        source, notice = resolve_default_source(progress=progress)
        data = dataclasses.replace(self.data, fallback=None, train=source if source != "photos" else self.data.train)
        return dataclasses.replace(self, data=data), notice

    def identity_dict(self) -> dict[str, Any]:
        """Everything that defines the experiment: all but labels and the budget.

        An ablation's arms name presets, whose networks can change between versions (a preset made
        exact): the hash of every arm's resolved architecture is part of the identity, so a run
        whose preset changed under it is refused on resume instead of mixing two networks."""
        d = self.to_dict()
        d.pop("description")
        d["budget"] = {k: v for k, v in d["budget"].items() if k not in BUDGET_FIELDS}
        if self.ablation is not None:
            d["arm_arch_hashes"] = {arm.name: self.ablation.arch_of(arm.name).arch_hash for arm in self.ablation.arms}
        return d

    @property
    def identity_hash(self) -> str:
        """What a run directory stores to refuse resuming a changed experiment (`content_hash`)."""
        return content_hash(self.identity_dict())

    @property
    def study_hash(self) -> str:
        return content_hash(self.to_dict())


# -- finding and loading --------------------------------------------------------------------------


def list_studies(root: Path | None = None) -> list[str]:
    """Names of the study files under `root` (default: the shipped ones), e.g. 'ablations/x'."""
    root = STUDIES_DIR if root is None else root
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.toml"))


def find_study_file(name_or_path: str | os.PathLike[str]) -> Path:
    """The study file for a name (`./studies/NAME.toml` first, then the shipped one), or a path.

    A value that names an existing file is that file; a name like 'ablations/x' is looked up like
    any other name; a value ending in .toml, or with a path separator that no study name matches,
    is a path that does not exist.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise UserError("--study is empty; give a study name (e.g. rtsr, smoke) or a .toml path")
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if not text.endswith(".toml"):
        for root in (Path.cwd() / "studies", STUDIES_DIR):
            path = root / f"{text}.toml"
            if path.is_file():
                return path
    if text.endswith(".toml") or os.sep in text:
        raise UserError(f"study file {text!r} does not exist; check the path, or give a study name ({', '.join(list_studies())})")
    raise UserError(
        f"unknown study {text!r}; shipped studies: {', '.join(list_studies()) or '(none)'}; "
        "for your own, write ./studies/NAME.toml or pass the path of a .toml file"
    )


def load_study(name_or_path: str | os.PathLike[str]) -> Study:
    """Read, validate and return a study (see the module docstring for the file layout)."""
    path = find_study_file(name_or_path)
    data = load_toml(path, what="study file")
    try:
        return Study.from_dict(data, default_name=path.stem)
    except UserError as err:
        raise UserError(f"study file {str(path)!r}: {err}") from None
    except TypeError as err:  # e.g. a scalar where a table belongs
        raise UserError(f"study file {str(path)!r}: {err}") from None
