"""Warmup-stable-decay (WSD) training that a promoted trial continues rung by rung.

Why WSD: successive halving (`nas.halving`) trains a trial to rung 0, evaluates it, and trains the
promoted ones further. A cosine schedule would need the final length in advance; under WSD the main
trajectory (linear warm-up, then a constant lr) does not depend on where a trial stops, so a trial
stopped at rung k trained exactly the first steps of one that goes on, and a promotion continues
from the stable checkpoint instead of starting again.

Every evaluation branches off a short linear decay to the stage's ``min_lr`` on the same trainer,
*after* the stable state was saved as the checkpoint; the decayed model is evaluated and thrown away.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from search_space.errors import UserError
from trainers.loop import Diverged, Trainer
from trainers.proxy import ProxyData, TrialResult, _fuse_and_evaluate, _preset_teacher_resolver, failed_result, result_fields
from trainers.recipe import Recipe, Stage, load_recipe

if TYPE_CHECKING:
    from search_space.arch import ArchConfig

__all__ = ["RungOutcome", "WSDPlan", "check_continuable", "train_rung"]

#: The shipped one-stage recipe that the errors point to.
WSD_RECIPE = "proxy_wsd"


@dataclass(frozen=True)
class WSDPlan:
    """The step layout shared by every trial of one halving run.

    - `warmup_steps`: linear warm-up at the start of the stable phase (W);
    - `horizon`: the top rung's stable steps. The trainer's budget is `total_steps` (the horizon plus
      the top rung's decay branch), the same for every trial, so the patch sampler, which is told
      that budget as the stage length, draws the same batch at step s whichever rung a trial stops at;
    - `decay`: a rung of R stable steps is evaluated after a branch of max(1, ceil(decay * R)) steps.
    """

    warmup_steps: int
    horizon: int
    decay: float

    def __post_init__(self) -> None:
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserError(f"WSD warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise UserError(f"WSD horizon must be an integer >= 1 (the top rung's steps), got {self.horizon!r}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay <= 1:
            raise UserError(f"WSD decay is the branch length as a fraction of the rung's steps, in (0, 1]; got {self.decay!r}")
        if self.warmup_steps > self.horizon:
            raise UserError(f"WSD warm-up ({self.warmup_steps} steps) is longer than the horizon ({self.horizon} steps)")
        object.__setattr__(self, "decay", float(self.decay))

    @classmethod
    def for_rungs(cls, recipe: Recipe, *, min_steps: int, top_steps: int, decay: float) -> WSDPlan:
        """The plan of a halving run (`nas.halving.HalvingSpec`): warm-up over the stage's `warmup`
        fraction of rung 0's `min_steps`, horizon at the top rung's `top_steps`."""
        check_continuable(recipe)
        return cls(warmup_steps=math.floor(recipe.stages[0].warmup * min_steps), horizon=top_steps, decay=decay)

    def decay_steps(self, rung_steps: int) -> int:
        """Length of the decay branch that evaluates a rung of `rung_steps` stable steps."""
        return max(1, math.ceil(self.decay * rung_steps))

    @property
    def total_steps(self) -> int:
        """The trainer's budget: the horizon and the top rung's decay branch."""
        return self.horizon + self.decay_steps(self.horizon)

    def lr_at(self, stage: Stage, *, step: int, rung_steps: int) -> float:
        """The lr at global `step` of a run evaluated after `rung_steps` stable steps.

        Stable phase (step < rung_steps): ``lr * (step + 1) / W`` during the warm-up (as `lr_at` of
        the recipes: the first step is never wasted at 0), then ``lr``; it does not depend on
        `rung_steps`, which is what makes continuation exact. Decay branch (step j = step - rung_steps
        of D): ``lr + (min_lr - lr) * (j + 1) / D``, so the first branch step is already below lr and
        the last one trains at min_lr.
        """
        warm = self.warmup_steps
        if 0 <= step < rung_steps:
            return stage.lr * (step + 1) / warm if step < warm else stage.lr
        branch = self.decay_steps(rung_steps)
        j = step - rung_steps
        if 0 <= j < branch:
            return stage.lr + (stage.min_lr - stage.lr) * (j + 1) / branch
        raise ValueError(f"step {step} is outside a rung of {rung_steps} stable and {branch} decay steps")


@dataclass(frozen=True)
class RungOutcome:
    """One rung of one trial: the evaluated result and the checkpoint the next rung continues from.

    `checkpoint` (the stable state as `torch.save` bytes of `Trainer.state_dict()`) is None whenever
    the result failed: a failed trial is never promoted. `resumed_from` is the step the run continued
    from (0 from scratch)."""

    result: TrialResult
    checkpoint: bytes | None
    decay_steps: int
    resumed_from: int


def check_continuable(recipe: Recipe) -> None:
    """Refuse a recipe that warmup-stable-decay continuation cannot train, saying what to use instead.

    WSD trains one stage with schedule = "wsd" (its lr, warmup as a fraction of rung 0, min_lr as
    the end of each decay branch, loss, optimizer and data settings). Stage actions need a stage boundary, which a budget-free run does not have."""
    if len(recipe.stages) != 1:
        raise UserError(
            f"recipe {recipe.name!r} has {len(recipe.stages)} stages; successive halving trains one stage with "
            f"warmup-stable-decay: use recipe {WSD_RECIPE!r} or a one-stage recipe"
        )
    stage = recipe.stages[0]
    if stage.schedule != "wsd":
        raise UserError(
            f"recipe {recipe.name!r}: its stage has schedule = {stage.schedule!r}; successive halving continues trainings "
            f"rung by rung and needs schedule = 'wsd' (warmup-stable-decay): set it, or use recipe {WSD_RECIPE!r}"
        )
    for problem, present in (
        ("remove_bias = true", stage.remove_bias),
        ("init = 'scratch'", stage.init == "scratch"),
        ("a distill table", stage.distill is not None),
    ):
        if present:
            raise UserError(
                f"recipe {recipe.name!r}: its stage has {problem}, which warmup-stable-decay continuation does not "
                f"support; remove it, or use recipe {WSD_RECIPE!r}"
            )


def _load_checkpoint(checkpoint: bytes) -> dict:
    return torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)


def _save_checkpoint(trainer: Trainer) -> bytes:
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    return buffer.getvalue()


def _checked_start(
    recipe: Recipe | str, *, rung_steps: int, plan: WSDPlan, threads: int, checkpoint: bytes | None
) -> tuple[Recipe, dict | None, int]:
    """(recipe, checkpoint state or None, step resumed from): everything `train_rung` refuses, refused
    before a thread count is changed or a clock started, so a bad call costs nothing.

    A rung shorter than the warm-up cannot be evaluated (its decay branch would start below lr), and a
    checkpoint at or past `rung_steps` has nothing to continue: both are the caller's bug (ValueError)."""
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    check_continuable(recipe)
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    lowest = max(1, plan.warmup_steps)  # the branch decays from lr, so the warm-up must be over
    if isinstance(rung_steps, bool) or not isinstance(rung_steps, int) or not lowest <= rung_steps <= plan.horizon:
        raise ValueError(f"rung_steps must be an integer in [{lowest}, {plan.horizon}] (warm-up..horizon), got {rung_steps!r}")
    state = None if checkpoint is None else _load_checkpoint(checkpoint)
    resumed_from = 0 if state is None else int(state["step"])
    if resumed_from >= rung_steps:
        raise ValueError(f"checkpoint is at step {resumed_from}, not before rung_steps {rung_steps}: nothing to continue")
    return recipe, state, resumed_from


def _new_trainer(arch: ArchConfig, recipe: Recipe, data: ProxyData, *, plan: WSDPlan, seed: int, device: str) -> Trainer:
    """A trainer sized to the plan's whole budget (`total_steps`), not to this rung: the patch sampler
    is told that budget, so every rung of every trial draws the same batch at step s."""
    return Trainer(
        arch,
        recipe,
        data.train,
        total_steps=plan.total_steps,
        seed=seed,
        device=device,
        teacher_resolver=_preset_teacher_resolver(data, steps=plan.horizon, seed=seed),
    )


def _resume(trainer: Trainer, state: dict | None, *, plan: WSDPlan, stage: Stage, rung_steps: int) -> None:
    """Restore the previous rung's stable state (if any) and put the trainer on this rung's WSD lr:
    the stable part is the same for every rung, so continuing is exact; only the branch depends on
    `rung_steps`."""
    if state is not None:
        trainer.load_state_dict(state)
    trainer.lr_override = lambda step: plan.lr_at(stage, step=step, rung_steps=rung_steps)


def _stable_then_decay(trainer: Trainer, *, rung_steps: int, branch: int) -> bytes:
    """Train the stable phase to `rung_steps`, save it, then train the decay branch on the same
    trainer; returns the saved stable state. The checkpoint is taken *before* the branch because the
    next rung continues the stable trajectory; the decayed weights are only for this evaluation."""
    trainer.run(until=rung_steps)
    saved = _save_checkpoint(trainer)
    trainer.run(until=rung_steps + branch)
    return saved


def train_rung(
    arch: ArchConfig,
    recipe: Recipe | str,
    data: ProxyData,
    *,
    rung_steps: int,
    plan: WSDPlan,
    seed: int,
    threads: int = 1,
    device: str = "cpu",
    checkpoint: bytes | None = None,
    eval_dtype: torch.dtype = torch.float32,
    keep_weights: bool = True,
) -> RungOutcome:
    """Train the stable phase up to `rung_steps` (from `checkpoint` when given), save it, decay, evaluate.

    As `proxy_train`: `threads` intra-op threads (restored afterwards), and anything that goes wrong
    in training or evaluation comes back as a failed result with its reason; a `UserError` raises.
    A checkpoint at or past `rung_steps`, or a rung beyond the plan's horizon, is the caller's bug
    (ValueError).
    """
    recipe, state, resumed_from = _checked_start(recipe, rung_steps=rung_steps, plan=plan, threads=threads, checkpoint=checkpoint)
    branch = plan.decay_steps(rung_steps)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    common = result_fields(arch, recipe, data, seed=seed, steps=rung_steps, threads=threads, device=device)
    trainer: Trainer | None = None
    try:
        trainer = _new_trainer(arch, recipe, data, plan=plan, seed=seed, device=device)
        _resume(trainer, state, plan=plan, stage=recipe.stages[0], rung_steps=rung_steps)
        saved = _stable_then_decay(trainer, rung_steps=rung_steps, branch=branch)
        result = _fuse_and_evaluate(trainer, data, train_seconds=time.perf_counter() - started, eval_dtype=eval_dtype,
                                    keep_weights=keep_weights, common=common)
        return RungOutcome(result=result, checkpoint=saved if result.ok else None, decay_steps=branch,
                           resumed_from=resumed_from)
    except UserError:
        raise
    except (Diverged, FloatingPointError, RuntimeError, ValueError) as exc:
        failed = failed_result(exc, arch=arch, trainer=trainer, started=started, common=common)
        return RungOutcome(result=failed, checkpoint=None, decay_steps=branch, resumed_from=resumed_from)
    finally:
        torch.set_num_threads(previous_threads)
