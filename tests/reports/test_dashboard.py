"""The dashboard page of a hand-made run: self-contained, the right points in the right panels."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
from fakerun import make_run

from nas.runstate import load_run
from reports import build_dashboard
from reports import figures as F


def _meta(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="dashboard-meta">(.*?)</script>', html, re.DOTALL)
    assert m, "no machine-readable summary in the page"
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_page_is_self_contained_and_only_writes_its_outputs(fake_run):
    from plotly.offline import get_plotlyjs

    before = {p.name for p in fake_run.iterdir()}
    path = build_dashboard(fake_run)
    assert path == fake_run / "dashboard.html"
    assert {p.name for p in fake_run.iterdir()} - before == {"dashboard.html", "trials.csv"}
    assert path.stat().st_mode & 0o777 == 0o644
    html = path.read_text(encoding="utf-8")
    bundle = get_plotlyjs()
    assert html.count(bundle) == 1  # plotly.js inlined, once
    ours = html.replace(bundle, "")
    assert not re.search(r"<script[^>]+src=", ours) and not re.search(r"<link[^>]+href=", ours)
    assert "cdn" not in ours.lower() and "https://" not in ours  # no CDN, nothing fetched (browser test checks requests)


def test_summary_counts_match_the_hand_made_run(fake_run, fake_front):
    html = build_dashboard(fake_run).read_text(encoding="utf-8")
    meta = _meta(html)
    assert meta["pareto_trials"] == fake_front
    # front 8, 0, 1; dominated 2; infeasible-but-trained 3; presets 0 (urpnet) and 8 (lanczospp)
    assert meta["pareto_points"] == {"Pareto front": 3, "dominated (feasible)": 1, "infeasible (trained)": 1,
                                     "published presets (this run)": 2}
    assert meta["pareto_points_total"] == 7
    assert meta["in_progress"] is True and meta["device"] == "cpu: Test CPU (1 thread)"
    assert meta["sections"] == ["pareto", "survey", "macs", "per-qp", "hypervolume", "importance", "trials"]
    assert "Run in progress" in html
    # the table lists all 9 trials, the failure reason included
    assert html.count('<tr class="') == 9 and "training diverged at step 7" in html


def test_pareto_figure_traces_and_hover(fake_run):
    state = load_run(fake_run)
    fig = F.pareto_figure(state)
    traces = {t.name: t for t in fig.data}
    assert list(traces) == list(F.PARETO_TRACES)
    front = traces["Pareto front"]
    assert list(front.x) == [5.0, 10.0, 20.0] and list(front.y) == [0.5, 1.0, 2.0]
    assert list(traces["dominated (feasible)"].y) == [1.5]
    assert list(traces["infeasible (trained)"].x) == [150.0]
    assert list(traces["published presets (this run)"].text) == ["urpnet", "lanczospp"]
    hover = front.customdata[1][0]  # trial 0
    assert "trial 0" in hover and "preset <b>urpnet</b>" in hover and "QP31 +1.500, QP63 +0.500 dB" in hover
    assert "MACs 1.219 G, params 9.4 k" in hover and "unshuffle2 C16 2xrep" in hover
    assert "cpu: Test CPU (1 thread)" in fig.layout.xaxis.title.text
    # the budget line is drawn at 100 ms (data up to 150 ms)
    assert [s.x0 for s in fig.layout.shapes] == [100.0]
    assert "val)" in hover and "test: gain +0.750 dB; +0.625 dB over the linear baseline" in hover


def test_pareto_figure_toggles_between_baselines_and_splits(fake_run):
    """The gain axis switches between Lanczos / the linear baseline and val / test; the front stays
    the val front. fakerun: linear baseline 0.125 dB above Lanczos, test 0.25 dB below val."""
    fig = F.pareto_figure(load_run(fake_run))
    (menu,) = fig.layout.updatemenus
    views = {b.label: b.args for b in menu.buttons}
    assert list(views) == [v[0] for v in F.GAIN_VIEWS]
    front = F.PARETO_TRACES.index("Pareto front")
    expected = {
        "gain over Lanczos, val (selection)": [0.5, 1.0, 2.0],
        "gain over Lanczos, test": [0.25, 0.75, 1.75],
        "gain over the linear baseline, val": [0.375, 0.875, 1.875],
        "gain over the linear baseline, test": [0.125, 0.625, 1.625],
    }
    for label, ys in expected.items():
        data, layout = views[label]
        assert data["y"][front] == ys, label
        assert ("test split" in layout["yaxis.title.text"]) == label.endswith("test")
        assert ("linear baseline" in layout["yaxis.title.text"]) == ("linear" in label)


def test_survey_panel_holds_table1_and_nothing_of_ours(fake_run):
    from search_space.presets import get_preset

    fig, missing = F.survey_figure()
    points = {name: (x, y) for tr in fig.data for name, x, y in zip(tr.text, tr.x, tr.y)}
    assert points["casr"] == (0.468, 0.205)  # Table 1: CASR (Z6) 0.468 ms, Delta 0.205 dB
    assert points["c3"] == (1.932, 0.5)
    assert "urpnet" not in points and missing == ["urpnet"]  # no Delta published for URPNet
    assert points == {n: (get_preset(n).runtime_ms, get_preset(n).delta_db) for n in points}
    assert "RTX 4090" in fig.layout.title.text and "RTX 4090" in fig.layout.xaxis.title.text
    ours = {x for tr in F.pareto_figure(load_run(fake_run)).data for x in tr.x}
    assert not ours & {x for x, _ in points.values()}
    # Every row is marked with how faithful our preset is: one trace (legend, marker) per status.
    by_status = {tr.name.split()[1]: set(tr.text) for tr in fig.data}
    assert set(by_status) == {"exact", "fitted", "approximate"}
    for status, names in by_status.items():
        assert all(get_preset(n).status == status for n in names), status
    assert {"rvsr", "vpeg_s", "anunet", "casr"} <= by_status["exact"] and "xiaomimm" in by_status["approximate"]
    symbols = {tr.name.split()[1]: tr.marker.symbol for tr in fig.data}
    assert len(set(symbols.values())) == 3
    hover = {n: c[0] for tr in fig.data for n, c in zip(tr.text, tr.customdata)}
    assert "approximate" in hover["xiaomimm"] and "no width fits" in hover["xiaomimm"]
    assert "exact" in hover["casr"] and get_preset("casr").note[:30] not in hover["casr"]


def test_hypervolume_curve_by_hand(fake_run):
    fig = F.hypervolume_figure(load_run(fake_run))
    # reference (0 dB, 100 ms budget); feasible results in trial order 0 (1 dB, 10 ms), 1 (2 dB, 20 ms),
    # 2 (dominated), 3 infeasible, 4 skipped, 5 failed, 6 duplicate, 8 (0.5 dB, 5 ms):
    # 90*1 = 90; + 80*1 = 170; ...; 95*0.5 + 90*0.5 + 80*1 = 172.5
    assert list(fig.data[0].y) == pytest.approx([90, 170, 170, 170, 170, 170, 170, 172.5])


def test_importance_needs_enough_trials(tmp_path, fake_run):
    few = make_run(tmp_path / "few", [{"gain": 1.0, "latency": 5.0}, {"gain": 2.0, "latency": 9.0, "params": {"channels": 32, "blocks": 1}}])
    fig, why = F.importance_figure(load_run(few))
    assert fig is None and "at least 5 trained trials" in why and "has 2" in why
    html = build_dashboard(few).read_text(encoding="utf-8")
    assert 'id="importance-message"' in html
    fig, why = F.importance_figure(load_run(fake_run))
    assert why is None
    names = [set(tr.y) for tr in fig.data]
    assert names == [{"channels", "blocks"}, {"channels", "blocks"}]
    assert all(abs(sum(tr.x) - 1.0) < 1e-6 for tr in fig.data)  # normalized per objective


def test_ablation_figures_become_sections(fake_run, monkeypatch):
    import plotly.graph_objects as go

    fake = types.ModuleType("reports.ablation")
    fake.is_ablation_run = lambda run_dir: True
    fake.ablation_figures = lambda run_dir: [go.Figure(layout=dict(title=dict(text="Bias removal: Delta per arm"))), go.Figure()]
    monkeypatch.setitem(sys.modules, "reports.ablation", fake)
    html = build_dashboard(fake_run).read_text(encoding="utf-8")
    assert _meta(html)["sections"][-3:] == ["ablation-1", "ablation-2", "trials"]
    assert "Ablation: Bias removal: Delta per arm" in html

    def broken(run_dir):
        raise RuntimeError("no arms")

    fake.ablation_figures = broken
    html = build_dashboard(fake_run).read_text(encoding="utf-8")
    assert "ablation figures failed: RuntimeError: no arms" in html and 'id="pareto"' in html


def test_not_an_ablation_run_has_no_ablation_section(fake_run, monkeypatch):
    fake = types.ModuleType("reports.ablation")
    fake.is_ablation_run = lambda run_dir: False
    fake.ablation_figures = lambda run_dir: pytest.fail("figures asked for a non-ablation run")
    monkeypatch.setitem(sys.modules, "reports.ablation", fake)
    assert "ablation" not in " ".join(_meta(build_dashboard(fake_run).read_text(encoding="utf-8"))["sections"])
