"""Full training of an exported design to completion, resumably (command: `rtsr train` / `python -m trainers.full`).

The output folder is the state: `checkpoint.pt` is rewritten atomically every `--checkpoint-every`
steps, and rerunning the same command after a kill continues from it (same recipe, budget and seed
required; the patch sampler is a pure function of the step, so the resumed run sees exactly the
batches the uninterrupted one would have). At the end the folder holds:

- `config.toml`: the config that ran (flags applied), readable by this command again;
- `deploy.pt`: the fused deploy model's state dict plus its arch (`trainers.deploy_file`; load with
  `load_deploy`): runs at every input size, and is what a distillation teacher is loaded from;
- `deploy.pt2`: the fused deploy model as a `torch.export` program (runs with torch alone:
  `torch.export.load(path).module()`; any input size divisible by the arch's down factor, except
  SAFM++ networks: 540p only, see `trainers.deploy_export`). It replaces `deploy.ts` (TorchScript is
  deprecated in torch); the distillation teacher loader still reads a folder's `deploy.pt2` or old `deploy.ts`
  when it has no `deploy.pt`;
- `deploy.onnx`: the same network in ONNX, checked in ONNX Runtime before it is written; only
  when the deploy extra is installed (`pip install -e ".[deploy]"`; the log says when it is not);
- `metrics.json`: the final metrics on the *test* split (``final``, also under ``test``): per-QP
  PSNR/SSIM, gain and Delta over Lanczos and over the QP-blind linear baseline fitted on the training
  split (and over the per-QP oracle filters);
  the final model's numbers on val (``val``), the data summary (``data``) and the validation history;
- `validation.jsonl`: one line per periodic validation (on val), steps strictly increasing: a resumed
  run first rewrites it to the validations its checkpoint knows, so none is listed twice.

A progress bar is drawn only when stderr is a terminal; in a log file or a pipe the run writes plain
lines instead (one per checkpoint and per validation).

Test images never steer anything: periodic validation (the numbers a user watches while training)
stays on val, and the test split is evaluated once, at the end.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_space.configio import atomic_write, content_hash
from search_space.errors import UserError
from search_space.network import deploy, fitted_anchors
from trainers.splits import image_keys
from trainers.deploy_file import load_deploy, save_deploy
from trainers.evaluate import evaluate
from trainers.loop import Diverged, Trainer
from trainers.proxy import ProxyData
from trainers.runconfig import RunConfig, load_run_config, save_run_config
from trainers.terminal import is_terminal

__all__ = ["load_deploy", "main", "run_full"]

CHECKPOINT = "checkpoint.pt"
VALIDATION_LOG = "validation.jsonl"


def _save_torch(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def run_full(
    config: RunConfig,
    out: str | Path,
    *,
    threads: int | None = None,
    device: str = "cpu",
    validate_every: int = 0,
    checkpoint_every: int = 500,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data: ProxyData | None = None,
    test_data: str | Path | None = None,
) -> dict[str, Any]:
    """Run `config` into folder `out` (resuming if it holds a checkpoint); returns the final metrics.

    ``test_data`` is the test split's source ('builtin' or a folder); None: the builtin test split,
    the data folder's ``test/``, or carved from the training images. ``data`` replaces loading
    (it must have a test split). ``progress`` draws bars only when stderr is a terminal; otherwise
    (a log, a pipe, or ``progress=False``) each checkpoint gets a plain log line instead.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress and is_terminal(sys.stderr)  # a bar's carriage-return frames do not belong in a log
    if threads is not None:
        torch.set_num_threads(threads)
    ckpt_path = out / CHECKPOINT
    _check_same_config(out, config)

    if data is None:
        data = ProxyData.load(config.data, config.val_data or None, test_data or None, qps=config.qps, progress=progress)
    if data.test is None:
        raise UserError("trainers.full reports its final metrics on a test split, and the data has none; load it with a test split")
    log(f"[full] {data.summary()}")
    train_key = content_hash(list(image_keys(data.train)))
    trainer = Trainer(config.arch, config.recipe, data.train, total_steps=config.steps, seed=config.seed, device=device)
    history: list[dict[str, Any]] = []
    if ckpt_path.exists():
        history = _resume(trainer, ckpt_path, train_key=train_key, data=data, device=device)
        log(f"[full] resuming from step {trainer.step}/{config.steps} ({ckpt_path})")
    else:
        log(f"[full] {config.arch.summary()} | recipe {config.recipe.name} ({config.recipe.hash}) | {config.steps} steps | device {device}")
    for anchor in fitted_anchors(trainer.model):
        # An export's weights hold the filter of the search's data; a full run fits its own.
        log(f"[full] fitted anchor: the {anchor.kernel}x{anchor.kernel} QP-blind least-squares filter of this run's own training "
            f"split ({len(data.train)} images of {data.train.source}, QPs {list(data.train.qps)}; fit {anchor.fit_key}); "
            "an export's weights hold the filter of the search's data, the same only if the data is")
    _restart_validation_log(out / VALIDATION_LOG, history)

    def checkpoint() -> None:
        _save_torch({"trainer": trainer.state_dict(), "history": history, "train_images": train_key}, ckpt_path)

    def validate() -> dict[str, Any]:
        report = evaluate(deploy(trainer.model), data.val, device=device)
        entry = {"step": trainer.step, "loss": trainer.last_loss, **report.to_dict()}
        history.append(entry)
        with (out / VALIDATION_LOG).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        linear = "" if report.gain_linear_y is None else f", {report.gain_linear_y:+.3f} dB over the QP-blind linear baseline"
        log(f"[full] step {trainer.step}: val mean gain {report.gain_y:+.3f} dB over Lanczos{linear} ({device})")
        return entry

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=trainer.step, unit="step", desc="full training", file=sys.stderr)
    started = time.perf_counter()
    try:
        while not trainer.done:
            marks = [config.steps]
            for every in (checkpoint_every, validate_every):
                if every > 0:
                    marks.append((trainer.step // every + 1) * every)
            target = min(marks)
            trainer.run(until=target, on_step=(lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}"))) if bar else None)
            if validate_every > 0 and trainer.step % validate_every == 0 and not trainer.done:
                validate()
            if checkpoint_every > 0 and trainer.step % checkpoint_every == 0:
                checkpoint()
                if bar is None and not trainer.done:
                    log(f"[full] step {trainer.step}/{config.steps}: loss {trainer.last_loss:.4f}, checkpoint written "
                        f"({time.perf_counter() - started:.0f} s, {device})")
    except Diverged as exc:
        checkpoint()
        raise UserError(f"training diverged ({exc}); lower the learning rate in the recipe and rerun into a new --out") from None
    finally:
        if bar is not None:
            bar.close()
    checkpoint()
    return _finish(trainer, config, data, out=out, device=device, history=history,
                   train_seconds=time.perf_counter() - started, log=log)


def _restart_validation_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Make `validation.jsonl` hold exactly the validations of the checkpoint being continued.

    A run killed after a validation but before the next checkpoint has lines past the checkpoint's
    step; the resumed run validates those steps again, so appending alone would list them twice
    (and a run killed before its first checkpoint leaves lines a fresh start must drop)."""
    if history or path.exists():
        atomic_write(path, "".join(json.dumps(entry) + "\n" for entry in history))


def _check_same_config(out: Path, config: RunConfig) -> None:
    """Refuse to resume a folder that ran another config (provenance may differ); then record this one."""
    config_path = out / "config.toml"
    if (out / CHECKPOINT).exists() and config_path.exists():
        previous = load_run_config(config_path)
        if previous.to_dict() | {"provenance": {}} != config.to_dict() | {"provenance": {}}:
            raise UserError(
                f"{out} holds a run of a different config; pass the same config and flags to resume, "
                "or a new --out folder"
            )
    save_run_config(config, config_path)


def _resume(trainer: Trainer, ckpt_path: Path, *, train_key: str, data: ProxyData, device: str) -> list[dict[str, Any]]:
    """Load the checkpoint into `trainer` (same training images required); returns the validation history."""
    try:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is reported, not guessed around
        raise UserError(f"checkpoint {ckpt_path} is unreadable ({exc}); delete it to start over") from None
    expected = set(trainer.state_dict())
    inner = state.get("trainer") if isinstance(state, dict) else None
    if not isinstance(inner, dict) or not expected <= set(inner):
        raise UserError(
            f"{ckpt_path} is not a trainers.full checkpoint (it loads, but lacks the training state this command saves); "
            "pass a new --out folder, or move that file away to start over in this one"
        )
    if state.get("train_images", train_key) != train_key:
        raise UserError(
            f"{ckpt_path} was trained on other training images than these ({data.train.source}; a different "
            "--val-data/--test-data changes which images are carved out of the training folder); pass the same "
            "data flags to resume, or a new --out folder"
        )
    try:
        trainer.load_state_dict(inner)
    except UserError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())  # torch's state-dict errors span lines; the message is one
        raise UserError(
            f"{ckpt_path} does not fit this run ({type(exc).__name__}: {detail}); pass a new --out folder, or move that "
            "file away to start over in this one"
        ) from None
    return list(state.get("history", []))


def _finish(trainer: Trainer, config: RunConfig, data: ProxyData, *, out: Path, device: str, history: list[dict[str, Any]],
            train_seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Fuse, evaluate on test (the final numbers) and val, and write deploy.pt, deploy.pt2, deploy.onnx, metrics.json."""
    fused = deploy(trainer.model.cpu())
    final = evaluate(fused, data.test, device="cpu")
    final_val = evaluate(fused, data.val, device="cpu")
    written = [save_deploy(fused, trainer.arch, out), *_export_deploy_files(fused, trainer.arch.down_factor, out, log)]
    metrics = {
        "config_hash": {"arch": config.arch.arch_hash, "recipe": config.recipe.hash},
        "deploy_arch_hash": trainer.arch.arch_hash,
        "steps": trainer.step,
        "seed": config.seed,
        "train_seconds_this_session": train_seconds,
        "device": device,
        "degradation": data.train.spec.hash,
        "data": _data_record(data),
        "fitted_anchor": [{"kernel": a.kernel, "fit_key": a.fit_key} for a in fitted_anchors(fused)],
        "final_split": "test",
        "final": final.to_dict(),
        "test": final.to_dict(),
        "val": final_val.to_dict(),
        "history": history,
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    log(f"[full] test split ({len(data.test)} images), final model:")
    log(final.table())
    log(f"[full] wrote {', '.join(str(p) for p in [*written, out / 'metrics.json'])}")
    return metrics


def _export_deploy_files(fused: nn.Module, down_factor: int, out: Path, log: Callable[[str], None]) -> list[Path]:
    """Write deploy.pt2 always and deploy.onnx when the deploy extra is installed; each is checked first."""
    from trainers.deploy_export import export_onnx, export_program, onnx_available

    files = [export_program(fused, out / "deploy.pt2", down_factor=down_factor)]
    if onnx_available():
        files.append(export_onnx(fused, out / "deploy.onnx", down_factor=down_factor))
    else:
        log('[full] deploy.onnx not written: the deploy extra is not installed (pip install -e ".[deploy]")')
    for f in files:
        log(f"[full] {f.describe()}")
    return [f.path for f in files]


def _data_record(data: ProxyData) -> dict[str, Any]:
    """Where each split came from, how many images it has and which files were skipped, for metrics.json."""
    record: dict[str, Any] = {"summary": data.summary(), "carved": list(data.carved)}
    skipped: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        pairs = getattr(data, split)
        record[split] = None if pairs is None else {"images": len(pairs), "source": pairs.source}
        skipped[split] = [] if pairs is None else list(pairs.skipped)
    record["skipped"] = skipped
    record["skipped_count"] = sum(map(len, skipped.values()))
    return record


# -- command line (kept together: it will move to the commands package as one piece) -----------------
