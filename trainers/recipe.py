"""Multi-stage training recipes as data: frozen `Recipe`/`Stage` values loaded from TOML.

The AIS 2024 entries mostly differ from each other in *how* they train as much as in what they
train (CASR: L1 from scratch on QP31, then L2 + distillation on all QPs, then a bias-free last
stage; URPNet: an easy-to-hard QP curriculum). Keeping the recipe as data (BasicSR style) makes each
of these an ablation you can point a study at, and gives every trained artefact a recipe hash.

Shape of a recipe (TOML, one `[[stages]]` table per stage, in order)::

    name = "casr"
    description = "..."
    [[stages]]
    share = 0.34                 # fraction of the step budget; shares must sum to 1
    loss = { l1 = 1.0 }          # trainers.losses.LossSpec mapping
    optimizer = "adam"           # adam | adamw
    lr = 5e-4
    schedule = "cosine"          # cosine | step | constant
    qp_sampling = "fixed:31"     # uniform | curriculum | fixed:Q[,Q...]
    ...
    [stages.distill]             # optional
    teacher = "casr_teacher"     # preset name or checkpoint path, resolved by the trainer
    weight = 0.1

Decisions:
- Shares must sum to 1 (within 1e-6) rather than being normalised, so one recipe has one spelling
  and one hash. `stage_bounds(total_steps)` turns them into integer step ranges.
- The step budget and the seed are *not* part of a recipe: a study chooses them per trial, so the
  same recipe hash covers a 300-step proxy run and a long full training.
- `name` and `description` are labels, not content: they are excluded from `Recipe.hash`, so a
  renamed copy of a recipe trains, caches and compares as the same recipe.
- Step milestones are fractions of the stage, for the same reason the budget is not fixed.
- `online_reparam` (top level, default true): train every linear multi-branch block as the one conv
  it fuses to (`search_space.blocks.set_online_reparam`); false trains the multi-branch form, for
  comparison. Same function, different round-off, so false is a different recipe (its own hash);
  at the default it is left out of `to_dict()` and of the hash, so recipes written before the key
  existed keep their hashes (as `ArchConfig.arch_hash` leaves version-2 fields at their defaults out).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from search_space.configio import atomic_write, content_hash, load_toml, reject_unknown_keys, shipped_folder, strip_none
from search_space.errors import UserError
from trainers.losses import LossSpec

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "QP_SAMPLING_FORMS",
    "RECIPES_DIR",
    "SCHEDULES",
    "Distill",
    "Recipe",
    "Stage",
    "check_qp_sampling",
    "list_recipes",
    "load_recipe",
    "lr_at",
    "save_recipe",
]

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
#: "wsd" (warmup-stable-decay) is trained rung by rung by `trainers.continuation` (successive halving).
SCHEDULES: tuple[str, ...] = ("cosine", "step", "constant", "wsd")
#: "continue": start from the previous stage's weights (for the first stage: a fresh model).
#: "scratch": re-initialise the model at the start of the stage.
INITS: tuple[str, ...] = ("continue", "scratch")
QP_SAMPLING_FORMS: tuple[str, ...] = ("uniform", "curriculum", "fixed:Q[,Q...]")


#: The folder of shipped recipes; `load_recipe("casr")` reads RECIPES_DIR / "casr.toml".
RECIPES_DIR: Path = shipped_folder("trainers", "recipes")

_SHARE_TOL = 1e-6
_QP_RANGE = (0, 63)  # AV1 quantizer parameters; the challenge uses 31, 39, 47, 55, 63


def check_qp_sampling(text: str) -> str:
    """Validate the syntax of a QP-sampling string and return it unchanged.

    The string is interpreted by `trainers.data.QPSampling`; this only rejects what can never be
    valid there, at recipe load time: `uniform`, `curriculum`, or `fixed:` followed by distinct,
    ascending integer QPs in 0..63 separated by commas (e.g. `fixed:31`, `fixed:31,39`). Ascending
    order is required so that one QP set has one spelling (and one recipe hash).
    """
    valid = f"valid forms: {', '.join(QP_SAMPLING_FORMS)} (e.g. 'fixed:31')"
    if not isinstance(text, str):
        raise UserError(f"qp_sampling must be a string, got {text!r}; {valid}")
    if text in ("uniform", "curriculum"):
        return text
    prefix = "fixed:"
    if not text.startswith(prefix):
        raise UserError(f"qp_sampling {text!r} is not recognised; {valid}")
    items = text[len(prefix):].split(",")
    qps: list[int] = []
    for item in items:
        if not item or not item.isdigit() or not item.isascii():
            raise UserError(
                f"qp_sampling {text!r}: {item!r} is not a QP; write integers separated by commas, "
                "without spaces, e.g. 'fixed:31,39'"
            )
        qp = int(item)
        if not _QP_RANGE[0] <= qp <= _QP_RANGE[1]:
            raise UserError(f"qp_sampling {text!r}: QP {qp} is outside {_QP_RANGE[0]}..{_QP_RANGE[1]}")
        qps.append(qp)
    if len(set(qps)) != len(qps):
        raise UserError(f"qp_sampling {text!r} repeats a QP; list each QP once")
    if qps != sorted(qps):
        canonical = prefix + ",".join(str(q) for q in sorted(qps))
        raise UserError(f"qp_sampling {text!r}: list the QPs in ascending order: {canonical!r}")
    return text


# --------------------------------------------------------------------------- value checks


def _number(key: str, value: object, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise UserError(f"{key} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def _integer(key: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{key} must be >= {minimum}, got {value!r}")
    return value


def _choice(key: str, value: object, options: tuple[str, ...]) -> str:
    if value not in options:
        raise UserError(f"{key} = {value!r} is not valid; choose one of: {', '.join(options)}")
    return value  # type: ignore[return-value]


def _check_keys(data: Mapping[str, Any], cls: type, *, where: str) -> None:
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a table, got {data!r}")
    reject_unknown_keys(where, data, (f.name for f in fields(cls)))


def _context(where: str, err: UserError) -> UserError:
    return UserError(f"{where}: {err}")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Distill:
    """Output distillation for a stage: add `weight * L(teacher(x), model(x))` to the loss.

    `teacher` is a preset name or a checkpoint path; the trainer resolves and loads it. `loss` is
    the distillation loss; None means the stage's own loss (CASR uses L2 for both).
    """

    teacher: str
    weight: float
    loss: LossSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher.strip():
            raise UserError(
                f"distill.teacher must be a preset name or a checkpoint path, got {self.teacher!r}"
            )
        object.__setattr__(self, "weight", _number("distill.weight", self.weight, minimum=0, strict=True))
        if self.loss is not None and not isinstance(self.loss, LossSpec):
            raise UserError(f"distill.loss must be a LossSpec, got {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "weight": self.weight,
            "loss": None if self.loss is None else self.loss.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "distill") -> Distill:
        _check_keys(data, cls, where=where)
        for key in ("teacher", "weight"):
            if key not in data:
                raise UserError(f"{where}: missing key {key!r} (a distill table needs teacher and weight)")
        try:
            loss = data.get("loss")
            return cls(
                teacher=data["teacher"],
                weight=data["weight"],
                loss=None if loss is None else LossSpec.from_dict(loss),
            )
        except UserError as err:
            raise _context(where, err) from None


@dataclass(frozen=True)
class Stage:
    """One training stage: what to optimise, how, on what data, for which share of the budget.

    - `share`: fraction of the recipe's step budget (all shares sum to 1).
    - `loss`: the reconstruction loss (a `LossSpec`).
    - `optimizer`, `lr`, `weight_decay`: Adam or AdamW and their settings.
    - `schedule`: "cosine" (lr -> min_lr), "step" (x gamma at each milestone, fractions of the
      stage) or "constant"; all three start with a linear warm-up over the first `warmup`
      fraction of the stage (see `lr_at`).
    - `patch`: LR patch side in pixels (HR patch = 4 x patch); `batch`: patches per step.
    - `qp_sampling`: which AVIF QPs the stage trains on (see `check_qp_sampling`).
    - `grad_clip`: max global gradient norm, or None for no clipping.
    - `remove_bias`: the stage trains a bias-free model (CASR's last stage). The trainer rebuilds
      the network without biases when the previous stage had them; since biases cannot come back,
      every later stage that continues from this one must set it too.
    - `distill`: optional output distillation (`Distill`).
    - `init`: "continue" from the previous stage's weights, or "scratch".
    """

    loss: LossSpec
    lr: float
    share: float = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: float = 0.0
    min_lr: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.5
    patch: int = 48
    batch: int = 16
    qp_sampling: str = "uniform"
    grad_clip: float | None = None
    remove_bias: bool = False
    distill: Distill | None = None
    init: str = "continue"

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.loss, LossSpec):
            raise UserError(f"loss must be a LossSpec, got {self.loss!r}")
        put(self, "lr", _number("lr", self.lr, minimum=0, strict=True))
        put(self, "share", _number("share", self.share, minimum=0, strict=True))
        if self.share > 1 + _SHARE_TOL:
            raise UserError(f"share must be <= 1 (a fraction of the step budget), got {self.share!r}")
        put(self, "optimizer", _choice("optimizer", self.optimizer, OPTIMIZERS))
        put(self, "weight_decay", _number("weight_decay", self.weight_decay, minimum=0))
        put(self, "schedule", _choice("schedule", self.schedule, SCHEDULES))
        warmup = _number("warmup", self.warmup, minimum=0)
        if warmup >= 1:
            raise UserError(f"warmup is a fraction of the stage and must be < 1, got {self.warmup!r}")
        put(self, "warmup", warmup)
        min_lr = _number("min_lr", self.min_lr, minimum=0)
        if min_lr > self.lr:
            raise UserError(f"min_lr ({min_lr!r}) must not exceed lr ({self.lr!r})")
        if self.schedule not in ("cosine", "wsd") and min_lr != 0:
            raise UserError(f"min_lr only applies to schedule = 'cosine' or 'wsd' (this stage uses {self.schedule!r}); remove it")
        put(self, "min_lr", min_lr)
        self._check_step_schedule()
        put(self, "patch", _integer("patch", self.patch, minimum=4))
        put(self, "batch", _integer("batch", self.batch, minimum=1))
        check_qp_sampling(self.qp_sampling)
        if self.grad_clip is not None:
            put(self, "grad_clip", _number("grad_clip", self.grad_clip, minimum=0, strict=True))
        if not isinstance(self.remove_bias, bool):
            raise UserError(f"remove_bias must be true or false, got {self.remove_bias!r}")
        if self.distill is not None and not isinstance(self.distill, Distill):
            raise UserError(f"distill must be a Distill table, got {self.distill!r}")
        if self.distill is not None and self.distill.loss == self.loss:
            # One spelling per recipe: a distillation loss equal to the stage loss is the default.
            put(self, "distill", Distill(teacher=self.distill.teacher, weight=self.distill.weight))
        put(self, "init", _choice("init", self.init, INITS))

    def _check_step_schedule(self) -> None:
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, (tuple, list)):
            raise UserError(f"milestones must be a list of stage fractions, got {self.milestones!r}")
        milestones = tuple(_number("milestones", m) for m in self.milestones)
        gamma = _number("gamma", self.gamma, minimum=0, strict=True)
        if self.schedule != "step":
            if milestones or gamma != 0.5:
                raise UserError(
                    f"milestones and gamma only apply to schedule = 'step' (this stage uses "
                    f"{self.schedule!r}); remove them"
                )
        else:
            if not milestones:
                raise UserError("schedule = 'step' needs milestones, e.g. milestones = [0.5, 0.75]")
            if any(not 0 < m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)):
                raise UserError(
                    f"milestones must be strictly increasing fractions of the stage in (0, 1), "
                    f"got {list(self.milestones)!r}"
                )
            if gamma >= 1:
                raise UserError(f"gamma is the lr factor at each milestone and must be < 1, got {self.gamma!r}")
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(self, "gamma", gamma)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON/TOML-ready; None marks an absent optional table/value."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (LossSpec, Distill)):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "stage") -> Stage:
        """Build from a table; missing keys take the defaults, `loss` and `lr` are required."""
        _check_keys(data, cls, where=where)
        for key in ("loss", "lr"):
            if key not in data:
                raise UserError(f"{where}: missing key {key!r} (every stage needs loss and lr)")
        kwargs = {k: v for k, v in data.items() if v is not None}
        try:
            kwargs["loss"] = LossSpec.from_dict(data["loss"])
        except UserError as err:
            raise _context(f"{where}, loss", err) from None
        if data.get("distill") is not None:
            kwargs["distill"] = Distill.from_dict(data["distill"], where=f"{where}, distill")
        if "milestones" in kwargs and isinstance(kwargs["milestones"], list):
            kwargs["milestones"] = tuple(kwargs["milestones"])
        try:
            return cls(**kwargs)
        except UserError as err:
            raise _context(where, err) from None


@dataclass(frozen=True)
class Recipe:
    """A named, ordered tuple of stages; see the module docstring for the TOML layout."""

    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    #: Train linear multi-branch blocks as their fused conv (see the module docstring).
    online_reparam: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise UserError(f"a recipe needs a non-empty name, got {self.name!r}")
        if not isinstance(self.online_reparam, bool):
            raise UserError(f"recipe {self.name!r}: online_reparam must be true or false, got {self.online_reparam!r}")
        if not isinstance(self.description, str):
            raise UserError(f"recipe {self.name!r}: description must be a string, got {self.description!r}")
        stages = tuple(self.stages) if isinstance(self.stages, (list, tuple)) else ()
        _check_stages(stages, where=f"recipe {self.name!r}")
        object.__setattr__(self, "stages", stages)

    @property
    def hash(self) -> str:
        """First 12 hex digits of sha256 over the canonical JSON of the stages (labels excluded).

        `online_reparam` enters only when it is off, so the default keeps the hashes recipes had
        before the key existed (studies and checkpoints are keyed by them)."""
        stages = [s.to_dict() for s in self.stages]
        if self.online_reparam:
            return content_hash(stages)
        return content_hash({"stages": stages, "online_reparam": False})

    def to_dict(self) -> dict[str, Any]:
        """Name, description, stages, and `online_reparam` only when it is off (one spelling per recipe)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "stages": [s.to_dict() for s in self.stages],
        }
        if not self.online_reparam:
            out["online_reparam"] = False
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Recipe:
        """Build and validate; errors name `source` (a file name) and the 1-based stage number."""
        if source is not None:
            label = source
        else:
            label = str(data.get("name", "<dict>")) if isinstance(data, Mapping) else "<dict>"
        where = f"recipe {label!r}"
        _check_keys(data, cls, where=where)
        if "name" not in data:
            raise UserError(f"{where}: missing key 'name'")
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise UserError(f"{where}: needs at least one [[stages]] table (key 'stages', a list of tables)")
        stages = tuple(
            Stage.from_dict(s, where=f"{where}, stage {i}") for i, s in enumerate(raw_stages, start=1)
        )
        _check_stages(stages, where=where)  # first, so that errors name the file
        return cls(
            name=data["name"],
            stages=stages,
            description=data.get("description", ""),
            online_reparam=data.get("online_reparam", True),
        )

    def stage_bounds(self, total_steps: int) -> list[tuple[int, int]]:
        """Integer `[start, end)` step ranges per stage that tile `range(total_steps)` exactly.

        Boundaries are the cumulative shares times the budget, rounded half up, so rounding errors
        never accumulate. Every stage must get at least one step; the error says the minimum budget.
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UserError(f"total_steps must be a positive integer, got {total_steps!r}")
        bounds = _bounds(self.stages, total_steps)
        if any(end <= start for start, end in bounds):
            need = _min_steps(self.stages, total_steps + 1)
            raise UserError(
                f"recipe {self.name!r}: {total_steps} steps leave a stage with no steps "
                f"(shares {', '.join(f'{s.share:g}' for s in self.stages)}); use at least {need} steps"
            )
        return bounds


def _check_stages(stages: tuple[Stage, ...], *, where: str) -> None:
    """Checks across stages: shares sum to 1, bias removal is never undone."""
    if not stages:
        raise UserError(f"{where} has no stages; add at least one [[stages]] table")
    for stage in stages:
        if not isinstance(stage, Stage):
            raise UserError(f"{where}: stages must be Stage values, got {stage!r}")
    total = math.fsum(s.share for s in stages)
    if abs(total - 1.0) > _SHARE_TOL:
        shares = ", ".join(f"{s.share:g}" for s in stages)
        raise UserError(
            f"{where}: stage shares ({shares}) sum to {total:g}; they are fractions of the step "
            "budget and must sum to 1"
        )
    for i in range(1, len(stages)):
        prev, cur = stages[i - 1], stages[i]
        if prev.remove_bias and not cur.remove_bias and cur.init == "continue":
            raise UserError(
                f"{where}, stage {i + 1}: continues from bias-free stage {i} but has remove_bias = "
                "false; biases cannot come back, so set remove_bias = true (or init = 'scratch')"
            )


def _bounds(stages: tuple[Stage, ...], total: int) -> list[tuple[int, int]]:
    edges = [0]
    cumulative = 0.0
    for stage in stages[:-1]:
        cumulative += stage.share
        edges.append(min(total, math.floor(cumulative * total + 0.5)))
    edges.append(total)
    return list(zip(edges[:-1], edges[1:]))


def _min_steps(stages: tuple[Stage, ...], start: int) -> int:
    """The smallest budget >= start that gives every stage a step.

    Any budget above 1 / (smallest share) works (each stage then gets more than share * T - 1 > 0
    steps after rounding), so that bound ends the search.
    """
    enough = math.floor(1.0 / min(s.share for s in stages)) + 1
    for n in range(start, min(enough, start + 1_000_000)):
        if all(e > s for s, e in _bounds(stages, n)):
            return n
    return max(enough, start)


def lr_at(stage: Stage, *, step_in_stage: int, stage_steps: int) -> float:
    """The learning rate at 0-based `step_in_stage` of a stage that runs `stage_steps` steps.

    Warm-up: the first W = floor(warmup * stage_steps) steps ramp linearly, lr * (s + 1) / W, so the
    first step is never wasted at lr 0 and step W - 1 reaches lr. After it, with p = (s - W) /
    (stage_steps - W) in [0, 1):
    - cosine: min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2;
    - step: lr * gamma ** (number of milestones m with s >= round(m * stage_steps));
    - constant: lr.
    """
    if stage_steps < 1 or not 0 <= step_in_stage < stage_steps:
        raise ValueError(f"need 0 <= step_in_stage < stage_steps, got {step_in_stage} and {stage_steps}")
    if stage.schedule == "wsd":
        raise UserError(
            "schedule = 'wsd' (warmup-stable-decay) is trained rung by rung under successive halving (a study with a "
            "[halving] table); use 'cosine', 'step' or 'constant' for a fixed budget"
        )
    warm = math.floor(stage.warmup * stage_steps)
    if step_in_stage < warm:
        return stage.lr * (step_in_stage + 1) / warm
    if stage.schedule == "cosine":
        p = (step_in_stage - warm) / (stage_steps - warm)
        return stage.min_lr + (stage.lr - stage.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    if stage.schedule == "step":
        passed = sum(1 for m in stage.milestones if step_in_stage >= math.floor(m * stage_steps + 0.5))
        return stage.lr * stage.gamma**passed
    return stage.lr


# --------------------------------------------------------------------------- files


def list_recipes() -> list[str]:
    """Names of the shipped recipes (files in RECIPES_DIR), sorted."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(path_or_name: str | os.PathLike[str]) -> Recipe:
    """Load a recipe from a TOML file, or a shipped one by name (`"casr"` -> RECIPES_DIR / "casr.toml").

    A file without a `name` key is named after its stem.
    """
    text_arg = os.fspath(path_or_name)
    looks_like_path = text_arg.endswith(".toml") or os.sep in text_arg or "/" in text_arg
    if looks_like_path or Path(text_arg).is_file():
        path = Path(text_arg)
        if not path.is_file():
            raise UserError(f"recipe file {text_arg!r} does not exist; check the path")
    else:
        path = RECIPES_DIR / f"{text_arg}.toml"
        if not path.is_file():
            raise UserError(
                f"unknown recipe {text_arg!r}; shipped recipes: {', '.join(list_recipes()) or '(none)'}, "
                "or pass the path of a .toml file"
            )
    data = load_toml(path, what="recipe file")
    data.setdefault("name", path.stem)
    return Recipe.from_dict(data, source=path.name)


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write `recipe` as TOML atomically (temp file in the same folder, then os.replace)."""
    import tomli_w

    target = Path(path)
    if not target.parent.is_dir():
        raise UserError(f"cannot save recipe to {str(target)!r}: folder {str(target.parent)!r} does not exist")
    text = tomli_w.dumps(strip_none(recipe.to_dict()))
    atomic_write(target, text)
    return target
