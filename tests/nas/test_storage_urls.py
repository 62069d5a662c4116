"""`--storage` URLs without a live server: passwords never reach run.json, a bad database fails before
any data is loaded with a message that says the fix, and a run whose stored URL holds no secret is
reopened by `python -m reports --run DIR` alone. (A real PostgreSQL run: test_storage_postgres.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nas.driver import SearchDriver
from nas.storage import has_password, is_redacted, redact, url_for_run_json
from nas.study import load_study
from nas.testing import FAKE_DEVICE, FakeExecutor, fake_training_output
from search_space.errors import UserError

SECRET = "s3cr%40t-pw"  # percent-encoded '@' inside, as a real password would be written


@pytest.fixture()
def fake() -> FakeExecutor:
    return FakeExecutor(train=lambda payload: fake_training_output(payload, payload["arch"]["channels"] / 10),
                        latency_ms=lambda arch: [float(arch["channels"])], device_name=FAKE_DEVICE)


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://alice:" + SECRET + "@db.example:5432/optuna", "postgresql://alice:***@db.example:5432/optuna"),
    ("--storage=postgresql+psycopg://alice:" + SECRET + "@db/optuna", "--storage=postgresql+psycopg://alice:***@db/optuna"),
    ("mysql://:" + SECRET + "@db/optuna", "mysql://:***@db/optuna"),  # no user name, still a password
    ("postgresql://alice@db/optuna?sslmode=require&password=" + SECRET, "postgresql://alice@db/optuna?sslmode=require&password=***"),
    ("postgresql://alice@db:5432/optuna", "postgresql://alice@db:5432/optuna"),  # nothing to hide
    ("postgresql://db:5432/optuna", "postgresql://db:5432/optuna"),
    ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ("postgresql://alice:***@db/optuna", "postgresql://alice:***@db/optuna"),  # idempotent
])
def test_redact_hides_every_password_form(text, expected):
    assert redact(text) == expected
    assert SECRET not in redact(text)


def test_secret_predicates():
    assert has_password("postgresql://a:pw@h/db") and not is_redacted("postgresql://a:pw@h/db")
    assert is_redacted("postgresql://a:***@h/db") and not has_password("postgresql://a:***@h/db")
    assert not has_password("postgresql://a@h/db") and not is_redacted("postgresql://a@h/db")
    assert not has_password("sqlite:////tmp/x.db") and not is_redacted("sqlite:////tmp/x.db")


def test_relative_sqlite_path_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert url_for_run_json("sqlite:///sub/o.db") == f"sqlite:///{tmp_path / 'sub' / 'o.db'}"
    assert url_for_run_json("sqlite:////abs/o.db") == "sqlite:////abs/o.db"


def test_run_json_argv_is_redacted_in_both_flag_forms(tmp_path):
    """Defect 1: `history[].argv` stored the password verbatim, once per invocation."""
    spec = load_study("smoke")
    url = f"postgresql://alice:{SECRET}@db.example/optuna"
    argv = ["--study", "smoke", "--storage", url, f"--storage={url}", "--out", str(tmp_path / "run")]
    driver = SearchDriver(spec, run_dir=tmp_path / "run", storage=url, progress=False, argv=argv)
    driver.run_dir.mkdir()
    protocol = spec.latency.protocol("cpu")
    doc = driver._write_run_json(None, device_kind="cpu", device_name=FAKE_DEVICE, protocol=protocol)
    # resumed by an older version's entry (verbatim password) and then by this one: all scrubbed
    doc["history"].append({"started": "x", "argv": ["--storage", url]})
    driver._write_run_json(doc, device_kind="cpu", device_name=FAKE_DEVICE, protocol=protocol)

    text = driver.run_json.read_text(encoding="utf-8")
    assert SECRET not in text and "s3cr" not in text
    stored = json.loads(text)
    assert stored["storage"] == "postgresql://alice:***@db.example/optuna"
    assert stored["history"][0]["argv"] == ["--study", "smoke", "--storage", "postgresql://alice:***@db.example/optuna",
                                            "--storage=postgresql://alice:***@db.example/optuna", "--out", str(tmp_path / "run")]
    assert len(stored["history"]) == 3


def test_resume_with_a_password_free_url_stores_it(tmp_path):
    """A run started with the password in the URL and resumed with PGPASSWORD: run.json gets the URL
    that opens the database again, so reports need no --storage."""
    spec = load_study("smoke")
    protocol = spec.latency.protocol("cpu")
    first = SearchDriver(spec, run_dir=tmp_path, storage=f"postgresql://alice:{SECRET}@db/optuna", progress=False)
    doc = first._write_run_json(None, device_kind="cpu", device_name=FAKE_DEVICE, protocol=protocol)
    second = SearchDriver(spec, run_dir=tmp_path, storage="postgresql://alice@db/optuna", progress=False)
    assert second._write_run_json(doc, device_kind="cpu", device_name=FAKE_DEVICE, protocol=protocol)["storage"] == \
        "postgresql://alice@db/optuna"
    other = SearchDriver(spec, run_dir=tmp_path, storage="postgresql://bob@elsewhere/optuna", progress=False)
    assert other._write_run_json(doc, device_kind="cpu", device_name=FAKE_DEVICE, protocol=protocol)["storage"] == \
        "postgresql://alice:***@db/optuna"  # another database: the stored URL is not replaced


def _recording(fake: FakeExecutor, made: list[str]):
    """`fake.factory`, noting each executor the driver makes (none may be made before the storage is open)."""
    def factory(*, address=None):
        made.append("executor")
        return fake.factory(address=address)

    return factory


def _no_data_loading(monkeypatch) -> None:
    """Make loading the data a failure: the storage must be checked before it (defect 5)."""
    from trainers.proxy import ProxyData

    def load(*args, **kwargs):
        raise AssertionError("the data was loaded before the storage was opened")

    monkeypatch.setattr(ProxyData, "load", load)


def test_missing_postgres_driver_names_the_extra_before_any_work(tmp_path, fake, monkeypatch):
    """Defect 5: SQLAlchemy 2.1 needs psycopg 3 for postgresql://; the error must say how to get it,
    and come before the data is loaded or a worker starts."""
    _no_data_loading(monkeypatch)
    made: list[str] = []
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails as if not installed
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    driver = SearchDriver(load_study("smoke"), run_dir=tmp_path / "run", device="cpu", progress=False,
                          storage=f"postgresql://alice:{SECRET}@127.0.0.1:1/optuna", executor_factory=_recording(fake, made),
                          argv=["--storage", f"postgresql://alice:{SECRET}@127.0.0.1:1/optuna"])
    with pytest.raises(UserError) as info:
        driver.run()
    message = str(info.value)
    assert "pip install 'rtsr-nas[postgres]'" in message and "psycopg" in message
    assert SECRET not in message and "\n" not in message
    assert made == []  # no worker was started
    assert not (tmp_path / "run" / "run.json").exists()


def test_unreachable_database_fails_first_without_writing_the_password(tmp_path, fake, monkeypatch):
    """Defect 1's second half: the password was written to run.json even when the connection then failed."""
    pytest.importorskip("psycopg")  # in the test extra
    _no_data_loading(monkeypatch)
    made: list[str] = []
    url = f"postgresql://alice:{SECRET}@127.0.0.1:1/optuna"  # nothing listens on port 1
    driver = SearchDriver(load_study("smoke"), run_dir=tmp_path / "run", device="cpu", progress=False, storage=url,
                          executor_factory=_recording(fake, made), argv=["--storage", url])
    with pytest.raises(UserError, match=r"cannot connect") as info:
        driver.run()
    assert SECRET not in str(info.value) and "postgresql://alice:***@127.0.0.1:1/optuna" in str(info.value)
    assert made == []
    for path in (tmp_path / "run").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_reports_reopen_a_sqlite_run_without_storage_flag(tmp_path, fake, monkeypatch, capsys, tiny_data):
    """Defect 4: `python -m reports --run DIR` refused a stored URL that holds no secret. Started with
    a relative SQLite path, then read from another working directory."""
    from rtsr.report import main as report_main
    from rtsr.search import run_and_report

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    spec = load_study("smoke").with_overrides(budget__trials=2, budget__workers=1, **tiny_data)
    driver = SearchDriver(spec, run_dir=tmp_path / "run", device="cpu", progress=False, storage="sqlite:///optuna.db",
                          executor_factory=fake.factory)
    assert run_and_report(driver) == 0
    out = capsys.readouterr().out
    assert f"dashboard: {tmp_path / 'run' / 'dashboard.html'}" in out  # built at the end of the run
    assert json.loads((tmp_path / "run" / "run.json").read_text())["storage"] == f"sqlite:///{work / 'optuna.db'}"

    (tmp_path / "run" / "dashboard.html").unlink()
    monkeypatch.chdir(tmp_path)  # elsewhere: the relative path must not create a new, empty database
    assert report_main(["--run", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "dashboard.html").is_file()
    assert not (tmp_path / "optuna.db").exists()
    assert report_main(["--run", str(tmp_path / "run"), "--format", "md"]) == 0
    assert "Pareto" in capsys.readouterr().out


def test_reports_ask_for_storage_when_the_stored_url_was_redacted(tmp_path, fake, capsys, tiny_data):
    spec = load_study("smoke").with_overrides(budget__trials=1, budget__workers=1, **tiny_data)
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    driver = SearchDriver(spec, run_dir=tmp_path / "run", device="cpu", progress=False, storage=db, executor_factory=fake.factory)
    assert driver.run() == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["storage"] = "postgresql://alice:***@db.example/optuna"
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))

    from rtsr.report import main as report_main

    assert report_main(["--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --storage" in err and "postgresql://alice:***@db.example/optuna" in err
    # given again, the URL is used as it is (here: where the trials really are)
    assert report_main(["--run", str(tmp_path / "run"), "--storage", db]) == 0


def test_storage_help_names_the_password_sources():
    from rtsr.search import build_parser

    help_text = " ".join(build_parser().format_help().split())
    assert "PGPASSWORD" in help_text and "rtsr-nas[postgres]" in help_text


def test_postgres_extra_is_declared():
    """The install hint in the driver's message must name an extra that exists (and the tests use it)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("psycopg[binary]") for req in extras["postgres"])
    assert any(req.startswith("psycopg") for req in extras["test"])


def test_ablation_tables_are_built_at_the_end_of_a_storage_run(tmp_path, fake, capsys, tiny_data):
    """Defect 4 for ablations: their tables and figures read the run again, without the URL."""
    from rtsr.search import run_and_report

    spec = load_study("ablations/bias_removal").with_overrides(**tiny_data)
    driver = SearchDriver(spec, run_dir=tmp_path / "run", device="cpu", progress=False,
                          storage=f"sqlite:///{tmp_path / 'optuna.db'}", executor_factory=fake.factory)
    assert run_and_report(driver) == 0
    out = capsys.readouterr().out
    assert "not built" not in out and (tmp_path / "run" / "ablation.md").is_file()
    html = (tmp_path / "run" / "dashboard.html").read_text(encoding="utf-8")
    assert "ablation figures failed" not in html and "Ablation: " in html


def test_a_run_resumes_from_the_stored_url_when_it_holds_no_secret(tmp_path, fake, tiny_data):
    spec = load_study("smoke").with_overrides(budget__trials=1, budget__workers=1, **tiny_data)
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    run_dir = tmp_path / "run"
    assert SearchDriver(spec, run_dir=run_dir, device="cpu", progress=False, storage=db, executor_factory=fake.factory).run() == 0

    more = spec.with_overrides(budget__trials=2)
    driver = SearchDriver(more, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory)  # no storage given
    assert driver.run() == 0 and driver.storage_url == db
    assert not (run_dir / "journal.log").exists()  # the trials went to the database, not to a new journal
    import optuna

    name = json.loads((run_dir / "run.json").read_text())["optuna_study_name"]
    assert len(optuna.load_study(study_name=name, storage=db).trials) == 2

    info = json.loads((run_dir / "run.json").read_text())
    info["storage"] = "postgresql://alice:***@db.example/optuna"  # a password was given on the command line
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"pass --storage with that URL again.*PGPASSWORD"):
        SearchDriver(more, run_dir=run_dir, device="cpu", progress=False, executor_factory=fake.factory).run()
