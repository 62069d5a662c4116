"""End to end: a successive-halving search with real proxy trainings, on the Ray-free local executor,
in a Python where `import ray` fails (a bare GPU box has no Ray). Results are read back through Optuna
from the run's journal, independently of the driver's bookkeeping."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from nas.halving import rung_study_name

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_halving_search_on_the_local_executor_without_ray(tmp_path, tiny_halving_study, run_cli):
    study = tiny_halving_study(name="halving-e2e", min_steps=6)
    blocker = tmp_path / "no_ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('ray is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO)]), PYTHONUNBUFFERED="1")
    run_dir = tmp_path / "run"
    proc = run_cli([sys.executable, "-m", "nas.run", "--study", str(study), "--executor", "local", "--out", str(run_dir), "--no-progress"],
                   cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "executor: local process pool" in proc.stdout

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    rung0 = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials() if t.state.name == "COMPLETE"]
    rung1 = optuna.load_study(study_name=rung_study_name(name, 1), storage=storage).get_trials()
    trained0 = [t for t in rung0 if t.user_attrs.get("status") == "ok"]
    assert len(rung0) == 4 and trained0
    for t in trained0:  # rung 0 trained 6 stable steps, kept its checkpoint, evaluated after a 3-step decay
        assert (t.user_attrs["rung_steps"], t.user_attrs["decay_steps"]) == (6, 3)
        assert (run_dir / t.user_attrs["checkpoint"]).stat().st_size > 0
    assert len(rung1) >= len(trained0) // 2 >= 1
    for t in rung1:
        a = t.user_attrs
        assert t.state.name == "COMPLETE", a.get("failure_reason")
        assert a["rung_steps"] == 12 and set(a["seed_gains"]) == {"0", "1"}
        assert t.values[0] == pytest.approx(sum(a["seed_gains"].values()) / 2)
        assert [h["steps"] for h in a["rung_history"]] == [6, 12]
        assert (run_dir / a["weights"]).is_file()
    assert "top rung 1 of 0-1, 12 steps, mean of 2 seeds" in (run_dir / "pareto.txt").read_text()
