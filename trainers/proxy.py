"""Proxy training: the inner loop of every search trial.

`proxy_train` trains the training form of an architecture for a short budget, fuses it, checks that
the fused (deploy) model computes the same function, and evaluates the deploy model on the
validation set at every QP against Lanczos and against the least-squares linear baseline. Whatever
goes wrong inside (divergence, a fusion mismatch, a numerical error) comes back as a failed
`TrialResult` with its reason, never as an exception in the caller: a search must survive its
worst trials. Mistakes in the caller's own input (`UserError`) still raise, since no trial can
succeed with them.

Deterministic on CPU for a given seed and thread count: initialization is seeded, and the patch
sampler is a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_space.arch import ArchConfig
from search_space.errors import UserError
from search_space.network import deploy
from trainers.data import PairedSet
from trainers.splits import load_splits
from trainers.evaluate import EvalReport, evaluate
from trainers.loop import Diverged, Trainer, load_teacher_checkpoint
from trainers.recipe import Recipe, load_recipe
from trainers.status import TaskStatus

__all__ = ["DEFAULT_PROXY_STEPS", "FUSE_TOLERANCE", "ProxyData", "TrialResult", "failed_result", "proxy_train", "result_fields"]

DEFAULT_PROXY_STEPS = 300
"""Default proxy budget in optimizer steps (see README: enough for casr/anunet to beat Lanczos at QP31)."""

FUSE_TOLERANCE = 3e-6
"""Max |deploy - train| / max|train| in float64 after training. Fusion is exact (and computed in
float64, `search_space.network.deploy`), so this only catches bugs; what remains is the rounding of
the fused weights to float32, which grows with depth and input scale: a trained six-SPAB SPAN with
its x255 input reached 1.08e-6 when fused in float32, above the 1e-6 this was before. One fused
weight off by 1e-3 in a small test network gives 8.8e-6 and is still caught."""


@dataclass(frozen=True)
class ProxyData:
    """Training, validation and test pairs (decoded LR held in memory); no image is in two splits.

    ``val`` and ``test`` loaded by `load` carry the linear baseline fitted on ``train``
    (`PairedSet.linear_baseline`: the QP-blind filter and the per-QP oracles), ``train`` the
    QP-blind filters of the `fitted` anchors (`PairedSet.anchors`). ``test`` is None when not loaded (a search trains and validates
    only); ``carved`` names the splits that were cut out of the training images.
    """

    train: PairedSet
    val: PairedSet
    test: PairedSet | None = None
    carved: tuple[str, ...] = ()

    @classmethod
    def load(
        cls,
        train_source: str | Path = "builtin",
        val_source: str | Path | None = None,
        test_source: str | Path | None = None,
        *,
        qps: Sequence[int] = (31, 39, 47, 55, 63),
        cache_dir: str | Path | None = None,
        workers: int | None = None,
        load_test: bool = True,
        progress: bool = True,
    ) -> ProxyData:
        """Load (and on first use, degrade and cache) the splits and fit the linear baseline on train.

        A split not given comes from the builtin dataset, the training folder's ``val/``/``test/``
        subfolder, or is carved from the training images (`trainers.splits.load_splits`). The linear
        baseline's filters are cached under ``cache_dir`` too, and scored once here on val and test.
        """
        from trainers.cache import LRCache
        from trainers.linear_baseline import anchor_filters, attach_linear_baseline, fit_linear_baseline

        cache = LRCache(Path(cache_dir) if cache_dir is not None else None)
        splits = load_splits(
            train_source, val_source, test_source, qps=qps, cache=cache, workers=workers, load_test=load_test, progress=progress
        )
        baseline = fit_linear_baseline(splits.train, cache_dir=cache.root, progress=progress)
        anchors = anchor_filters(splits.train, cache_dir=cache.root, progress=progress)
        return cls(
            train=dataclasses.replace(splits.train, anchors=anchors),
            val=attach_linear_baseline(splits.val, baseline),
            test=None if splits.test is None else attach_linear_baseline(splits.test, baseline),
            carved=splits.carved,
        )

    def summary(self) -> str:
        """One line: images per split and where each came from (carved ones say so), QPs, degradation,
        and how many files were skipped (unreadable or too small), by split and name.

        The skipped count is always there, 0 included: a reader of a log must be able to tell "none
        skipped" from "not reported"."""

        def part(split: str, pairs: PairedSet | None) -> str:
            if pairs is None:
                return f"{split} not loaded"
            where = "carved from train" if split in self.carved else pairs.source
            return f"{len(pairs)} {split} ({where})"

        line = (
            f"data: {part('train', self.train)} / {part('val', self.val)} / {part('test', self.test)} images, "
            f"QPs {list(self.train.qps)}, degradation {self.train.spec.hash}"
        )
        by_split = {split: p.skipped for split, p in (("train", self.train), ("val", self.val), ("test", self.test))
                    if p is not None and p.skipped}
        count = sum(map(len, by_split.values()))
        line += f"; skipped {count} image{'' if count == 1 else 's'}"
        if by_split:
            line += " (" + "; ".join(f"{split}: {', '.join(names)}" for split, names in by_split.items()) + ")"
        return line


@dataclass(frozen=True)
class TrialResult:
    """Outcome of one proxy training: metrics on success, a reason on failure."""

    status: TaskStatus  # OK or FAILED
    reason: str | None
    arch: dict[str, Any]
    arch_hash: str
    recipe_hash: str
    seed: int
    steps: int
    threads: int
    device: str
    train_seconds: float
    eval_seconds: float = 0.0
    final_loss: float | None = None
    fuse_max_rel_err: float | None = None
    eval: EvalReport | None = None  # on val: what the search selects on
    degradation: str | None = None
    test_eval: EvalReport | None = None  # on test (when the data has one): what a front reports
    online_reparam: bool | None = None  # trained as fused convs (recipe key); None: recorded before the key
    deploy_state: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == TaskStatus.OK

    @property
    def gain_y(self) -> float | None:
        return None if self.eval is None else self.eval.gain_y

    @property
    def delta_y(self) -> float | None:
        return None if self.eval is None else self.eval.delta_y

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the fused weights travel separately: see `deploy_state_bytes`)."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "arch": self.arch,
            "arch_hash": self.arch_hash,
            "recipe_hash": self.recipe_hash,
            "seed": self.seed,
            "steps": self.steps,
            "threads": self.threads,
            "device": self.device,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "final_loss": self.final_loss,
            "fuse_max_rel_err": self.fuse_max_rel_err,
            "eval": None if self.eval is None else self.eval.to_dict(),
            "degradation": self.degradation,
            "test_eval": None if self.test_eval is None else self.test_eval.to_dict(),
            "online_reparam": self.online_reparam,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        values = dict(data)
        values["eval"] = None if data.get("eval") is None else EvalReport.from_dict(data["eval"])
        values["test_eval"] = None if data.get("test_eval") is None else EvalReport.from_dict(data["test_eval"])
        return cls(**values)

    def deploy_state_bytes(self) -> bytes | None:
        """The fused weights as `torch.save` bytes (what a Ray task returns and export writes)."""
        if self.deploy_state is None:
            return None
        buffer = io.BytesIO()
        torch.save(self.deploy_state, buffer)
        return buffer.getvalue()


def _fusion_error(model: nn.Module, fused: nn.Module, sample: torch.Tensor) -> float:
    """Max |fused - model| relative to max |model| on `sample`, both in float64."""
    import copy

    with torch.no_grad():
        a = copy.deepcopy(model).double().eval()(sample.double())
        b = copy.deepcopy(fused).double()(sample.double())
    scale = float(a.abs().max().clamp_min(1e-12))
    return float((a - b).abs().max()) / scale


def _preset_teacher_resolver(data: ProxyData, *, steps: int, seed: int):
    """Resolve a distillation teacher: a checkpoint, or a preset proxy-trained here with `l1_only`."""
    trained: dict[str, nn.Module] = {}

    def resolve(name: str) -> nn.Module:
        if Path(name).expanduser().exists():
            return load_teacher_checkpoint(name)
        from search_space.presets import get_preset, list_presets

        if name not in list_presets():
            return load_teacher_checkpoint(name)  # raises the clear "not a checkpoint" error
        if name not in trained:
            teacher = Trainer(get_preset(name).arch, load_recipe("l1_only"), data.train, total_steps=steps, seed=seed)
            teacher.run()
            trained[name] = deploy(teacher.model)
        return trained[name]

    return resolve


def result_fields(arch: ArchConfig, recipe: Recipe, data: ProxyData, *, seed: int, steps: int, threads: int,
                  device: str) -> dict[str, Any]:
    """The `TrialResult` fields that say what was trained, the same for a success and a failure."""
    return dict(arch_hash=arch.arch_hash, recipe_hash=recipe.hash, seed=seed, steps=steps, threads=threads, device=device,
                degradation=data.train.spec.hash, online_reparam=recipe.online_reparam)


def failed_result(exc: BaseException, *, arch: ArchConfig, trainer: Trainer | None, started: float,
                  common: dict[str, Any]) -> TrialResult:
    """The result of a training that raised: a trial that diverged or broke is a result with its reason
    (and whatever the trainer got to), never an exception in the driver."""
    return TrialResult(
        status=TaskStatus.FAILED,
        reason=f"{type(exc).__name__}: {exc}",
        arch=(trainer.arch if trainer is not None else arch).to_dict(),
        train_seconds=time.perf_counter() - started,
        final_loss=None if trainer is None or math.isnan(trainer.last_loss) else trainer.last_loss,
        **common,
    )


def _fuse_and_evaluate(trainer: Trainer, data: ProxyData, *, train_seconds: float, eval_dtype: torch.dtype,
                       keep_weights: bool, common: dict[str, Any]) -> TrialResult:
    """Fuse the trained model, check the fusion, and evaluate the deploy model on val (and test).

    The test split is evaluated here too, once per trial, so that any trial that ends up on a front
    has its test numbers; nothing in the search ever reads them to choose."""
    final_arch = trainer.arch  # bias removal may have changed it
    fused = deploy(trainer.model.cpu())
    lr0 = data.val.lr[data.val.qps[0]][0]
    sample = torch.from_numpy(lr0.transpose(2, 0, 1).copy()).unsqueeze(0).float() / 255.0
    fuse_err = _fusion_error(trainer.model, fused, sample)
    if not fuse_err <= FUSE_TOLERANCE:
        return TrialResult(
            status=TaskStatus.FAILED,
            reason=f"fused model differs from the trained one (max rel err {fuse_err:.3g} > {FUSE_TOLERANCE:g})",
            arch=final_arch.to_dict(),
            train_seconds=train_seconds,
            final_loss=trainer.last_loss,
            fuse_max_rel_err=fuse_err,
            **common,
        )
    eval_started = time.perf_counter()
    device = str(common["device"])
    report = evaluate(fused, data.val, device=device, dtype=eval_dtype)
    test_report = None if data.test is None else evaluate(fused, data.test, device=device, dtype=eval_dtype)
    return TrialResult(
        status=TaskStatus.OK,
        reason=None,
        arch=final_arch.to_dict(),
        train_seconds=train_seconds,
        eval_seconds=time.perf_counter() - eval_started,
        final_loss=trainer.last_loss,
        fuse_max_rel_err=fuse_err,
        eval=report,
        test_eval=test_report,
        deploy_state=_copy_state(fused) if keep_weights else None,
        **common,
    )


def _copy_state(model: nn.Module) -> dict[str, Any]:
    """A detached copy of ``model``'s state dict: tensors cloned, extra state (a fitted anchor's fit
    key, a small dict) copied as is."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else dict(v) for k, v in model.state_dict().items()}


def proxy_train(
    arch: ArchConfig,
    recipe: Recipe | str,
    data: ProxyData,
    *,
    steps: int = DEFAULT_PROXY_STEPS,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    eval_dtype: torch.dtype = torch.float32,
    keep_weights: bool = True,
) -> TrialResult:
    """Train `arch` with `recipe` for `steps` steps, fuse, verify the fusion, evaluate per QP.

    Uses `threads` intra-op threads (restored afterwards). Returns a failed result with its reason
    instead of raising for anything that goes wrong in training or evaluation.
    """
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    common = result_fields(arch, recipe, data, seed=seed, steps=steps, threads=threads, device=device)
    trainer: Trainer | None = None
    try:
        trainer = Trainer(
            arch,
            recipe,
            data.train,
            total_steps=steps,
            seed=seed,
            device=device,
            teacher_resolver=_preset_teacher_resolver(data, steps=steps, seed=seed),
        )
        trainer.run()
        return _fuse_and_evaluate(trainer, data, train_seconds=time.perf_counter() - started, eval_dtype=eval_dtype,
                                  keep_weights=keep_weights, common=common)
    except UserError:
        raise
    except (Diverged, FloatingPointError, RuntimeError, ValueError) as exc:
        return failed_result(exc, arch=arch, trainer=trainer, started=started, common=common)
    finally:
        torch.set_num_threads(previous_threads)
