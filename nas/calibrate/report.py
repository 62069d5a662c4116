"""The calibration's numbers (`calibration.json`) and its text report (`calibration.md`).

Two groups are measured: `space`, the sampled archs (what successive halving ranks in a search: the
headline numbers), and `panel`, every arch including the presets (presets trained as published may
lie far from the space and widen the spread, which flatters a rank correlation). Per rung, against
the long budget (seed = the study's seed): Spearman and Kendall with 95 % bootstrap intervals,
pairwise accuracy on pairs more than 0.05 dB apart at the long budget, and front recovery with MACs
as the cost axis (`nas.calibrate.stats`). The noise ceiling is Spearman between the two long seeds.
The presets' gains at each budget are also compared with the survey's Table 1 Delta (other data
and recipes: a check of direction, not a target). Gains are the study's objective on val
(selection split); test numbers are kept beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nas.calibrate.runner import Record, blocked, tasks_left
from nas.calibrate.spec import Task, budget_label
from nas.calibrate.stats import (
    PAIR_THRESHOLD_DB,
    bootstrap_correlations,
    format_interval,
    front_recovery,
    pairwise_accuracy,
    spearman,
)
from nas.task import JSONDict, TaskStatus

if TYPE_CHECKING:
    from nas.calibrate.spec import CalibrationSpec

__all__ = ["TARGET_SPEARMAN", "render_markdown", "summarize"]

TARGET_SPEARMAN = 0.6
GROUPS = ("space", "panel")


def _gain(records: dict[str, Record], task: Task, field: str = "gain") -> float | None:
    record = records.get(task.key)
    return None if record is None or record.get("status") != TaskStatus.OK else record.get(field)


def _group_names(spec: CalibrationSpec, group: str) -> list[str]:
    return [p.name for p in spec.panel if group == "panel" or p.source == "sampled"]


def _rung_stats(spec: CalibrationSpec, records: dict[str, Record], names: list[str], index: int) -> JSONDict:
    long_steps, steps = spec.long_steps, spec.budgets[index]
    rows = []
    for name in names:
        x = _gain(records, Task(name, steps, spec.seed, None))
        y = _gain(records, Task(name, long_steps, spec.seed, None))
        if x is not None and y is not None:
            rows.append((name, x, y, spec.arch(name).macs))
    xs, ys, cs = [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    rho, tau = bootstrap_correlations(xs, ys, seed=spec.seed)
    front: JSONDict = front_recovery(xs, ys, cs).to_dict()
    front["long_front"] = [rows[i][0] for i in front["long_front"]]
    front["proxy_front"] = [rows[i][0] for i in front["proxy_front"]]
    return {"budget_index": index, "steps": steps, "label": budget_label(spec, index), "n": len(rows), "archs": [r[0] for r in rows],
            "spearman": rho.to_dict(), "kendall": tau.to_dict(), "pairwise": pairwise_accuracy(xs, ys).to_dict(), "front": front}


def _noise(spec: CalibrationSpec, records: dict[str, Record]) -> JSONDict:
    pairs = []
    for name in spec.noise:
        a = _gain(records, Task(name, spec.long_steps, spec.seed, None))
        b = _gain(records, Task(name, spec.long_steps, spec.seed + 1, None))
        if a is not None and b is not None:
            pairs.append((name, a, b))
    rho, tau = bootstrap_correlations([p[1] for p in pairs], [p[2] for p in pairs], seed=spec.seed)
    diffs = [abs(p[1] - p[2]) for p in pairs]
    return {"steps": spec.long_steps, "seeds": [spec.seed, spec.seed + 1], "n": len(pairs), "archs": [p[0] for p in pairs],
            "spearman": rho.to_dict(), "kendall": tau.to_dict(),
            "mean_abs_diff_db": sum(diffs) / len(diffs) if diffs else None, "max_abs_diff_db": max(diffs) if diffs else None}


def _presets_vs_table1(spec: CalibrationSpec, records: dict[str, Record]) -> list[JSONDict]:
    presets = [p for p in spec.panel if p.source == "preset" and p.table1_delta_db is not None]
    out = []
    for index, steps in enumerate(spec.budgets):
        rows = []
        for p in presets:
            record = records.get(Task(p.name, steps, spec.seed, None).key)
            if record is None or record.get("status") != TaskStatus.OK:
                continue
            ours = (record.get("val") or {}).get("delta_y")
            rows.append((p.name, float(record["gain"] if ours is None else ours), float(p.table1_delta_db or 0.0)))
        out.append({"budget_index": index, "steps": steps, "label": budget_label(spec, index), "n": len(rows),
                    "presets": [r[0] for r in rows], "ours_db": [r[1] for r in rows], "table1_delta_db": [r[2] for r in rows],
                    "spearman": _none(spearman([r[1] for r in rows], [r[2] for r in rows]))})
    return out


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _arch_rows(spec: CalibrationSpec, records: dict[str, Record]) -> list[JSONDict]:
    rows = []
    for p in spec.panel:
        val = {str(s): _gain(records, Task(p.name, s, spec.seed, None)) for s in spec.budgets}
        test = {str(s): _gain(records, Task(p.name, s, spec.seed, None), "test_gain") for s in spec.budgets}
        seconds = sum((records.get(Task(p.name, s, spec.seed, None).key) or {}).get("train_seconds") or 0.0 for s in spec.budgets)
        failed = [r.get("reason") for s in spec.budgets if (r := records.get(Task(p.name, s, spec.seed, None).key))
                  and r.get("status") != TaskStatus.OK]
        rows.append({"name": p.name, "source": p.source, "summary": p.arch.summary(), "macs_g": p.macs / 1e9,
                     "params_k": p.params / 1e3, "val_gain_db": val, "test_gain_db": test,
                     "long_seed2_gain_db": _gain(records, Task(p.name, spec.long_steps, spec.seed + 1, None)),
                     "table1_delta_db": p.table1_delta_db, "train_seconds": seconds, "failure": failed[0] if failed else None})
    return rows


def summarize(spec: CalibrationSpec, records: dict[str, Record], *, device_name: str, command: str,
              data: str = "", recipe: str = "") -> JSONDict:
    """Everything `calibration.json` holds (module docstring); `records` maps `Task.key` to a result record."""
    groups = {g: [_rung_stats(spec, records, _group_names(spec, g), i) for i in range(len(spec.rungs))] for g in GROUPS}
    primary_group = "space" if groups["space"][spec.decider]["n"] >= 3 else "panel"
    decided = groups[primary_group][spec.decider]
    estimate = decided["spearman"]["estimate"]
    expected = len(spec.tasks())
    return {
        "format": "rtsr-nas calibration v1",
        "study": spec.study.name, "command": command, "device": device_name, "data": data, "recipe": recipe,
        "metric": spec.study.objectives.gain, "split": "val (selection); test kept per arch",
        "budgets": {"rungs": list(spec.rungs), "long_steps": spec.long_steps, "decay": spec.decay, "decider_rung": spec.decider,
                    "labels": [budget_label(spec, i) for i in range(len(spec.budgets))]},
        "panel": [p.to_dict() for p in spec.panel], "noise_subset": list(spec.noise),
        "complete": tasks_left(spec.tasks(), records) == 0, "tasks_done": len(records), "tasks": expected,
        "tasks_blocked": sum(1 for t in spec.tasks() if t.key not in records and blocked(spec.tasks(), records, t)),
        "primary": {"group": primary_group, "rung": spec.decider, "steps": spec.rungs[spec.decider], "spearman": decided["spearman"],
                    "target": TARGET_SPEARMAN, "met": None if estimate is None else estimate >= TARGET_SPEARMAN},
        "groups": groups, "noise_ceiling": _noise(spec, records), "presets_vs_table1": _presets_vs_table1(spec, records),
        "archs": _arch_rows(spec, records), "pair_threshold_db": PAIR_THRESHOLD_DB,
        "compute_seconds": sum((r.get("train_seconds") or 0.0) + (r.get("eval_seconds") or 0.0) for r in records.values()),
    }


# -- text ---------------------------------------------------------------------------------------------


def _f(value: float | None, spec: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _stats_table(rows: Sequence[JSONDict], long_label: str) -> list[str]:
    out = [f"| budget vs {long_label} | n archs | Spearman [95 % CI] | Kendall tau-b [95 % CI] | pairwise accuracy (pairs) | "
           "long-front archs recovered | hypervolume ratio |", "|---|---:|---|---|---|---|---:|"]
    for r in rows:
        pw, fr = r["pairwise"], r["front"]
        out.append(f"| {r['label']} | {r['n']} | {format_interval(r['spearman'])} | {format_interval(r['kendall'])} | "
                   f"{_f(pw['accuracy'], '.2f')} ({pw['pairs']}) | {fr['recovered']}/{len(fr['long_front'])} "
                   f"({_f(fr['fraction'], '.0%')}) | {_f(fr['hv_ratio'], '.2f')} |")
    return out


def render_markdown(summary: JSONDict) -> str:
    """The text report printed at the end and written as `calibration.md`."""
    b, p = summary["budgets"], summary["primary"]
    long_label = b["labels"][-1]
    metric = summary["metric"]
    lines = [f"# Proxy calibration: {summary['study']}", "",
             f"Command: `{summary['command']}`", f"Device: {summary['device']} (all trainings; 1 torch thread per task unless the study says otherwise).",
             f"Budgets: {', '.join(b['labels'])}; stable steps, each evaluated after a {b['decay']:g} x budget decay branch. "
             f"Gain: val {metric} over Lanczos [dB] (selection split). {summary['data']} {summary['recipe']}".rstrip(),
             f"Done: {summary['tasks_done']} of {summary['tasks']} trainings" + (f", {summary['tasks_blocked']} not trained after a failed budget"
                                                                                  if summary["tasks_blocked"] else "")
             + ("" if summary["complete"] else " (incomplete: rerun the command to finish)")
             + f"; {summary['compute_seconds'] / 60:.1f} min of training and evaluation summed over tasks on {summary['device']}.",
             "",
             f"**Rung that decides the last promotion ({b['labels'][p['rung']]}), {p['group']} archs: Spearman vs {long_label} "
             f"{format_interval(p['spearman'])} (n = {p['spearman']['n']}); target >= {p['target']:.1f}: "
             f"{'met' if p['met'] else 'not met' if p['met'] is not None else 'n/a'}.**", ""]
    for group, title in (("space", "Sampled archs (the study's space)"), ("panel", "Whole panel (sampled + presets)")):
        lines += [f"## {title}", ""] + _stats_table(summary["groups"][group], long_label) + [""]
    lines.append(f"Pairwise accuracy counts pairs whose {long_label} gains differ by more than {summary['pair_threshold_db']:g} dB; "
                 "front recovery uses deploy MACs (540x960) as the cost axis; the hypervolume ratio is that of the rung front's archs "
                 f"at their {long_label} gains over the {long_label} front's.")
    n = summary["noise_ceiling"]
    lines += ["", "## Noise ceiling", "",
              f"{long_label}, seeds {n['seeds'][0]} and {n['seeds'][1]} on {n['n']} archs ({', '.join(n['archs']) or 'none'}): "
              f"Spearman {format_interval(n['spearman'])}, Kendall {format_interval(n['kendall'])}; |seed difference| mean {_f(n['mean_abs_diff_db'], '.3f')} dB, "
              f"max {_f(n['max_abs_diff_db'], '.3f')} dB."]
    lines += ["", "## Presets vs the survey's Table 1 Delta (different data and recipes: direction only)", "",
              "| budget | n presets | Spearman (our val Delta vs Table 1 Delta) |", "|---|---:|---:|"]
    lines += [f"| {r['label']} | {r['n']} | {_f(r['spearman'], '+.2f')} |" for r in summary["presets_vs_table1"]]
    lines += ["", f"## Archs (val {metric} over Lanczos [dB] at each budget; test at {long_label})", "",
              "| arch | source | MACs [G] | params [k] | " + " | ".join(b["labels"]) + f" | test {long_label} | second seed | Table 1 Delta |",
              "|---|---|---:|---:|" + "---:|" * (len(b["labels"]) + 3)]
    for a in summary["archs"]:
        gains = " | ".join(_f(a["val_gain_db"][str(s)]) for s in [*b["rungs"], b["long_steps"]])
        lines.append(f"| {a['name']} `{a['summary']}` | {a['source']} | {a['macs_g']:.2f} | {a['params_k']:.1f} | {gains} | "
                     f"{_f(a['test_gain_db'][str(b['long_steps'])])} | {_f(a['long_seed2_gain_db'])} | {_f(a['table1_delta_db'])} |")
    return "\n".join(lines) + "\n"
