"""Settings: defaults from the design document, .env, validation, and redaction of secrets."""

from __future__ import annotations

import os

import pytest

from studioops.config import Settings, get_settings, parse_database_url, parse_duration, redact_url
from studioops.errors import ConfigError


def test_defaults_follow_the_design_document(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "STUDIOOPS_HOME", "MINIO_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.db.user == "studioops" and s.db.password == "studioops123"
    assert s.db.port == 5432 and s.db.dbname == "studioops"
    assert s.minio_endpoint == "localhost:9000"
    assert s.home == tmp_path / ".studioops"
    assert s.studioops_env == "development"


def test_dotenv_in_working_directory_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://app:s3cret@localhost:6000/appdb\nUNRELATED=1\n")
    s = Settings()
    assert (s.db.user, s.db.port, s.db.dbname) == ("app", 6000, "appdb")


def test_secrets_are_redacted_when_shown():
    s = Settings(
        _env_file=None,
        database_url="postgresql://u:hunter2-secret@db:5432/x",
        minio_secret_key="minio-secret-value",
        langfuse_secret_key="sk-lf-secret-value",
    )
    text = repr(s) + str(s) + str(s.shown()) + str(s.db)
    for secret in ("hunter2-secret", "minio-secret-value", "sk-lf-secret-value"):
        assert secret not in text
    assert s.shown()["DATABASE_URL"] == "postgresql://u:***@db:5432/x"


def test_redact_url_inside_any_text():
    line = "failed: postgresql://user:p%40ss@host:1/db and s3://key:secret@bucket"
    assert redact_url(line) == "failed: postgresql://user:***@host:1/db and s3://key:***@bucket"


@pytest.mark.parametrize(
    "url",
    ["mysql://u:topsecret@h/db", "postgresql://u:topsecret@h:notaport/db", "postgresql://:topsecret@h/db"],
)
def test_bad_database_url_is_one_clear_error_without_the_password(url):
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert "topsecret" not in str(info.value)
    assert "postgresql://USER:PASSWORD@HOST:PORT/DBNAME" in str(info.value)


def test_get_settings_reports_a_bad_env_as_config_error(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:topsecret@h:99999/db")
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("2", 2)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(ConfigError, match="30s, 15m, 1h or 7d"):
        parse_duration("soon")


def test_a_malformed_setting_is_named(monkeypatch):
    monkeypatch.setenv("MINIO_SECURE", "sometimes")
    with pytest.raises(ConfigError, match="MINIO_SECURE is invalid"):
        get_settings()


def test_the_suite_ignores_every_exported_setting_and_a_dotenv(tmp_path):
    """Every setting exported to a wrong value and a wrong `.env` in the working directory: CLI tests that read
    settings (and a subprocess stack) still pass, because the session fixture clears them all."""
    import subprocess
    import sys

    from tests.conftest import ROOT, setting_names

    wrong = {name: "wrong-value" for name in setting_names()}
    wrong.update({"DATABASE_URL": "postgresql://wrong:wrong-password@localhost:1/wrong",
                  "MINIO_ENDPOINT": "localhost:1", "STUDIOOPS_HOME": "/nonexistent/wrong",
                  "STUDIOOPS_DEBUG": "1", "PGHOST": "/nonexistent", "PGPASSWORD": "wrong", "PGDATABASE": "wrong"})
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in wrong.items()))
    tests = ["tests/test_deploy.py::test_env_init_writes_strong_secrets_and_keeps_an_existing_file",
             "tests/test_config.py::test_defaults_follow_the_design_document",
             "tests/test_storage.py::test_get_to_stdout"]
    result = subprocess.run(
        # Its own --basetemp: a second pytest would reset /tmp/pytest-of-USER to 0700 under this session's stacks,
        # whose servers (another user) then can no longer reach their data.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "--basetemp", str(tmp_path / "basetemp"),
         "-c", str(ROOT / "pyproject.toml"), *(str(ROOT / t) for t in tests)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, **wrong},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
