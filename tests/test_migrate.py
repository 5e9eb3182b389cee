"""The migration runner against real PostgreSQL: apply, re-run, concurrency, drift, failure, no-transaction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from studioops.config import PACKAGE_MIGRATIONS_DIR, parse_database_url
from studioops.db.migrate import Migrator, new_migration
from studioops.errors import ChecksumMismatchError, MigrationError, MigrationLockTimeoutError


@pytest.fixture
def migrations(tmp_path) -> Path:
    """A migrations directory of the test's own, starting with the project's real schema."""
    d = tmp_path / "migrations"
    d.mkdir()
    shutil.copy(PACKAGE_MIGRATIONS_DIR / "001_initial_schema.sql", d)
    return d


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def migrations_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT filename, success FROM migrations ORDER BY filename").fetchall()


def test_fresh_apply_then_noop(scratch_db, migrations):
    m = Migrator(parse_database_url(scratch_db), migrations)
    assert m.migrate() == ["001_initial_schema.sql"]
    assert {"projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents", "chat_sessions",
            "chat_messages", "migrations"} <= tables(scratch_db)
    assert m.migrate() == []
    status = m.status()
    assert status.ok and status.head == "001_initial_schema.sql"
    with psycopg.connect(scratch_db) as conn:
        checksum = conn.execute("SELECT checksum FROM migrations").fetchone()[0]
    assert len(checksum) == 64


def test_dry_run_applies_nothing(scratch_db, migrations):
    m = Migrator(parse_database_url(scratch_db), migrations)
    assert m.migrate(dry_run=True) == ["001_initial_schema.sql"]
    assert "projects" not in tables(scratch_db)


def test_pending_file_is_applied_in_order_and_status_exit_code(scratch_db, migrations, running_stack):
    env = {"DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    assert running_stack.cli("db", "migrate", env=env).returncode == 0
    (migrations / "002_add_vendor.sql").write_text("ALTER TABLE plan_items ADD COLUMN vendor text;\n")
    pending = running_stack.cli("db", "status", "--json", env=env)
    assert pending.returncode == 1
    assert json.loads(pending.stdout)["pending"] == ["002_add_vendor.sql"]
    applied = running_stack.cli("db", "migrate", env=env)
    assert applied.returncode == 0 and "applied 002_add_vendor.sql" in applied.stdout
    assert running_stack.cli("db", "status", env=env).returncode == 0


def test_eight_concurrent_runners_apply_each_file_exactly_once(scratch_db, migrations):
    # A slow second file widens the race window.
    (migrations / "002_slow.sql").write_text(
        "SELECT pg_sleep(0.5);\nCREATE TABLE once_only (id int PRIMARY KEY);\nINSERT INTO once_only VALUES (1);\n"
    )
    env = {**os.environ, "DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "studioops", "db", "migrate", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(code == 0 for _, _, code in results), [err for _, err, _ in results]
    applied = [name for out, _, _ in results for name in json.loads(out)["migrations"]]
    assert sorted(applied) == ["001_initial_schema.sql", "002_slow.sql"]
    assert migrations_rows(scratch_db) == [("001_initial_schema.sql", True), ("002_slow.sql", True)]
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM once_only").fetchone()[0] == 1


def test_edited_file_is_refused_by_name_until_repair(scratch_db, migrations, running_stack):
    env = {"DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    assert running_stack.cli("db", "migrate", env=env).returncode == 0
    original = (migrations / "001_initial_schema.sql").read_text()
    (migrations / "001_initial_schema.sql").write_text(original + "\n-- an innocent-looking edit\n")
    (migrations / "002_next.sql").write_text("CREATE TABLE next_one (id int);\n")

    m = Migrator(parse_database_url(scratch_db), migrations)
    with pytest.raises(ChecksumMismatchError, match=r"001_initial_schema\.sql"):
        m.migrate()
    assert "next_one" not in tables(scratch_db)  # nothing runs past a drifted file

    status = running_stack.cli("db", "status", "--json", env=env)
    assert status.returncode == 1 and json.loads(status.stdout)["drifted"] == ["001_initial_schema.sql"]
    refused = running_stack.cli("db", "migrate", env=env)
    assert refused.returncode == 1 and "studioops db repair" in refused.stderr

    repaired = running_stack.cli("db", "repair", env=env)
    assert repaired.returncode == 0 and "accepted the edit of 001_initial_schema.sql" in repaired.stdout
    assert m.migrate() == ["002_next.sql"]


def test_failing_file_is_rolled_back_and_named_with_line(scratch_db, migrations, running_stack):
    (migrations / "002_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "SELECT * FROM no_such_table;\n"
    )
    env = {"DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    result = running_stack.cli("db", "migrate", env=env)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "002_broken.sql" in line and "line 3" in line and 'relation "no_such_table" does not exist' in line
    assert "Traceback" not in result.stderr
    assert "half_done" not in tables(scratch_db)
    # The file before it stays applied; the broken one is not recorded at all.
    assert migrations_rows(scratch_db) == [("001_initial_schema.sql", True)]


def test_no_transaction_file_runs_create_index_concurrently(scratch_db, migrations):
    (migrations / "002_concurrent_index.sql").write_text(
        "-- studioops:no-transaction\n"
        "CREATE INDEX CONCURRENTLY idx_projects_client ON projects (client_name);\n"
        "CREATE INDEX CONCURRENTLY idx_plans_status ON plans (status);\n"
    )
    m = Migrator(parse_database_url(scratch_db), migrations)
    assert m.migrate() == ["001_initial_schema.sql", "002_concurrent_index.sql"]
    with psycopg.connect(scratch_db) as conn:
        valid = conn.execute(
            "SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
            "WHERE indexrelid::regclass::text IN ('idx_projects_client', 'idx_plans_status') ORDER BY 1"
        ).fetchall()
    assert valid == [("idx_plans_status", True), ("idx_projects_client", True)]


def test_failing_no_transaction_file_is_recorded_failed_and_names_invalid_index(scratch_db, migrations):
    m = Migrator(parse_database_url(scratch_db), migrations)
    m.migrate()
    with psycopg.connect(scratch_db) as conn:
        conn.execute("INSERT INTO projects (name, client_name) VALUES ('a', 'Same'), ('b', 'Same')")
        conn.commit()
    (migrations / "002_unique_client.sql").write_text(
        "-- studioops:no-transaction\n"
        "CREATE UNIQUE INDEX CONCURRENTLY idx_projects_client_unique ON projects (client_name);\n"
    )
    with pytest.raises(MigrationError) as info:
        m.migrate()
    message = str(info.value)
    assert "002_unique_client.sql" in message and "line 2" in message
    assert "INVALID index idx_projects_client_unique" in message
    assert ("002_unique_client.sql", False) in migrations_rows(scratch_db)
    assert m.status().failed == ["002_unique_client.sql"]
    with pytest.raises(MigrationError, match="failed earlier"):
        m.migrate()
    # The person fixes the data and drops the invalid index, then repairs and migrates.
    with psycopg.connect(scratch_db) as conn:
        conn.execute("DROP INDEX idx_projects_client_unique")
        conn.execute("UPDATE projects SET client_name = 'Other' WHERE name = 'b'")
        conn.commit()
    assert m.repair().forgotten_failures == ["002_unique_client.sql"]
    assert m.migrate() == ["002_unique_client.sql"]


def test_lock_wait_is_bounded_with_a_clear_message(scratch_db, migrations):
    from studioops.db.migrate import LOCK_KEY

    with psycopg.connect(scratch_db, autocommit=True, application_name="stuck-runner") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        m = Migrator(parse_database_url(scratch_db), migrations, lock_timeout=0.5)
        with pytest.raises(MigrationLockTimeoutError, match="stuck-runner"):
            m.migrate()
    assert m.migrate() == ["001_initial_schema.sql"]


def test_upgrades_the_design_documents_migrations_table(scratch_db, migrations):
    with psycopg.connect(scratch_db) as conn:
        conn.execute(
            "CREATE TABLE migrations (id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL UNIQUE, "
            "executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        conn.commit()
    m = Migrator(parse_database_url(scratch_db), migrations)
    assert m.status().pending == ["001_initial_schema.sql"]
    assert m.migrate() == ["001_initial_schema.sql"]
    assert m.status().ok


def test_db_new_creates_the_next_numbered_file(migrations, running_stack):
    env = {"STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    result = running_stack.cli("db", "new", "Add invoices table", env=env)
    assert result.returncode == 0
    path = Path(result.stdout.strip())
    assert path.name == "002_add_invoices_table.sql" and path.exists()
    assert new_migration(migrations, "more").name == "003_more.sql"


def test_misnamed_file_is_refused(scratch_db, migrations):
    (migrations / "Fix-Things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"Fix-Things\.sql"):
        Migrator(parse_database_url(scratch_db), migrations).status()


@pytest.mark.parametrize("statement", ["COMMIT", "BEGIN", "START TRANSACTION", "END", "ROLLBACK"])
def test_transaction_control_in_a_transactional_file_is_refused_before_anything_runs(
        scratch_db, migrations, running_stack, statement):
    (migrations / "002_fine.sql").write_text("CREATE TABLE fine (id int);\n")
    (migrations / "003_own_commit.sql").write_text(
        "-- made by hand\n"
        "CREATE TABLE a (id int);\n"
        "INSERT INTO a VALUES (1);\n"
        f"{statement};\n"
        "CREATE TABLE c (id int);\n"
        "INSERT INTO nope VALUES (1);\n"
    )
    env = {"DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations)}
    result = running_stack.cli("db", "migrate", env=env)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "003_own_commit.sql line 4" in line and "-- studioops:no-transaction" in line
    assert "Traceback" not in result.stderr and line.count("\n") == 0
    assert tables(scratch_db) == set()  # not even 001 or 002: refused before anything ran


def test_function_bodies_and_savepoints_are_not_transaction_control(scratch_db, migrations):
    (migrations / "002_function.sql").write_text(
        "CREATE FUNCTION two() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 2;\nEND;\n$$;\n"
        "SAVEPOINT s1;\nCREATE TABLE kept (id int);\nROLLBACK TO SAVEPOINT s1;\nCREATE TABLE b (id int);\n"
    )
    m = Migrator(parse_database_url(scratch_db), migrations)
    assert m.migrate() == ["001_initial_schema.sql", "002_function.sql"]
    assert "b" in tables(scratch_db) and "kept" not in tables(scratch_db)


def test_a_migration_waiting_for_a_table_lock_gives_up_after_migration_lock_timeout(
        scratch_db, migrations, running_stack):
    env = {"DATABASE_URL": scratch_db, "STUDIOOPS_MIGRATIONS_DIR": str(migrations),
           "MIGRATION_LOCK_TIMEOUT": "0.5"}
    assert running_stack.cli("db", "migrate", env=env).returncode == 0
    (migrations / "002_add_column.sql").write_text("ALTER TABLE projects ADD COLUMN lock_test numeric;\n")
    with psycopg.connect(scratch_db) as reader:  # a long transaction that has read the table
        reader.execute("SELECT count(*) FROM projects")
        result = running_stack.cli("db", "migrate", env=env, timeout=30)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "002_add_column.sql" in line and "0.5s" in line and "lock" in line and "MIGRATION_LOCK_TIMEOUT" in line
    assert migrations_rows(scratch_db) == [("001_initial_schema.sql", True)]
    again = running_stack.cli("db", "migrate", env=env)  # once the reader is gone
    assert again.returncode == 0, again.stderr


def test_migration_lock_timeout_defaults_to_ten_seconds():
    from studioops.config import Settings

    settings = Settings(_env_file=None)
    assert settings.migration_lock_timeout == 10.0
    assert Migrator.from_settings(settings).table_lock_timeout == 10.0
