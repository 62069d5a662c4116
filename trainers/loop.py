"""The training loop shared by proxy training and full training: a recipe's stages over one step counter.

`Trainer` owns the model, the optimizer of the current stage and the global step. Everything a run
needs to continue after a kill is in `state_dict()` (the patch sampler is a pure function of (seed,
step), so no data state needs saving); `load_state_dict()` of a checkpoint continues bit-for-bit on
the same machine.

Stage actions from the survey are applied when a stage starts:

- ``remove_bias`` (CASR's last stage): the network is rebuilt with ``bias=False`` and every weight
  that still exists is carried over; the biases are dropped (as CASR loads with ``strict=False``);
- ``init = "scratch"``: fresh weights (seeded) instead of the previous stage's;
- ``distill``: a frozen teacher's output enters the loss, ``L(sr, hr) + w * L(teacher(lr), sr)``.

A run that diverges (a non-finite loss, or a loss that explodes past `DIVERGENCE_LIMIT`) raises
`Diverged` with the step and the loss, so callers can record a failed trial with its reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from search_space.arch import ArchConfig
from search_space.blocks import set_online_reparam
from search_space.errors import UserError
from search_space.network import build
from trainers.data import PairedSet, PatchSampler
from trainers.deploy_file import DEPLOY_FILE, load_deploy
from trainers.device_sampler import patch_sampler
from trainers.linear_baseline import load_fitted_anchors
from trainers.losses import build_loss, distillation_loss
from trainers.recipe import Recipe, Stage, lr_at

__all__ = ["DIVERGENCE_LIMIT", "Diverged", "Trainer", "TeacherResolver", "load_teacher_checkpoint"]

DIVERGENCE_LIMIT = 10.0
"""A loss above this (on [0, 1] images, where L1/L2 of any sane output is below 1) means the run exploded."""

TeacherResolver = Callable[[str], nn.Module]


class Diverged(RuntimeError):
    """Training blew up; carries the step and the loss value for the failure reason."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"diverged at step {step}: loss = {loss:.4g}")
        self.step = step
        self.loss = loss


def load_teacher_checkpoint(spec: str) -> nn.Module:
    """A teacher from a `trainers.full` output folder or from a file of one.

    A folder's `deploy.pt` (its arch and fused weights) comes first: rebuilt by our own `build`, it
    runs at every patch size, while a `deploy.pt2` of a network with SAFM++ is exported for 960x540
    only (its adaptive pool's windows depend on the size) and would fail on the first training patch.
    Without one (a folder copied without it, or a file passed directly): a `torch.export` program
    (.pt2) or TorchScript (.ts, what runs before deploy.pt2 wrote), loaded as they are."""
    from pathlib import Path

    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / DEPLOY_FILE).is_file():
            try:
                return load_deploy(path)
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's folder
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"cannot load distillation teacher {path / DEPLOY_FILE}: {detail}; pass a folder written by "
                                "trainers.full") from None
        path = next((path / name for name in ("deploy.pt2", "deploy.ts") if (path / name).is_file()), path / "deploy.pt2")
    if not path.is_file():
        raise UserError(
            f"distillation teacher {spec!r} is neither a checkpoint file nor a trainers.full output folder; "
            "train a teacher first (python -m trainers.full ...) and pass its folder or deploy.pt2"
        )
    try:
        if path.suffix == ".pt2":
            teacher = _ExportedTeacher(torch.export.load(str(path)).module())
        else:
            teacher = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot load distillation teacher {path}: {detail}; pass a deploy.pt2 written by trainers.full") from None
    return teacher.eval()


class _ExportedTeacher(nn.Module):
    """A `torch.export` program's module as a teacher: it was exported in eval mode and torch refuses
    `.eval()`/`.train()` on it, so the mode switch stops here instead of reaching it."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> _ExportedTeacher:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _strip_biases(model: nn.Module, arch: ArchConfig) -> tuple[nn.Module, ArchConfig]:
    """Rebuild `model` without biases, keeping every weight that still exists in the bias-free form."""
    arch = dataclasses.replace(arch, bias=False)
    fresh = build(arch)
    old = model.state_dict()
    new_keys = fresh.state_dict()
    # Extra state (a fitted anchor's fit key) has no shape: it is carried when present in both.
    carried = {k: v for k, v in old.items() if k in new_keys and getattr(new_keys[k], "shape", None) == getattr(v, "shape", None)}
    missing = sorted(set(new_keys) - set(carried))
    if missing:
        raise RuntimeError(f"bias removal lost weights that the bias-free network needs: {missing[:5]}")
    fresh.load_state_dict(carried)
    return fresh, arch


class Trainer:
    """Runs `recipe` on `arch` for `total_steps` steps of training patches from `train`."""

    def __init__(
        self,
        arch: ArchConfig,
        recipe: Recipe,
        train: PairedSet,
        *,
        total_steps: int,
        seed: int,
        device: str | torch.device = "cpu",
        teacher_resolver: TeacherResolver | None = None,
    ) -> None:
        if total_steps < 1:
            raise UserError(f"training needs at least 1 step, got {total_steps}")
        self.recipe = recipe
        self.train_set = train
        self.total_steps = total_steps
        self.seed = seed
        self.device = torch.device(device)
        self.bounds = recipe.stage_bounds(total_steps)
        for i, stage in enumerate(recipe.stages, start=1):
            if stage.patch % arch.down_factor:
                raise UserError(
                    f"recipe {recipe.name!r}, stage {i}: LR patch {stage.patch} is not divisible by the network's "
                    f"down_factor {arch.down_factor}; use a multiple of 12 (fits every factor 1-4)"
                )
        self.teacher_resolver = teacher_resolver or load_teacher_checkpoint
        torch.manual_seed(seed)
        self.arch = arch
        self.model = self._build(arch)
        self.step = 0
        self.stage_index = -1
        self.last_loss = math.nan
        self._first_loss: float | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._sampler: PatchSampler | None = None
        self._teacher: nn.Module | None = None
        self._teachers: dict[str, nn.Module] = {}
        #: When set, maps the global step to the lr used instead of the recipe's schedule (`lr_at`): the
        #: warmup-stable-decay runs of `trainers.continuation` need an lr that does not know the budget.
        self.lr_override: Callable[[int], float] | None = None

    def _build(self, arch: ArchConfig) -> nn.Module:
        """A fresh network for `arch` on the device; a fitted anchor holds the training split's filter."""
        model = build(arch)
        load_fitted_anchors(model, self.train_set)
        return model.to(self.device)

    # -- stages -----------------------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self.recipe.stages[self.stage_index]

    def _stage_at(self, step: int) -> int:
        for i, (start, end) in enumerate(self.bounds):
            if start <= step < end:
                return i
        return len(self.bounds) - 1

    def _enter_stage(self, index: int, *, resumed: bool = False) -> None:
        """Set up stage `index`; `resumed` skips the one-time actions already applied before a checkpoint."""
        stage = self.recipe.stages[index]
        if stage.init == "scratch" and index > 0 and not resumed:
            torch.manual_seed(self.seed + 7919 * index)
            self.model = self._build(self.arch)
        if stage.remove_bias and self.arch.bias:
            model, self.arch = _strip_biases(self.model.cpu(), self.arch)
            self.model = model.to(self.device)
        set_online_reparam(self.model, self.recipe.online_reparam)  # train linear branches as one conv
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if stage.optimizer == "adamw" else torch.optim.Adam
        self._optimizer = opt_cls(params, lr=stage.lr, weight_decay=stage.weight_decay)
        # Off the CPU, patches are cut on the device from a once-per-set copy of the images (same batches).
        self._sampler = patch_sampler(
            self.train_set,
            device=self.device,
            patch=stage.patch,
            batch=stage.batch,
            qp_sampling=stage.qp_sampling,
            seed=(self.seed * 1009 + index) % (2**63),
        )
        self._loss = build_loss(stage.loss)
        self._teacher = None
        if stage.distill is not None:
            name = stage.distill.teacher
            if name not in self._teachers:
                teacher = self.teacher_resolver(name).to(self.device).eval()
                for param in teacher.parameters():  # ScriptModules lack requires_grad_()
                    param.requires_grad_(False)
                self._teachers[name] = teacher
            self._teacher = self._teachers[name]
            self._distill_loss = build_loss(stage.distill.loss or stage.loss)
        self.stage_index = index

    # -- running ----------------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step at `self.step`; returns the loss (raises `Diverged` on blow-up)."""
        index = self._stage_at(self.step)
        if index != self.stage_index:
            self._enter_stage(index)
        assert self._optimizer is not None and self._sampler is not None
        stage = self.stage
        start, end = self.bounds[index]
        if self.lr_override is not None:
            lr = self.lr_override(self.step)
        else:
            lr = lr_at(stage, step_in_stage=self.step - start, stage_steps=end - start)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        lr_batch, hr_batch, _ = self._sampler.batch(self.step - start, end - start)
        lr_batch, hr_batch = lr_batch.to(self.device), hr_batch.to(self.device)
        self.model.train()
        out = self.model(lr_batch)
        loss = self._loss(out, hr_batch)
        if self._teacher is not None:
            with torch.no_grad():
                target = self._teacher(lr_batch)
            loss = loss + distillation_loss(out, target, spec=self._distill_loss, weight=stage.distill.weight)
        value = float(loss.detach())
        if self._first_loss is None:
            self._first_loss = value
        if not math.isfinite(value) or value > DIVERGENCE_LIMIT:
            raise Diverged(self.step, value)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), stage.grad_clip)
        self._optimizer.step()
        self.last_loss = value
        self.step += 1
        return value

    def run(self, until: int | None = None, *, on_step: Callable[[int, float], None] | None = None) -> None:
        """Train up to step `until` (default: the end); `on_step(step, loss)` after each step."""
        until = self.total_steps if until is None else min(until, self.total_steps)
        while self.step < until:
            loss = self.train_step()
            if on_step is not None:
                on_step(self.step, loss)
        # A bad update after the last checked loss would only show in the weights: check them once here
        # rather than every step (the per-step loss check catches divergence during the run).
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise Diverged(self.step, math.inf)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    # -- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: step, stage, arch (bias may have been removed), weights, optimizer."""
        return {
            "step": self.step,
            "stage_index": self.stage_index,
            "arch": self.arch.to_dict(),
            "recipe_hash": self.recipe.hash,
            "total_steps": self.total_steps,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "first_loss": self._first_loss,
            "last_loss": self.last_loss,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` of a run with the same recipe, budget and seed."""
        for key, mine in (("recipe_hash", self.recipe.hash), ("total_steps", self.total_steps), ("seed", self.seed)):
            if state[key] != mine:
                raise UserError(
                    f"checkpoint was written with {key} = {state[key]!r}, this run has {mine!r}; "
                    "resume with the same config, or start in a new output folder"
                )
        self.arch = ArchConfig.from_dict(state["arch"])
        self.model = self._build(self.arch)
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        self.stage_index = -1
        if state["stage_index"] >= 0 and self.step < self.total_steps:
            index = self._stage_at(self.step)
            same_stage = index == state["stage_index"]
            # Inside the checkpoint's stage its one-time actions already happened; a stage that starts
            # exactly at the checkpoint step has not started yet and gets them now.
            self._enter_stage(index, resumed=same_stage)
            if state["optimizer"] is not None and same_stage:
                self._optimizer.load_state_dict(state["optimizer"])
        self._first_loss = state["first_loss"]
        self.last_loss = state["last_loss"]
        torch.set_rng_state(state["torch_rng"])
