"""Which architectures a calibration trains: published presets and a MACs-stratified sample of the space.

Why stratified: a uniform sample of the search space crowds where the space is dense, and a rank
correlation over archs that all cost the same says little about the cheap and the expensive ends the
front lives on. So a seeded Optuna `RandomSampler` draws a pool of candidates through the study's own
`suggest` (the same conditional space a search samples), keeps those inside the study's MACs cap
(latency is not timed here: timing would need the machine to itself), drops duplicates, sorts them by
deploy MACs, cuts the sorted pool into N equal-count bins (MACs quantiles) and takes one arch from
each bin at random. Deterministic for (study space, seed, N, pool size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search_space.errors import UserError

if TYPE_CHECKING:
    from nas.study import Study
    from search_space.arch import ArchConfig

__all__ = ["CPU_PRESET_MACS_G", "PanelArch", "default_pool", "panel_summary", "resolve_presets", "sample_stratified", "select_panel"]

#: `--presets` default: the published designs whose training fits a CPU budget (deploy MACs <= this).
CPU_PRESET_MACS_G = 3.0
SAMPLED = "sampled"
PRESET = "preset"


@dataclass(frozen=True)
class PanelArch:
    """One architecture of the panel: its name in every file and table, where it came from, its cost."""

    name: str  # "s00".. for sampled archs, the preset's name for a preset
    arch: ArchConfig
    source: str  # "sampled" | "preset"
    macs: int  # deploy MACs at 540x960
    params: int
    table1_delta_db: float | None = None  # presets: the survey's Table 1 Delta

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "arch": self.arch.to_dict(), "arch_hash": self.arch.arch_hash,
                "summary": self.arch.summary(), "macs": self.macs, "params": self.params, "table1_delta_db": self.table1_delta_db}


def default_pool(sampled: int) -> int:
    """Candidates drawn for `sampled` panel archs: 8 per arch (at least 64), so bins hold several."""
    return max(64, 8 * sampled)


def resolve_presets(value: str) -> list[str]:
    """`--presets`: 'cpu' (default: deploy MACs <= 3 G), 'all', 'none', or a comma list of names."""
    from search_space.cost import cost
    from search_space.presets import get_preset, list_presets

    text = value.strip().lower()
    if text == "none":
        return []
    if text == "all":
        return list_presets()
    if text == "cpu":
        return [n for n in list_presets() if cost(get_preset(n).arch).macs <= CPU_PRESET_MACS_G * 1e9]
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_presets()]
    if unknown or not names:
        raise UserError(f"--presets {value!r}: unknown preset(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                        f"give 'cpu', 'all', 'none' or a comma list of: {', '.join(list_presets())}")
    if len(set(names)) != len(names):
        raise UserError(f"--presets {value!r}: a preset is named twice")
    return names


def _candidates(study: Study, *, pool: int, seed: int) -> list[tuple[int, ArchConfig]]:
    """(MACs, arch) of up to `pool` distinct feasible archs drawn from the study's space."""
    import optuna

    from search_space.cost import cost
    from search_space.ranges import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    cap = study.constraints.macs_g
    seen: set[str] = set()
    out: list[tuple[int, ArchConfig]] = []
    for _ in range(pool * 4):  # room for duplicates and archs over the cap
        arch = suggest(sampler.ask(), study.search)
        if arch.arch_hash in seen:
            continue
        seen.add(arch.arch_hash)
        macs = cost(arch).macs
        if cap is None or macs <= cap * 1e9:
            out.append((macs, arch))
        if len(out) >= pool:
            break
    return out


def sample_stratified(study: Study, *, n: int, seed: int, pool: int | None = None) -> list[ArchConfig]:
    """`n` archs of the study's space, one per MACs-quantile bin of a seeded pool (module docstring)."""
    import random

    if n <= 0:
        return []
    found = sorted(_candidates(study, pool=pool or default_pool(n), seed=seed), key=lambda c: (c[0], c[1].arch_hash))
    if len(found) < n:
        raise UserError(f"--sampled {n}: the study's space has only {len(found)} distinct archs within its constraints "
                        f"in the candidates drawn; ask for fewer (--sampled {len(found)}) or widen [search]")
    rng = random.Random(seed)
    picks = []
    for k in range(n):
        lo, hi = k * len(found) // n, (k + 1) * len(found) // n
        picks.append(found[rng.randrange(lo, hi)][1])
    return picks


def select_panel(study: Study, *, sampled: int, presets: Sequence[str], seed: int, pool: int | None = None) -> tuple[PanelArch, ...]:
    """The panel: the named presets, then `sampled` stratified archs of the study's space (by MACs)."""
    from search_space.cost import cost
    from search_space.presets import get_preset

    panel = []
    for name in presets:
        preset = get_preset(name)
        c = cost(preset.arch)
        panel.append(PanelArch(name=name, arch=preset.arch, source=PRESET, macs=c.macs, params=c.params,
                               table1_delta_db=preset.delta_db))
    width = max(2, len(str(max(sampled - 1, 0))))
    for i, arch in enumerate(sample_stratified(study, n=sampled, seed=seed, pool=pool)):
        c = cost(arch)
        panel.append(PanelArch(name=f"s{i:0{width}d}", arch=arch, source=SAMPLED, macs=c.macs, params=c.params))
    hashes = [p.arch.arch_hash for p in panel]
    if len(set(hashes)) != len(hashes):
        raise UserError("the panel holds one architecture twice (a preset is also a sampled arch); pass another --seed")
    if len(panel) < 3:
        raise UserError(f"a panel of {len(panel)} archs has no rank correlation; use --sampled and --presets for 3 or more")
    return tuple(panel)


def panel_summary(panel: Sequence[PanelArch]) -> str:
    """One line: how many of each source and the MACs range."""
    macs = [p.macs / 1e9 for p in panel]
    n_presets = sum(p.source == PRESET for p in panel)
    return (f"panel: {len(panel)} archs ({len(panel) - n_presets} sampled, {n_presets} presets), "
            f"deploy MACs {min(macs):.2f}-{max(macs):.2f} G at 540x960")
