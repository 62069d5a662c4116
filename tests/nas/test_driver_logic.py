"""Driver bookkeeping without Ray: an in-process fake executor with scripted crashes and synthetic
results, so retries, skipped infeasible trials, duplicates, RDB storage and resume refusals are
checked in seconds. (The real Ray paths are in test_driver_e2e.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.driver import SearchDriver
from nas.testing import FAKE_DEVICE, FAKE_LINEAR_OFFSET_DB, FAKE_TEST_OFFSET_DB, FakeExecutor, fake_training_output
from nas.study import Study, load_study
from search_space.arch import ArchConfig
from search_space.cost import cost
from search_space.errors import UserError

DEVICE = FAKE_DEVICE


def fake_gain(arch: dict) -> float:
    return round(arch["channels"] / 10 + arch["blocks"] / 7, 6)


def fake_latency_ms(arch: dict) -> float:
    return float(arch["channels"] * 3 + arch["blocks"] * 5 + arch["down_factor"])


def _arch_hash(payload: dict) -> str:
    return ArchConfig.from_dict(payload["arch"]).arch_hash


@pytest.fixture()
def fake() -> FakeExecutor:
    """The shared in-process executor with this module's synthetic gains and latencies; `crashes`
    maps arch_hash -> how many attempts of it crash."""
    crashes: dict[str, int] = {}

    def crash(payload: dict) -> bool:
        h = _arch_hash(payload)
        if crashes.get(h, 0) > 0:
            crashes[h] -= 1
            return True
        return False

    fake = FakeExecutor(train=lambda payload: fake_training_output(payload, fake_gain(payload["arch"])),
                        latency_ms=lambda arch: [fake_latency_ms(arch)], crash=crash, device_name=DEVICE)
    fake.crashes = crashes  # type: ignore[attr-defined]
    return fake


def _trained(fake: FakeExecutor) -> list[str]:
    return [_arch_hash(p) for p in fake.payloads]


def _run(study: Study, run_dir: Path, fake: FakeExecutor, **kw) -> int:
    driver = SearchDriver(study, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory, **kw)
    return driver.run()


def _load(run_dir: Path, storage=None):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    storage = storage or JournalStorage(JournalFileBackend(str(run_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def test_crashed_task_is_failed_with_reason_and_retried_a_bounded_number_of_times(tmp_path, fake, tiny_data):
    from optuna.trial import TrialState

    from search_space.presets import get_preset

    study = load_study("smoke").with_overrides(**tiny_data)  # max_retries = 1, 4 trials, presets urpnet + lanczospp first
    urpnet = get_preset("urpnet").arch.arch_hash
    fake.crashes[urpnet] = 5  # crashes every time
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # --storage takes an RDB URL
    assert _run(study, tmp_path / "run", fake, storage=storage) == 0

    s = _load(tmp_path / "run", storage=storage)
    first = s.trials[0]
    assert first.user_attrs["preset"] == "urpnet" and first.state == TrialState.FAIL
    assert first.user_attrs["status"] == "crashed" and first.user_attrs["requeued"] is True
    assert "WorkerCrashedError" in first.user_attrs["failure_reason"]
    retries = [t for t in s.trials if t.user_attrs.get("retry_of") == first.number]
    assert len(retries) == 1  # max_retries = 1: exactly one more attempt
    retry = retries[0]
    assert retry.params == first.params and retry.user_attrs["retries"] == 1 and retry.user_attrs["preset"] == "urpnet"
    assert retry.state == TrialState.FAIL and retry.user_attrs["requeued"] is False
    assert _trained(fake).count(urpnet) == 2
    # budget: 4 done = the final failure + 3 COMPLETE; the re-queued attempt does not count
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(s.trials) == 5
    assert not (tmp_path / "run" / "journal.log").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["storage"] == storage


def _two_arch_study(macs_cap_g: float, trials: int, data: dict[str, str]) -> Study:
    """Two possible archs (C8, C16); `data`: the `tiny_data` overrides."""
    return Study.from_dict({
        "name": "tiny",
        "search": {"down_factor": 2, "downsample": "unshuffle", "channels": {"low": 8, "high": 16, "step": 8},
                   "blocks": 1, "block": "rep", "body_skip": False, "activation": "relu", "reconstruction": "direct", "tail_kernel": 1,
                   "global_residual": "none", "bias": False, "end_block": "conv"},
        "proxy": {"steps": 20},
        "constraints": {"latency_ms": {"cpu": 1000.0}, "macs_g": macs_cap_g},
        "latency": {"cpu": {"input_hw": [48, 96], "runs": 1, "warmup": 0}},
        "sampler": {"name": "random"},
        "budget": {"trials": trials, "workers": 2},
    }).with_overrides(**data)


def test_infeasible_trials_are_skipped_and_repeats_are_copied_not_retrained(tmp_path, fake, tiny_data):
    from optuna.trial import TrialState

    base = dict(down_factor=2, blocks=1, block="rep", tail_kernel=1, bias=False)
    small, big = ArchConfig(channels=8, **base), ArchConfig(channels=16, **base)
    cap = (cost(small).macs + cost(big).macs) / 2 / 1e9  # between the two: C16 breaks the MACs cap
    assert _run(_two_arch_study(cap, trials=6, data=tiny_data), tmp_path / "run", fake) == 0

    trials = _load(tmp_path / "run").trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    by_arch = {small.arch_hash: [], big.arch_hash: []}
    for t in trials:
        by_arch[t.user_attrs["arch_hash"]].append(t)
    assert by_arch[small.arch_hash] and by_arch[big.arch_hash], "random sampling over 6 trials hits both archs"
    for t in by_arch[big.arch_hash]:  # infeasible: told with its real latency, never trained
        assert t.user_attrs["status"] == "skipped" and t.user_attrs["feasible"] is False
        assert t.values == [0.0, fake_latency_ms(big.to_dict())]
        assert t.user_attrs["constraints"][1] == pytest.approx(cost(big).macs / 1e9 - cap)
    statuses = sorted(t.user_attrs["status"] for t in by_arch[small.arch_hash])
    assert statuses == ["ok"] + ["duplicate"] * (len(statuses) - 1)
    for t in by_arch[small.arch_hash]:
        assert t.values == [fake_gain(small.to_dict()), fake_latency_ms(small.to_dict())]
        # both baselines and both splits are recorded, and a duplicate copies them from its original
        g = fake_gain(small.to_dict())
        assert t.user_attrs["gain_linear_y"] == pytest.approx(g - FAKE_LINEAR_OFFSET_DB)
        assert t.user_attrs["test"]["gain_y"] == pytest.approx(g - FAKE_TEST_OFFSET_DB)
        assert t.user_attrs["test"]["gain_linear_y"] == pytest.approx(g - FAKE_TEST_OFFSET_DB - FAKE_LINEAR_OFFSET_DB)
    assert _trained(fake) == [small.arch_hash]  # trained exactly once, big never
    table = (tmp_path / "run" / "pareto.txt").read_text()
    assert table.count("\n") == 4  # title, header, rule, one row: the feasible trained arch
    row = table.splitlines()[3].split()
    g = fake_gain(small.to_dict())
    assert "selected on val, reported on test" in table
    assert [float(x) for x in row[-7:-4]] == pytest.approx([g, g - FAKE_TEST_OFFSET_DB, g - FAKE_TEST_OFFSET_DB - FAKE_LINEAR_OFFSET_DB], abs=1e-3)


def test_resume_refuses_another_experiment_or_device(tmp_path, fake, tiny_data):
    study = _two_arch_study(100.0, trials=2, data=tiny_data)
    run_dir = tmp_path / "run"
    assert _run(study, run_dir, fake) == 0
    with pytest.raises(UserError, match=r"different experiment \(changed: proxy\.steps\).*--fresh"):
        _run(study.with_overrides(proxy__steps=40), run_dir, fake)
    fake.device_name = "cpu: another CPU (1 thread)"
    with pytest.raises(UserError, match=r"timed on 'cpu: fake CPU \(1 thread\)'.*another CPU.*--fresh"):
        _run(study, run_dir, fake)
    fake.device_name = DEVICE
    assert _run(study.with_overrides(budget__trials=3), run_dir, fake) == 0  # a bigger budget resumes
    assert len(_load(run_dir).trials) == 3


def test_resume_refuses_an_edited_recipe_file_and_resumes_once_restored(tmp_path, fake, tiny_data):
    from trainers.recipe import RECIPES_DIR

    recipe = tmp_path / "my_proxy.toml"
    original = (RECIPES_DIR / "proxy.toml").read_text()
    recipe.write_text(original)
    study = _two_arch_study(100.0, trials=2, data=tiny_data).with_overrides(proxy__recipe=str(recipe))
    run_dir = tmp_path / "run"
    assert _run(study, run_dir, fake) == 0
    assert json.loads((run_dir / "run.json").read_text())["recipe_hashes"]

    recipe.write_text(original.replace("lr = 2e-3", "lr = 1e-3"))  # same name, other contents
    with pytest.raises(UserError, match=r"other contents of recipe .*my_proxy\.toml \(\w+ -> \w+\).*--fresh"):
        _run(study.with_overrides(budget__trials=3), run_dir, fake)
    assert len(_load(run_dir).trials) == 2

    recipe.write_text(original)
    assert _run(study.with_overrides(budget__trials=3), run_dir, fake) == 0
    assert len(_load(run_dir).trials) == 3


def test_the_data_reaches_the_executor_before_the_probe(tmp_path, fake, tiny_data, monkeypatch):
    """`--executor local` gives put() data to a worker process when it starts, and replaces a pool
    whose workers lack it: a probe before the put started a pool that the first task threw away
    (every worker spawned, and imported torch, twice)."""
    calls: list[str] = []
    for name in ("put", "probe", "submit_latency", "submit_train"):
        method = getattr(fake, name)

        def noted(*args, _name=name, _method=method, **kwargs):
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(fake, name, noted)
    assert _run(_two_arch_study(100.0, trials=1, data=tiny_data), tmp_path / "run", fake) == 0
    assert calls[:2] == ["put", "probe"] and calls.count("put") == 1
