"""The calibration page (`reports.calibration`): built from a summary of hand-made records, it holds one
scatter point per arch and rung, the Spearman in the legend, and the tables; presets are compared
with Table 1."""

from __future__ import annotations

import json
import re

import pytest

from nas.calibrate import CalibrationSpec, PanelArch, Task, summarize
from nas.study import load_study
from reports.calibration import calibration_figure, write_calibration_html
from search_space.arch import ArchConfig
from search_space.presets import get_preset


@pytest.fixture(scope="module")
def summary() -> dict:
    panel = [PanelArch(name=f"s{i:02d}", arch=ArchConfig(down_factor=2, channels=8 + 4 * i, blocks=1, global_residual="lanczos"),
                       source="sampled", macs=(i + 1) * 10**9, params=1000) for i in range(4)]
    for name in ("casr", "lanczospp", "vpeg_r"):
        p = get_preset(name)
        panel.append(PanelArch(name=name, arch=p.arch, source="preset", macs=2 * 10**9, params=1000, table1_delta_db=p.delta_db))
    study = load_study("rtsr").with_overrides(halving__min_steps=100, halving__rungs=3)  # the rungs this page was written for
    spec = CalibrationSpec.build(study, panel=panel, long_steps=None, noise=2, device_kind="cpu", panel_seed=0)
    records = {}
    for k, p in enumerate(spec.panel):
        for steps in spec.budgets:
            gain = (k + 1) * 0.01 * steps / 1000 + (0.02 * (k % 2) if steps == 100 else 0.0)
            if p.source == "preset":
                gain = (p.table1_delta_db or 0) * steps / 3000 - 1.0
            task = Task(p.name, steps, spec.seed, None)
            records[task.key] = {"status": "ok", "gain": gain, "test_gain": gain - 0.1, "val": {"delta_y": gain}}
    for name in spec.noise:
        records[Task(name, spec.long_steps, spec.seed + 1, None).key] = {"status": "ok", "gain": 0.0, "test_gain": 0.0}
    return summarize(spec, records, device_name="cpu: test CPU (1 thread)", command="python -m nas.calibrate")


def test_presets_follow_table1_in_direction(summary):
    rows = summary["presets_vs_table1"]
    assert [r["n"] for r in rows] == [3, 3, 3, 3]  # casr, lanczospp, vpeg_r have a Table 1 Delta
    assert all(r["spearman"] == pytest.approx(1.0) for r in rows)


def test_the_page_has_a_point_per_arch_and_rung_and_the_spearman_in_the_legend(summary, tmp_path):
    fig = calibration_figure(summary)
    sampled = [t for t in fig.data if "Spearman" in t.name]
    assert len(sampled) == 3 and all(len(t.x) == 4 for t in sampled)
    assert sum(len(t.x) for t in fig.data) == 3 * 7
    rho = summary["groups"]["space"][1]["spearman"]["estimate"]
    assert f"Spearman {rho:+.2f}" in sampled[1].name
    page = write_calibration_html(summary, tmp_path).read_text()
    assert "Noise ceiling" in page and "Table 1" in page and "cpu: test CPU (1 thread)" in page
    meta = json.loads(re.search(r'id="calibration-meta">(.*?)</script>', page).group(1))
    assert meta["primary"]["rung"] == 1 and meta["groups"]["space"][1]["n"] == 4
