"""The latency command: time presets or an architecture file, print a table, optionally write JSON.

Why it lives in the command layer: parsing flags, progress bars, tables and the comparison with
the survey's Table 1 are presentation, not measurement (that is `nas.latency`). `main(argv)` runs
as `python -m nas.latency` or as a subcommand of a dispatcher (pass `prog`). Like `nas.latency`
it imports with torch alone: presets, MACs (thop) and tqdm are imported lazily and optional.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from nas.latency import (
    LatencyCache,
    LatencyProtocol,
    LatencyResult,
    SoftwareStack,
    device_name_for,
    measure_latency_batch,
    spearman,
)
from search_space.configio import atomic_write, load_toml
from search_space.errors import UserError

__all__ = ["DEFAULT_PROG", "TABLE1_DEVICE", "build_parser", "main"]

#: The name shown in usage lines, error prefixes and the recorded command when run on its own.
DEFAULT_PROG = "python -m nas.latency"

#: The survey's Table 1 runtimes were measured on this GPU; printed next to them so nobody compares
#: them with our numbers without seeing the device.
TABLE1_DEVICE = "NVIDIA RTX 4090 (AIS 2024 survey, Table 1)"


def build_parser(*, prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    """The latency command line; `prog` names it in usage and help (e.g. `rtsr latency`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Runtime of deploy-form SR networks. On cuda: the AIS 2024 challenge protocol (fp16, "
            "1x3x540x960 randn, cudnn.benchmark, 50 warm-ups, 100 CUDA-event runs). On cpu: fp32, a "
            "few warm-ups, at most 10 runs or 20 s, labelled cpu (not comparable with GPU numbers)."
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a published design (see `python -m search_space.presets`), or 'all'")
    what.add_argument("--arch", help="an architecture file (.toml or .json; the arch at top level or under [arch])")
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="where to measure (auto: cuda when available, else cpu)",
    )
    parser.add_argument("--runs", type=int, help="timed runs (default: 100 on cuda, at most 10 on cpu)")
    parser.add_argument("--warmup", type=int, help="warm-up runs (default: 50 on cuda, 2 on cpu)")
    parser.add_argument("--hw", help="input size HxW (default 540x960, the challenge's 540p frame)")
    parser.add_argument("--time-budget", type=float, help="seconds per network (default: none on cuda, 20 on cpu)")
    parser.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (a separate, labelled backend)"
    )
    parser.add_argument(
        "--runtime", choices=("torch", "onnxruntime"), default="torch",
        help="torch: eager PyTorch (default); onnxruntime: the checked ONNX export in ONNX Runtime on the cpu "
        '(needs pip install -e ".[deploy]"), printed beside eager torch with the Spearman rank correlation between them',
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="cpu only: torch intra-op threads (default: torch's choice); part of the device label",
    )
    parser.add_argument("--cache", help="a JSON-lines latency cache to read and extend (e.g. runs/rtsr/latency.jsonl)")
    parser.add_argument("--out", help="write everything as JSON to this file (e.g. benchmarks/latency_h100.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


# -- what to measure -------------------------------------------------------------------------------


def _parse_hw(text: str) -> tuple[int, int]:
    """`540x960` (or `540*960`) as (H, W); anything else is a `UserError` with an example."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--hw {text!r}: expected HxW such as 540x960") from None
    if h < 1 or w < 1:
        raise UserError(f"--hw {text!r}: height and width must be >= 1")
    return h, w


def _load_arch_file(path_text: str) -> Any:
    """An ArchConfig from a .toml or .json file (arch at top level or under an `arch` key).

    Both an exported trial (`[arch]` beside `[recipe]`) and a bare arch dump are accepted, so any
    file the project writes can be timed without editing it."""
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"--arch {path}: no such file; pass a .toml or .json architecture file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data: Any = load_toml(path, what="--arch")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UserError(f"--arch {path}: cannot parse ({exc}); fix the file syntax") from None
    else:
        raise UserError(f"--arch {path}: unsupported extension {suffix!r}; use .toml or .json")
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]
    if not isinstance(data, dict):
        raise UserError(f"--arch {path}: expected a table/object describing the architecture")
    from search_space.arch import ArchConfig

    return ArchConfig.from_dict(data)


@dataclass
class _Job:
    """One network to time, with its Table 1 runtime when it is a published preset."""

    name: str
    arch: Any
    table1_ms: float | None = None
    approximate: bool = False


def _preset_jobs(spec: str) -> list[_Job]:
    """One job per preset (`all`: every registered one, in registry order)."""
    from search_space import presets

    names = list(presets.list_presets()) if spec == "all" else [spec]
    jobs = []
    for n in names:
        p = presets.get_preset(n)
        jobs.append(_Job(name=n, arch=p.arch, table1_ms=float(p.runtime_ms), approximate=p.status == "approximate"))
    return jobs


def _resolve_device(args: argparse.Namespace) -> str:
    """`cuda` or `cpu` from `--device`, with `--threads` applied (cpu only: GPU timing ignores it)."""
    from nas.device import choose_device

    device = choose_device(args.device, has_cuda=torch.cuda.is_available())
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: use a positive number of threads")
        if device != "cpu":
            raise UserError("--threads only applies to --device cpu (GPU timing does not depend on it)")
        torch.set_num_threads(args.threads)
    return device


def _protocol_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that change the device's standard protocol (and so its hash)."""
    overrides: dict[str, Any] = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    if args.hw is not None:
        overrides["input_hw"] = _parse_hw(args.hw)
    if args.time_budget is not None:
        overrides["time_budget_s"] = args.time_budget
    if args.channels_last:
        overrides["backend"] = "channels_last"
    if args.runtime != "torch":
        overrides["runtime"] = args.runtime
    return overrides


# -- measuring -------------------------------------------------------------------------------------


def _macs_of(arch: Any, hw: tuple[int, int]) -> float | None:
    """Deploy MACs via `search_space.cost` (thop, lazily); None when thop is missing or it fails.

    MACs are an optional column: a machine without thop still gets its runtimes.
    """
    try:
        from search_space.cost import cost

        return float(cost(arch, hw=hw).macs)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - an optional column must not lose the measured runtimes
        print(f"nas.latency: MACs not available for {arch.summary() if hasattr(arch, 'summary') else arch}: {exc}", file=sys.stderr)
        return None


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """A tqdm bar over `total` networks, advanced by calling the yielded function once per network.

    A callback rather than an iterable because a CPU batch is timed interleaved: networks finish in
    any order, not one after another. A no-op without tqdm or for a single network."""
    if not enabled or total < 2:
        yield lambda: None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda: None
        return
    bar = tqdm(total=total, desc="latency", unit="net", file=sys.stderr)
    try:
        yield lambda: bar.update(1)
    finally:
        bar.close()


def _measure_rows(
    jobs: list[_Job], *, device: str, protocol: LatencyProtocol, cache: LatencyCache | None, progress: bool
) -> list[dict[str, Any]]:
    """Time every job into one row each for the table and JSON: cache hits first, then the misses
    as one batch (interleaved on cpu, so load drift does not favour the first networks).

    Each measured result is cached before the first failure, if any, is raised."""
    dev_name = device_name_for(device)
    results: list[LatencyResult | None] = [None] * len(jobs)
    if cache is not None:
        for i, job in enumerate(jobs):
            results[i] = cache.get(str(job.arch.arch_hash), protocol, dev_name)
    misses = [i for i, r in enumerate(results) if r is None]
    failures: list[Exception] = []
    if misses:
        with _progress(len(misses), enabled=progress) as tick:
            measured = measure_latency_batch(
                [jobs[i].arch for i in misses],
                device=device,
                protocol=protocol,
                names=[jobs[i].name for i in misses],
                errors="return",
                on_done=lambda _: tick(),
            )
        for i, res in zip(misses, measured):
            if isinstance(res, Exception):
                failures.append(res)
                continue
            if cache is not None:
                cache.put(res)
            results[i] = res
    if failures:
        raise failures[0]
    rows: list[dict[str, Any]] = []
    for job, result in zip(jobs, results):
        rows.append(
            {
                "name": job.name,
                "approximate": job.approximate,
                "arch": job.arch.to_dict() if hasattr(job.arch, "to_dict") else None,
                "macs": _macs_of(job.arch, protocol.input_hw),
                "table1_ms": job.table1_ms,
                "result": result,
            }
        )
    return rows


# -- reporting -------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    """A number for the table; `-` for missing or NaN so columns never show `None`/`nan`."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _render_table(rows: list[dict[str, Any]], *, show_macs: bool) -> str:
    """A plain-text table, columns padded to their widest cell (no dependency on pandas or rich).

    `IQR [ms]` is the spread of the runs (p75 - p25): medians closer than it are not told apart."""
    header = ["name"]
    if show_macs:
        header.append("MACs [G]")
    header += ["params [k]", "mean [ms]", "median [ms]", "p90 [ms]", "IQR [ms]", "CV [%]", "Table 1 [ms, RTX 4090]", "device"]
    body = []
    for r in rows:
        res: LatencyResult = r["result"]
        line = [r["name"] + (" (approx.)" if r["approximate"] else "")]
        if show_macs:
            line.append(_fmt(r["macs"] / 1e9 if r["macs"] is not None else None, ".4g"))
        line += [
            _fmt(res.params / 1e3 if res.params is not None else None, ".1f"),
            _fmt(res.mean_ms, ".3f"),
            _fmt(res.median_ms, ".3f"),
            _fmt(res.p90_ms, ".3f"),
            _fmt(res.iqr_ms, ".3f"),
            _fmt(res.cv_percent, ".1f"),
            _fmt(r["table1_ms"], ".3f"),
            res.device_name,
        ]
        body.append(line)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in body]
    return "\n".join(out)


def _print_table(rows: list[dict[str, Any]], *, protocol: LatencyProtocol, dev_name: str) -> None:
    """The table and the lines that say which device and input each column was measured on."""
    show_macs = any(r["macs"] is not None for r in rows)
    print(_render_table(rows, show_macs=show_macs))
    if show_macs:
        h, w = protocol.input_hw
        print(f"MACs: deploy form at input {h}x{w}.")
    print(f"IQR: interquartile range of each network's runs (p75 - p25) on {dev_name}, in ms.")
    if any(r["table1_ms"] is not None for r in rows):
        print(f"Table 1 runtimes: {TABLE1_DEVICE}; ours: {dev_name}.")


def _correlations(rows: list[dict[str, Any]], dev_name: str) -> dict[str, Any]:
    """Spearman rho of our mean runtimes vs Table 1's, over the exact/fitted presets and over all.

    Approximate presets are different networks from the teams' (same family, own MACs), so the
    headline number leaves them out; the all-presets number is reported beside it.
    """
    out: dict[str, Any] = {}
    groups = {
        "exact+fitted presets": [r for r in rows if r["table1_ms"] is not None and not r["approximate"]],
        "all presets": [r for r in rows if r["table1_ms"] is not None],
    }
    for label, group in groups.items():
        if len(group) < 2:
            continue
        rho = spearman([r["result"].mean_ms for r in group], [r["table1_ms"] for r in group])
        out[label] = {
            "spearman_rho": None if math.isnan(rho) else rho,
            "n": len(group),
            "presets": [r["name"] for r in group],
            "ours": f"mean runtime [ms] on {dev_name}",
            "reference": f"Table 1 runtime [ms] on {TABLE1_DEVICE}",
        }
    return out


def _report_correlations(rows: list[dict[str, Any]], *, device: str, dev_name: str) -> dict[str, Any] | None:
    """Print and return the rank correlations with Table 1; None on cpu, whose ranking differs."""
    if not device.startswith("cuda"):
        print("Spearman rank correlation vs Table 1: not computed (cpu timings do not rank like the RTX 4090's).")
        return None
    correlation = _correlations(rows, dev_name)
    for label, c in correlation.items():
        print(
            f"Spearman rank correlation, our mean runtime on {dev_name} vs Table 1 on RTX 4090, "
            f"{label} (n={c['n']}): rho = {_fmt(c['spearman_rho'], '.3f')}"
        )
    return correlation


def _compare_runtimes(eager: list[dict[str, Any]], other: list[dict[str, Any]], *, dev_name: str) -> dict[str, Any]:
    """Print eager torch and the other runtime side by side (mean ms) with the Spearman rho between them.

    Why: the search ranks by eager torch; if a deployment runtime ranks designs differently, the
    front it finds is not the front that ships."""
    runtime = other[0]["result"].protocol.runtime if other else "?"
    print(f"{'network':<14} {'eager torch ms':>15} {runtime + ' ms':>16} {'ratio':>7}   ({dev_name}, mean of timed runs)")
    pairs = []
    for e, o in zip(eager, other):
        a, b = e["result"].mean_ms, o["result"].mean_ms
        pairs.append({"name": e["name"], "eager_torch_ms": a, f"{runtime}_ms": b})
        print(f"{e['name']:<14} {_fmt(a, '.2f'):>15} {_fmt(b, '.2f'):>16} {_fmt(b / a if a else None, '.2f'):>7}")
    rho = spearman([p["eager_torch_ms"] for p in pairs], [p[f"{runtime}_ms"] for p in pairs]) if len(pairs) >= 2 else math.nan
    print(f"Spearman rank correlation, eager torch vs {runtime} on {dev_name} (n={len(pairs)}): rho = {_fmt(None if math.isnan(rho) else rho, '.3f')}")
    return {"runtime": runtime, "spearman_rho": None if math.isnan(rho) else rho, "n": len(pairs), "networks": pairs}


def _benchmark_payload(
    rows: list[dict[str, Any]],
    *,
    command: str,
    device: str,
    dev_name: str,
    protocol: LatencyProtocol,
    correlation: dict[str, Any] | None,
    runtimes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `--out` JSON document (format "rtsr-nas latency benchmark v1"): results plus provenance."""
    return {
        "format": "rtsr-nas latency benchmark v1",
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device_name": dev_name,
        "torch_version": torch.__version__,
        "cudnn_version": torch.backends.cudnn.version() if device.startswith("cuda") else None,
        "software": SoftwareStack.timing(protocol).to_dict(),
        "python_version": platform.python_version(),
        "protocol": protocol.to_dict(),
        "protocol_hash": protocol.protocol_hash,
        "protocol_description": protocol.describe(),
        "table1_device": TABLE1_DEVICE,
        "results": [
            {
                "name": r["name"],
                "approximate": r["approximate"],
                "arch": r["arch"],
                "macs": r["macs"],
                "table1_runtime_ms": r["table1_ms"],
                "latency": r["result"].to_dict(),
            }
            for r in rows
        ],
        "spearman_vs_table1": correlation,
        "runtime_comparison": runtimes,
    }


# -- the command -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, argv: Sequence[str], *, prog: str) -> int:
    """Check everything the user gave before measuring anything, then measure, print and write."""
    device = _resolve_device(args)
    dev_name = device_name_for(device)  # clear error before anything else when CUDA is missing
    protocol = LatencyProtocol.default_for(device, **_protocol_overrides(args))
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a directory; pass a file name such as {Path(args.out) / 'latency.json'}")
    if args.preset is not None:
        jobs = _preset_jobs(args.preset)
    else:
        jobs = [_Job(name=Path(args.arch).stem, arch=_load_arch_file(args.arch))]
    cache = LatencyCache(args.cache) if args.cache else None

    print(f"device: {dev_name}; {SoftwareStack.timing(protocol).label()}")
    print(f"protocol: {protocol.describe()}")
    rows = _measure_rows(jobs, device=device, protocol=protocol, cache=cache, progress=not args.no_progress)
    _print_table(rows, protocol=protocol, dev_name=dev_name)
    correlation = _report_correlations(rows, device=device, dev_name=dev_name) if args.preset == "all" else None
    runtimes = None
    if protocol.runtime != "torch":
        eager = dataclasses.replace(protocol, runtime="torch")
        print(f"eager torch for comparison, protocol: {eager.describe()}")
        eager_rows = _measure_rows(jobs, device=device, protocol=eager, cache=cache, progress=not args.no_progress)
        runtimes = _compare_runtimes(eager_rows, rows, dev_name=dev_name)
    if args.out:
        payload = _benchmark_payload(
            rows,
            command=" ".join([prog, *argv]),
            device=device,
            dev_name=dev_name,
            protocol=protocol,
            correlation=correlation,
            runtimes=runtimes,
        )
        atomic_write(Path(args.out), json.dumps(payload, indent=2, sort_keys=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = DEFAULT_PROG) -> int:
    """Run the latency command; returns the exit status (2 for a user error, printed without a traceback).

    `prog` is the name shown in usage, in error prefixes and in the recorded command, so a dispatcher
    can run this as `rtsr latency`; the default keeps `python -m nas.latency`'s output unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog=prog).parse_args(argv)
    try:
        return _run(args, argv, prog=prog)
    except UserError as exc:
        print(f"{prog.removeprefix('python -m ')}: error: {exc}", file=sys.stderr)
        return 2
