"""Search efficiency: successive halving + TPE vs single-fidelity TPE vs random, same study and time.

Runs one study three ways, one after another (never two at once: latencies are timed on this CPU),
each with `python -m nas.run` in a subprocess, the same seed, workers and wall-time limit:

- `halving`: the study as is (TPE on rung 0 + successive halving, e.g. 100/300/900 steps);
- `single`:  TPE, every trial trains straight to the top rung's steps (`[halving]` rungs = 1,
  min_steps = top steps: the same warmup-stable-decay schedule, one decay branch), one seed;
- `random`:  the `random` sampler, single fidelity as in `single`.

Then it prints, for each way, the hypervolume against time (cumulative compute seconds and wall
seconds), the time each way needed to reach the `single` way's final hypervolume and its ratio to
the `single` way's time, and the target line: successive halving reaches the single-fidelity
hypervolume in <= 1/2 of the time. The same goes to `OUT/search_efficiency.md` and `.json`.
Definitions (time axes, fronts, reference point) are in `hv_over_time` and in the printed header.

    python benchmarks/search_efficiency.py --minutes 9                 # rtsr, seed 0, 2 workers, ~33 min
    python benchmarks/search_efficiency.py --analyse-only              # re-read finished runs, print again

A way whose run finished with the same settings is not run again (`OUT/<way>/done.json`), so an
interrupted benchmark continues where it stopped; an unfinished way starts afresh (`--fresh`; nas.run
keeps the partial run next to it, renamed with a timestamp).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from nas.runstate import RunState
    from nas.study import Study
    from nas.trial_record import TrialRecord

__all__ = [
    "BASELINES",
    "TARGET_RATIO",
    "WAYS",
    "HVPoint",
    "analyse_way",
    "compare_ways",
    "derived_study",
    "final_front",
    "hv_at",
    "hv_over_time",
    "render_markdown",
    "time_to_reach",
]

#: The three ways, in the order they run (and the `single` way is the yardstick).
WAYS: tuple[str, ...] = ("halving", "single", "random")
#: Successive halving passes when it reaches the single-fidelity final hypervolume in at most this
#: fraction of the time the single-fidelity search needed for it.
TARGET_RATIO = 1.0 / 2.0  # issue 20 (the noise-floor issue): <= 1/2 of the single way's compute time
#: Baselines a gain is shown against; the benchmark's hypervolume reference is 0 dB over `linear`
#: (the least-squares linear x4 filter); `lanczos` is reported next to it for information.
BASELINES: tuple[str, ...] = ("linear", "lanczos")
#: Checkpoints of the hypervolume tables, as shares of the way's time limit.
CHECKPOINT_SHARES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
#: Default trial cap: far above what fits in the limits used here, so the time limit ends every way.
DEFAULT_TRIALS = 1000
_REL_TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# The three studies
# --------------------------------------------------------------------------------------------------


def derived_study(study: Study, way: str) -> dict[str, Any]:
    """The study of `way` as TOML-ready data (validated by `Study.from_dict`).

    Why `single` trains one seed: the `halving` way's top rung trains `top_seeds` seeds only for its
    few finalists (about 1/eta**top of the trials); training every single-fidelity trial that many
    times would cut its trial count by the same factor, which is not how a single-fidelity search is
    run."""
    from nas.study import Study as StudyClass
    from search_space.errors import UserError

    if way not in WAYS:
        raise UserError(f"unknown way {way!r}; ways: {', '.join(WAYS)}")
    if study.halving is None:
        raise UserError(f"study {study.name!r} has no [halving] table, so there is no successive-halving way to compare; "
                        "pick a study with [halving] (e.g. rtsr) or add one to yours")
    data = study.to_dict()
    data["name"] = f"{study.name}-{way}"
    h = study.halving
    if way != "halving":
        data["halving"] = {"min_steps": h.steps(h.top), "eta": h.eta, "rungs": 1, "decay": h.decay, "top_seeds": 1}
        data["description"] = (f"{study.name}, single fidelity: every trial trains {h.steps(h.top)} steps (the top rung of "
                               f"{', '.join(map(str, h.all_steps))}), one seed, sampler "
                               f"{'random' if way == 'random' else data['sampler']['name']}")
    if way == "random":
        data["sampler"] = {**data["sampler"], "name": "random"}
    StudyClass.from_dict(data)  # refuse a broken derivation before anything runs
    return data


def write_study_toml(data: Mapping[str, Any], path: Path) -> Path:
    """Write a derived study where `nas.run --study PATH` reads it."""
    import tomli_w

    from search_space.configio import atomic_write, strip_none

    header = "# written by benchmarks/search_efficiency.py (a derived study; edit the source study instead)\n"
    return atomic_write(path, header + tomli_w.dumps(strip_none(data)))


# --------------------------------------------------------------------------------------------------
# Hypervolume over time
# --------------------------------------------------------------------------------------------------


class HVPoint(NamedTuple):
    """The hypervolume just after one training finished, and when: cumulative compute seconds
    (train + eval of every finished training so far) and wall seconds since the run's first trial
    started."""

    compute_s: float
    wall_s: float
    hv: float


def _gain_metric(state: RunState, baseline: str) -> str:
    """The stored val gain over `baseline` matching the run's objective ('gain_y' -> 'gain_linear_y')."""
    from nas.trial_record import linear_metric

    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    return linear_metric(state.gain_metric) if baseline == "linear" else state.gain_metric


def _counts(t: TrialRecord, metric: str) -> bool:
    """Whether a record is a hypervolume point: trained in this run (status ok), feasible, with a
    latency and the gain. The same rule as the dashboard's hypervolume (a duplicate repeats its
    original, which already counts)."""
    from nas.trial_record import TrialStatus

    return (t.trained and t.status == TrialStatus.OK and t.feasible is True and t.latency_ms is not None
            and t.metric(metric, split="val") is not None)


def _finished_in_order(state: RunState) -> list[TrialRecord]:
    """Every finished record of every rung (COMPLETE or FAIL: a failed training spent compute too),
    in the order it finished; ties (times are stored to the second) go to the lower rung, then the
    record number. The dashboard's hypervolume-over-compute figure uses the same order."""
    done = [t for records in state.rungs.values() for t in records if t.state in ("COMPLETE", "FAIL")]
    return sorted(done, key=lambda t: (t.completed or "", t.rung, t.number))


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def front_rung(state: RunState) -> int:
    """The rung whose records make the run's result: the top rung of a halving run (its `[halving]`
    table's, even before any record got there), rung 0 of a single-fidelity run."""
    return state.planned_top_rung


def hv_over_time(state: RunState, *, baseline: str = "linear") -> list[HVPoint]:
    """Hypervolume after each finished training of the run, in completion order.

    - time: `compute_s` = cumulative train + eval seconds of every finished training (all rungs,
      failed ones included, a duplicate's borrowed training not counted twice:
      `reports.halving_figures.compute_seconds`); `wall_s` = seconds from the earliest `started` of
      any record (the run's first trial) to this record's completion.
    - front at time t: the feasible, trained records *of the front rung* (`front_rung`) finished by
      t. A halving run has no final numbers before a trial reaches the top rung, so its curve is 0
      until then; in a single-fidelity run every trial is at the front rung.
    - objectives: val gain over `baseline` ('linear': the least-squares linear x4 filter, or
      'lanczos') in dB, to maximize; latency in ms, to minimize.
    - reference point: (0 dB over the baseline, the study's latency budget for the run's device kind).
    Units of hv: dB x ms."""
    from reports.halving_figures import compute_seconds
    from reports.hypervolume import hypervolume_2d
    from search_space.errors import UserError

    ref_latency = state.latency_budget_ms
    if ref_latency is None:
        raise UserError(f"run {state.run_dir}: the study has no latency budget for device kind {state.device_kind!r}; "
                        "the hypervolume reference point needs one ([constraints] latency_ms)")
    metric = _gain_metric(state, baseline)
    top = front_rung(state)
    order = _finished_in_order(state)
    starts = [t.started for records in state.rungs.values() for t in records if t.started]
    if not order or not starts:
        return []
    first = min(starts)
    out: list[HVPoint] = []
    points: list[tuple[float, float]] = []
    compute = 0.0
    for t in order:
        compute += compute_seconds(t)
        if t.rung == top and _counts(t, metric):
            points.append((float(t.metric(metric, split="val")), float(t.latency_ms)))  # type: ignore[arg-type]
        wall = _seconds_between(first, t.completed) if t.completed else math.nan
        out.append(HVPoint(compute, wall, hypervolume_2d(points, ref_gain=0.0, ref_latency=ref_latency)))
    return out


def hv_at(curve: Sequence[HVPoint], t: float, *, axis: str = "compute") -> float:
    """The hypervolume of `curve` at time `t` on `axis` ('compute' or 'wall' seconds): that of the
    last training finished by then, 0 before the first."""
    if axis not in ("compute", "wall"):
        raise ValueError(f"axis must be 'compute' or 'wall', got {axis!r}")
    best = 0.0
    for p in curve:
        when = p.compute_s if axis == "compute" else p.wall_s
        if when <= t * (1 + _REL_TOL) + 1e-12:
            best = max(best, p.hv)
    return best


def time_to_reach(curve: Sequence[HVPoint], target: float) -> HVPoint | None:
    """The first point of `curve` whose hypervolume reaches `target` (within a relative 1e-9, so a
    curve reaches its own final value), or None. `target` must be > 0: every curve 'reaches' 0 before
    it starts, so a zero target says nothing and the caller reports it as undefined."""
    if not target > 0:
        raise ValueError(f"target hypervolume must be > 0, got {target!r}")
    for p in curve:
        if p.hv >= target * (1 - _REL_TOL):
            return p
    return None


# --------------------------------------------------------------------------------------------------
# One way, and the comparison
# --------------------------------------------------------------------------------------------------


def final_front(state: RunState) -> list[TrialRecord]:
    """The way's final front: the non-dominated (val gain over the linear baseline: max, latency:
    min) feasible trained records of the front rung. The linear baseline's PSNR is the same for every
    record on the same val images, so this is also the front over Lanczos."""
    from nas.halving import non_dominated_fronts

    metric = _gain_metric(state, "linear")
    pool = [t for t in state.rungs.get(front_rung(state), ()) if _counts(t, metric)]
    if not pool:
        return []
    points = [(float(t.metric(metric, split="val")), float(t.latency_ms)) for t in pool]  # type: ignore[arg-type]
    return sorted((pool[i] for i in non_dominated_fronts(points)[0]), key=lambda t: (t.latency_ms, t.number))


def _best(front: Sequence[TrialRecord], metric: str, split: str) -> float | None:
    values = [v for v in (t.metric(metric, split=split) for t in front) if v is not None]
    return max(values) if values else None


def analyse_way(state: RunState, *, minutes: float, workers: int) -> dict[str, Any]:
    """Everything the report says about one way's run (JSON-ready)."""
    from reports.halving_figures import compute_unit

    limit_s = 60.0 * minutes
    curves = {b: hv_over_time(state, baseline=b) for b in BASELINES}
    rungs = {}
    for k, records in sorted(state.rungs.items()):
        rungs[k] = {"steps": state.rung_steps(k), "trained": sum(1 for t in records if t.trained and t.status == "ok"),
                    "finished": sum(1 for t in records if t.state in ("COMPLETE", "FAIL"))}
    for k in range(max(rungs, default=-1) + 1, front_rung(state) + 1):  # rungs nobody reached
        rungs[k] = {"steps": state.rung_steps(k), "trained": 0, "finished": 0}
    checkpoints = []
    for share in CHECKPOINT_SHARES:
        wall, compute = share * limit_s, share * limit_s * workers
        checkpoints.append({"share": share, "wall_s": wall, "compute_s": compute,
                            **{f"hv_{b}_wall": hv_at(curves[b], wall, axis="wall") for b in BASELINES},
                            **{f"hv_{b}_compute": hv_at(curves[b], compute, axis="compute") for b in BASELINES}})
    last = curves["linear"][-1] if curves["linear"] else HVPoint(0.0, 0.0, 0.0)
    front = final_front(state)
    lanczos, linear = _gain_metric(state, "lanczos"), _gain_metric(state, "linear")
    halving = dict(state.halving) if state.halving is not None else None
    return {
        "run_dir": str(state.run_dir),
        "sampler": str(state.study.get("sampler", {}).get("name", "?")),
        "halving": halving,
        "front_rung": front_rung(state),
        "front_steps": state.rung_steps(front_rung(state)),
        "device_name": state.device_name,
        "device_kind": state.device_kind,
        "compute_unit": compute_unit(state),
        "latency_budget_ms": state.latency_budget_ms,
        "gain_metric": {"lanczos": lanczos, "linear": linear},
        "rungs": {str(k): v for k, v in sorted(rungs.items())},
        "final": {"compute_s": last.compute_s, "wall_s": last.wall_s,
                  **{f"hv_{b}": (curves[b][-1].hv if curves[b] else 0.0) for b in BASELINES}},
        "checkpoints": checkpoints,
        "curves": {b: [list(p) for p in curves[b]] for b in BASELINES},
        "front": {
            "trials": [t.source_trial for t in front],
            "size": len(front),
            "best_val_lanczos_db": _best(front, lanczos, "val"),
            "best_val_linear_db": _best(front, linear, "val"),
            "best_test_lanczos_db": _best(front, lanczos, "test"),
            "best_test_linear_db": _best(front, linear, "test"),
        },
    }


def _verdict(ratio: float | None, *, reached: bool, defined: bool) -> str:
    if not defined:
        return "undefined (the single-fidelity final hypervolume is 0 dB x ms: no feasible trial beat the reference)"
    if not reached or ratio is None:
        return "not reached"
    sign = "<=" if ratio <= TARGET_RATIO * (1 + _REL_TOL) else ">"
    return f"{'PASS' if sign == '<=' else 'FAIL'} ({ratio:.3f} {sign} 1/2)"


def compare_ways(ways: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """For each reference baseline: the `single` way's final hypervolume (the target), the time each
    way needed to reach it on both axes, the ratios to the `single` way's times, and the verdicts of
    the target 'successive halving reaches it in <= 1/2 of the time' (compute seconds: the headline;
    wall seconds: shown next to it)."""
    out: dict[str, Any] = {}
    if "single" not in ways:
        return out
    for b in BASELINES:
        target = float(ways["single"]["final"][f"hv_{b}"])
        rows: dict[str, Any] = {}
        base: HVPoint | None = None
        if target > 0:
            base = time_to_reach([HVPoint(*p) for p in ways["single"]["curves"][b]], target)
        for way, info in ways.items():
            hit = time_to_reach([HVPoint(*p) for p in info["curves"][b]], target) if target > 0 else None
            row: dict[str, Any] = {"reached": hit is not None, "compute_s": hit.compute_s if hit else None,
                                   "wall_s": hit.wall_s if hit else None, "ratio_compute": None, "ratio_wall": None}
            if hit is not None and base is not None:
                row["ratio_compute"] = hit.compute_s / base.compute_s if base.compute_s > 0 else None
                row["ratio_wall"] = hit.wall_s / base.wall_s if base.wall_s > 0 else None
            rows[way] = row
        entry: dict[str, Any] = {"target_hv": target, "ways": rows}
        if "halving" in rows:
            h = rows["halving"]
            entry["verdict_compute"] = _verdict(h["ratio_compute"], reached=h["reached"], defined=target > 0)
            entry["verdict_wall"] = _verdict(h["ratio_wall"], reached=h["reached"], defined=target > 0)
        out[b] = entry
    return out


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".3f", none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _gain(value: float | None) -> str:
    return _num(value, "+.3f")


def _way_note(way: str, info: Mapping[str, Any]) -> str:
    h = info.get("halving") or {}
    if way == "halving":
        steps = ", ".join(str(s) for s in _rung_steps(h))
        return (f"{info['sampler']} on rung 0 + successive halving: rungs {steps} steps, eta {h.get('eta')}, "
                f"{h.get('top_seeds')} seed(s) at the top rung (their mean); front = top-rung records")
    return (f"{info['sampler']}, single fidelity: every trial trains {h.get('min_steps')} steps (the halving way's top rung; "
            "same warmup-stable-decay schedule, one decay branch), 1 seed (the halving way trains its extra seeds only "
            "for its few finalists)")


def _rung_steps(h: Mapping[str, Any]) -> list[int]:
    try:
        return [int(h["min_steps"]) * int(h["eta"]) ** k for k in range(int(h["rungs"]))]
    except (KeyError, TypeError, ValueError):
        return []


def render_markdown(report: Mapping[str, Any]) -> str:
    """The printed report, as Markdown (also written to `search_efficiency.md`)."""
    ways: Mapping[str, Any] = report["ways"]
    s = report["settings"]
    any_way = next(iter(ways.values()), {})
    unit = any_way.get("compute_unit", "CPU seconds")
    device = any_way.get("device_name", "unknown device")
    budget = any_way.get("latency_budget_ms")
    L = [
        "# Search efficiency: successive halving vs single fidelity vs random",
        "",
        (f"Study `{s['study']}`, seed {s['seed']}, {s['workers']} workers, {s['minutes']:g} min wall-time limit per way "
         f"(`nas.run --time-limit`; trainings running at the limit finish), trial cap {s['trials']}, executor {s['executor']}; "
         f"ways run one after another. Latency on {device}; trainings on {any_way.get('device_kind', '?')} "
         f"(compute time in {unit})."),
        "",
    ]
    for way, info in ways.items():
        L.append(f"- `{way}`: {_way_note(way, info)}.")
    L += [
        "",
        (f"Hypervolume [dB x ms] of (val gain over the linear baseline [dB]: max, latency [ms]: min), reference point "
         f"(0 dB over the linear baseline, {_num(budget, 'g')} ms = the study's latency budget on {any_way.get('device_kind', '?')}); "
         "only feasible, trained records count; the front at time t is the top-rung records finished by t for the halving "
         "way, all finished trials for the single-fidelity ways. Next to it, for information, the same with 0 dB over "
         "Lanczos as reference. Time: cumulative train + eval seconds of every finished training, all rungs, in completion "
         f"order ({unit}; running trainings count once finished), and wall seconds since the run's first trial started. "
         f"Checkpoints are shares of the limit: {s['minutes']:g} min of wall time, and {s['workers']} x that of compute "
         "(all workers busy for the whole limit)."),
        "",
    ]
    for way, info in ways.items():
        L += [f"## `{way}`: hypervolume over time", "",
              (f"| share of limit | wall [s] | HV by wall, vs linear [dB x ms] | HV by wall, vs Lanczos [dB x ms] "
               f"| compute [{unit}] | HV by compute, vs linear [dB x ms] | HV by compute, vs Lanczos [dB x ms] |"),
              "|---:|---:|---:|---:|---:|---:|---:|"]
        for c in info["checkpoints"]:
            L.append(f"| {c['share'] * 100:.0f} % | {c['wall_s']:.0f} | {c['hv_linear_wall']:.3f} | {c['hv_lanczos_wall']:.3f} "
                     f"| {c['compute_s']:.0f} | {c['hv_linear_compute']:.3f} | {c['hv_lanczos_compute']:.3f} |")
        f = info["final"]
        L += [(f"| final | {_num(f['wall_s'], '.0f')} | {f['hv_linear']:.3f} | {f['hv_lanczos']:.3f} | {_num(f['compute_s'], '.0f')} "
               f"| {f['hv_linear']:.3f} | {f['hv_lanczos']:.3f} |"), ""]

    reach = report.get("reach", {})
    for b in BASELINES:
        if b not in reach:
            continue
        r = reach[b]
        name = "the linear baseline" if b == "linear" else "Lanczos (for information)"
        L += [f"## Time to reach the `single` way's final hypervolume, reference 0 dB over {name}", "",
              f"Target: {r['target_hv']:.3f} dB x ms (the `single` way's final hypervolume).", "",
              (f"| way | final HV [dB x ms] | reached after [{unit}] | ratio to single (compute) | reached after [wall s] "
               "| ratio to single (wall) |"), "|---|---:|---:|---:|---:|---:|"]
        for way, row in r["ways"].items():
            if r["target_hv"] <= 0:
                when_c = when_w = "undefined (target 0)"
            else:
                when_c = _num(row["compute_s"], ".0f", "not reached")
                when_w = _num(row["wall_s"], ".0f", "not reached")
            L.append(f"| {way} | {ways[way]['final'][f'hv_{b}']:.3f} | {when_c} | {_num(row['ratio_compute'])} | {when_w} "
                     f"| {_num(row['ratio_wall'])} |")
        if "verdict_compute" in r:
            L += ["", (f"Target{'' if b == 'linear' else ' (for information, vs Lanczos)'}: successive halving reaches the "
                       f"single-fidelity hypervolume in <= 1/2 of the time: **{r['verdict_compute']}** on {unit}; "
                       f"{r['verdict_wall']} on wall seconds.")]
        L.append("")

    L += ["## Final fronts", "",
          (f"Front = non-dominated feasible trained records of the front rung (val gain vs latency); best gains of its "
           f"members [dB]; latency on {device}."), "",
          ("| way | trained (finished) per rung | front size | best val vs Lanczos [dB] | best val vs linear [dB] "
           "| best test vs Lanczos [dB] | best test vs linear [dB] | total compute | run wall |"),
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for way, info in ways.items():
        per_rung = ", ".join(f"r{k} ({v['steps']} steps): {v['trained']} ({v['finished']})" for k, v in info["rungs"].items())
        fr = info["front"]
        run_wall = info.get("run_wall_s")
        L.append(f"| {way} | {per_rung} | {fr['size']} | {_gain(fr['best_val_lanczos_db'])} | {_gain(fr['best_val_linear_db'])} "
                 f"| {_gain(fr['best_test_lanczos_db'])} | {_gain(fr['best_test_linear_db'])} "
                 f"| {_num(info['final']['compute_s'], '.0f')} {unit} | {_num(run_wall, '.0f')} s |")
    L += ["", (f"Devices: latency {device}; trainings {any_way.get('device_kind', '?')}, {s['workers']} at once. "
               f"Written {report.get('written', '')}."), ""]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------------
# Running the ways
# --------------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, data: Mapping[str, Any]) -> dict[str, Any]:
    from search_space.configio import content_hash

    return {"study_hash": content_hash(dict(data)), "seed": args.seed, "workers": args.workers, "minutes": args.minutes,
            "trials": args.trials, "executor": args.executor, "device": args.device}


def run_way(way: str, data: Mapping[str, Any], *, out: Path, args: argparse.Namespace, reuse: bool) -> dict[str, Any]:
    """Run one way with `nas.run` (unless a finished run with the same settings is there); returns
    its `done.json` (settings, exit code, wall seconds)."""
    folder = out / way
    folder.mkdir(parents=True, exist_ok=True)
    study_path = write_study_toml(data, folder / "study.toml")
    run_dir, done_path, log_path = folder / "run", folder / "done.json", folder / "nas_run.log"
    settings = _settings(args, data)
    if reuse and done_path.is_file() and (run_dir / "run.json").is_file():
        done = json.loads(done_path.read_text(encoding="utf-8"))
        if done.get("settings") == settings and done.get("returncode") == 0:
            print(f"[{way}] finished before with the same settings: reusing {run_dir}", flush=True)
            return done
    done_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "nas.run", "--study", str(study_path), "--out", str(run_dir),
           "--time-limit", f"{args.minutes:g}", "--seed", str(args.seed), "--workers", str(args.workers),
           "--trials", str(args.trials), "--executor", args.executor, "--device", args.device, "--no-progress"]
    if run_dir.exists():
        cmd.append("--fresh")  # an unfinished or different run: nas.run keeps it aside, renamed
    ray_tmp = tempfile.mkdtemp(prefix="rtsr-se-", dir="/tmp")  # short path: Ray's socket-path limit
    env = dict(os.environ, PYTHONUNBUFFERED="1", RTSR_RAY_TEMP_DIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    print(f"[{way}] {' '.join(cmd[1:])}  (log: {log_path})", flush=True)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - t0
    shutil.rmtree(ray_tmp, ignore_errors=True)
    done = {"settings": settings, "returncode": code, "wall_s": wall, "started": started.isoformat(timespec="seconds"),
            "command": cmd}
    if code != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise RuntimeError(f"[{way}] nas.run exited {code} after {wall:.0f} s; last lines of {log_path}:\n{tail}")
    done_path.write_text(json.dumps(done, indent=2), encoding="utf-8")
    print(f"[{way}] done in {wall:.0f} wall s", flush=True)
    return done


def build_report(out: Path, *, args: argparse.Namespace, ways: Sequence[str]) -> dict[str, Any]:
    """Read each way's run directory under `out` and put the report together."""
    from nas.runstate import load_run

    analysed: dict[str, Any] = {}
    for way in ways:
        run_dir = out / way / "run"
        if not (run_dir / "run.json").is_file():
            print(f"[{way}] no run in {run_dir}: left out of the report", flush=True)
            continue
        info = analyse_way(load_run(run_dir), minutes=args.minutes, workers=args.workers)
        done_path = out / way / "done.json"
        if done_path.is_file():
            info["run_wall_s"] = json.loads(done_path.read_text(encoding="utf-8")).get("wall_s")
        analysed[way] = info
    settings = {"study": args.study, "seed": args.seed, "workers": args.workers, "minutes": args.minutes,
                "trials": args.trials, "executor": args.executor, "device": args.device}
    return {"benchmark": "search_efficiency", "settings": settings, "target_ratio": TARGET_RATIO,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"), "ways": analysed,
            "reach": compare_ways(analysed)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="rtsr", help="a study with a [halving] table (name or .toml path; default rtsr)")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-time limit of each way in minutes (default 9)")
    parser.add_argument("--seed", type=int, help="sampler and training seed of every way (default: the study's)")
    parser.add_argument("--workers", type=int, help="concurrent trainings of every way (default: the study's)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"trial cap of every way (default {DEFAULT_TRIALS}: high enough that the time limit ends each way)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help="nas.run --executor (default local)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="nas.run --device (default auto)")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="which ways to run (default all three)")
    parser.add_argument("--out", default="benchmarks/results/search_efficiency_cpu", help="output folder")
    parser.add_argument("--no-reuse", dest="reuse", action="store_false",
                        help="run every way again, even one that finished with the same settings")
    parser.add_argument("--analyse-only", action="store_true", help="run nothing; report the runs already under --out")
    args = parser.parse_args(argv)

    from nas.study import load_study
    from search_space.errors import UserError

    try:
        study = load_study(args.study)
        args.seed = study.seed if args.seed is None else args.seed
        args.workers = study.budget.workers if args.workers is None else args.workers
        derived = {way: derived_study(study, way) for way in args.ways}
    except UserError as exc:
        print(f"search_efficiency: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser().resolve()  # nas.run runs from the repository root
    out.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        total = len(args.ways) * args.minutes
        print(f"{len(args.ways)} way(s) x {args.minutes:g} min (+ start-up and the trainings running at each limit), about "
              f"{total:g}+ min; output {out}", flush=True)
        for way in args.ways:
            run_way(way, derived[way], out=out, args=args, reuse=args.reuse)
    report = build_report(out, args=args, ways=args.ways)
    text = render_markdown(report)
    from search_space.configio import atomic_write

    atomic_write(out / "search_efficiency.md", text)
    atomic_write(out / "search_efficiency.json", json.dumps(report, indent=1))
    print("\n" + text, flush=True)
    print(f"written: {out / 'search_efficiency.md'}, {out / 'search_efficiency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
