"""Hand-made run directories: a run.json and an Optuna journal whose trials carry chosen values.

Why: reports and exports must be checked against numbers known in advance (a front picked by hand,
a failed trial, a run still in progress) without training anything. The user attrs follow the
trial record (`nas.trial_record`: its `Key` constants and `TrialSetup`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DEVICE", "LINEAR_OFFSET_DB", "STUDY_NAME", "TEST_OFFSET_DB", "make_run"]

DEVICE = "cpu: Test CPU (1 thread)"
STUDY_NAME = "fake-20260101-000000"


def _arch(name: str) -> Any:
    from search_space.presets import get_preset

    return get_preset(name).arch


#: In a fake run the linear baseline is this much better than Lanczos, and the test split this much
#: worse than val, at every QP: reports must show exactly these shifts.
LINEAR_OFFSET_DB = 0.125
TEST_OFFSET_DB = 0.25


def _metrics(gains: dict[int, float], gain: float, *, linear_offset: float) -> dict[str, Any]:
    """Stored metrics of one split: per QP over Lanczos (30 dB) and over the linear baseline."""
    from nas.trial_record import Key

    per_qp = {str(q): {"qp": q, "psnr_y": 30.0 + g, "lanczos_psnr_y": 30.0, "gain_y": g,
                       "linear_psnr_y": 30.0 + linear_offset, "gain_linear_y": g - linear_offset} for q, g in gains.items()}
    return {Key.PER_QP: per_qp, Key.GAIN_Y: gain, Key.GAIN_LINEAR_Y: gain - linear_offset}


def _attrs(spec: dict[str, Any], *, number: int, run_dir: Path, qps: tuple[int, ...], budget_ms: float) -> dict[str, Any]:
    from nas.trial_record import Key, TrialSetup
    from search_space.cost import cost

    arch = _arch(spec.get("arch", "urpnet"))
    c = cost(arch)
    latency = float(spec["latency"]) if spec.get("latency") is not None else None
    attrs = TrialSetup(arch=arch, deploy_arch=arch, recipe_name="proxy", recipe_hash="r" * 12, steps=20, seed=0, qps=qps,
                       data={"train": "builtin", "val": "builtin"}, macs=int(c.macs), params=int(c.params),
                       device_kind="cpu", latency_device=DEVICE, retries=0).to_attrs()
    if spec.get("preset"):
        attrs[Key.PRESET] = spec["preset"]
    if latency is not None:
        attrs[Key.LATENCY] = {"mean_ms": latency, "median_ms": latency, "p90_ms": latency, "device_name": DEVICE,
                            "device_kind": "cpu", "protocol_hash": "p" * 12}
        attrs[Key.LATENCY_MS] = latency
        attrs[Key.FEASIBLE] = bool(spec.get("feasible", True))
        attrs[Key.CONSTRAINTS] = [latency - budget_ms]
        attrs[Key.CONSTRAINT_NAMES] = ["latency_ms"]
    status = spec.get("status")
    if status is not None:
        attrs[Key.STATUS] = status
    if status in ("ok", "duplicate"):
        gains = spec.get("qp_gains") or {q: spec["gain"] for q in qps}
        attrs.update(_metrics(gains, spec["gain"], linear_offset=LINEAR_OFFSET_DB))
        # the test split: every gain TEST_OFFSET_DB lower than on val (a known, hand-checkable shift)
        attrs[Key.TEST] = _metrics({q: g - TEST_OFFSET_DB for q, g in gains.items()}, spec["gain"] - TEST_OFFSET_DB,
                                   linear_offset=LINEAR_OFFSET_DB)
        attrs[Key.TRAIN_SECONDS] = 1.5
        if spec.get("weights") is not None:
            rel = f"weights/trial-{number:05d}.pt"
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_bytes(spec["weights"])
            attrs[Key.WEIGHTS] = rel
    if status == "skipped":
        attrs[Key.SKIP_REASON] = spec.get("reason", "latency_ms over by 5")
    if status in ("failed", "crashed"):
        attrs[Key.FAILURE_REASON] = spec.get("reason", "training diverged")
    if "duplicate_of" in spec:
        attrs[Key.DUPLICATE_OF] = spec["duplicate_of"]
    attrs.update(spec.get("attrs", {}))  # anything else, verbatim
    return attrs


def make_run(
    run_dir: Path,
    trials: list[dict[str, Any]],
    *,
    budget_trials: int | None = None,
    latency_budget_ms: float = 100.0,
    macs_g: float | None = None,
    qps: tuple[int, ...] = (31, 63),
) -> Path:
    """Write `run_dir` with one Optuna trial per spec (see `_attrs` for the keys); returns run_dir."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir.mkdir(parents=True, exist_ok=True)
    constraints: dict[str, Any] = {"latency_ms": {"cpu": latency_budget_ms}, "train_infeasible": False}
    if macs_g is not None:
        constraints["macs_g"] = macs_g
    info = {
        "format": "rtsr-nas run v1",
        "run_id": "20260101-000000",
        "optuna_study_name": STUDY_NAME,
        "storage": "journal",
        "identity_hash": "i" * 12,
        "study": {
            "name": "fake",
            "description": "hand-made run for tests",
            "seed": 0,
            "data": {"train": "builtin", "qps": list(qps)},
            "proxy": {"recipe": "proxy", "steps": 20},
            "objectives": {"gain": "gain_y", "latency": "mean_ms"},
            "constraints": constraints,
            "budget": {"trials": budget_trials if budget_trials is not None else len(trials)},
        },
        "device_kind": "cpu",
        "device_name": DEVICE,
        "latency_protocol_description": "test protocol",
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=["maximize", "minimize"])
    dists = {"channels": IntDistribution(8, 48, step=4), "blocks": IntDistribution(0, 4)}
    for number, spec in enumerate(trials):
        state = TrialState[spec.get("state", "COMPLETE")]
        status = spec.get("status", "ok" if state == TrialState.COMPLETE else ("failed" if state == TrialState.FAIL else None))
        attrs = _attrs({**spec, "status": status}, number=number, run_dir=run_dir, qps=qps, budget_ms=latency_budget_ms)
        values = None
        if state == TrialState.COMPLETE:
            values = [0.0 if status == "skipped" else float(spec["gain"]), float(spec["latency"])]
        params = spec.get("params", {"channels": 16, "blocks": 2})
        study.add_trial(create_trial(state=state, values=values, params=params,
                                     distributions={k: dists[k] for k in params}, user_attrs=attrs))
    return run_dir
