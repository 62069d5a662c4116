"""The dashboard of a real smoke run in a real headless Chromium: it renders offline, without a
console error, and the Pareto plot shows exactly the points the journal says it should.

The expected points are recomputed here from the journal with Optuna and a plain dominance loop,
independently of `nas.runstate` and `reports`.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

_RENDERED = """(() => {
  const divs = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return divs.length > 0 && divs.every(d => d._fullLayout) ? divs.map(d => d.id) : null;
})()"""


def _expected_points(run_dir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(run_dir / "journal.log"))))
    ok = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "ok"]
    feasible = [t for t in ok if t.user_attrs["feasible"]]

    def dominated(t):
        g, lat = t.values
        return any(o.values[0] >= g and o.values[1] <= lat and (o.values[0] > g or o.values[1] < lat) for o in feasible)

    front = sorted((t for t in feasible if not dominated(t)), key=lambda t: t.values[1])
    return {
        "Pareto front": [t.number for t in front],
        "dominated (feasible)": [t.number for t in feasible if dominated(t)],
        "infeasible (trained)": [t.number for t in ok if not t.user_attrs["feasible"]],
        "published presets (this run)": [t.number for t in ok if t.user_attrs.get("preset")],
    }


@pytest.fixture(scope="module")
def dashboard(smoke_run):
    """`python -m reports --run RUN` (in-process: the same argv path, without a second torch import)."""
    import contextlib
    import io

    from rtsr.report import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--run", str(smoke_run)]) == 0
    assert f"dashboard: {smoke_run / 'dashboard.html'}" in out.getvalue()
    return smoke_run / "dashboard.html"


def test_smoke_dashboard_renders_offline_without_errors(browser, dashboard, smoke_run):
    browser.open(dashboard.as_uri())
    ids = browser.wait_for(_RENDERED)
    meta = browser.evaluate("JSON.parse(document.getElementById('dashboard-meta').textContent)")
    plotted = [s for s in meta["sections"] if s not in ("importance", "trials")]
    assert set(plotted) <= set(ids)
    assert browser.errors() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "blob:"))] == []

    expected = _expected_points(smoke_run)
    assert expected["Pareto front"], "the smoke run should train at least one feasible trial"
    traces = browser.evaluate("document.getElementById('pareto').data.map(t => [t.name, t.customdata.map(c => c[1])])")
    assert {name: numbers for name, numbers in traces} == expected
    rendered = browser.evaluate("document.querySelectorAll('#pareto .scatterlayer .point').length")
    assert rendered == sum(len(v) for v in expected.values()) == meta["pareto_points_total"]
    # the latency axis names the device the trials were timed on
    device = browser.evaluate("document.getElementById('pareto').layout.xaxis.title.text")
    assert device.endswith("on " + meta["device"]) and meta["device"].startswith("cpu: ")


def test_trials_table_sorts_on_click(browser, dashboard, smoke_run):
    browser.open(dashboard.as_uri())
    col = browser.evaluate("Array.from(document.querySelectorAll('#trials-table th')).findIndex(th => th.dataset.col === 'latency_ms')")
    assert col >= 0
    read = f"Array.from(document.querySelectorAll('#trials-table tbody tr')).map(r => r.cells[{col}].getAttribute('data-v'))"
    browser.evaluate(f"document.querySelectorAll('#trials-table th')[{col}].click()")
    asc = browser.evaluate(read)
    values = [float(v) for v in asc if v != ""]
    assert values == sorted(values) and asc[: len(values)] == [v for v in asc if v != ""]  # blanks last
    browser.evaluate(f"document.querySelectorAll('#trials-table th')[{col}].click()")
    desc = [float(v) for v in browser.evaluate(read) if v != ""]
    assert desc == sorted(values, reverse=True)
    meta = browser.evaluate("JSON.parse(document.getElementById('dashboard-meta').textContent)")
    assert len(asc) == meta["trials"]  # sorting moves rows, never drops them


def test_harness_sees_errors_and_network(browser, tmp_path):
    """Negative control: the checks above would notice a console error, an exception or a fetch."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); setTimeout(() => { throw new Error('late'); }, 0);"
                    "</script><img src='http://127.0.0.1:9/x.png'></body></html>")
    browser.open(page.as_uri())
    browser.wait_for("new Promise(r => setTimeout(() => r(true), 300))")
    errors = " | ".join(browser.errors())
    assert "boom" in errors and "late" in errors
    assert "http://127.0.0.1:9/x.png" in browser.requests()
