"""`studioops db seed`: realistic sample data, idempotent, and --reset behind a confirmation."""

from __future__ import annotations

import json

import pytest

from studioops.db.seed import APP_TABLES


@pytest.fixture
def seeded_db(scratch_db, running_stack):
    env = {"DATABASE_URL": scratch_db}
    assert running_stack.cli("db", "migrate", env=env).returncode == 0
    return env


def counts(running_stack, env) -> dict[str, int]:
    url = env["DATABASE_URL"]
    import psycopg

    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in APP_TABLES}


def test_seed_loads_a_studio_and_twice_adds_nothing(running_stack, seeded_db):
    first = running_stack.cli("db", "seed", "--json", env=seeded_db)
    assert first.returncode == 0, first.stderr
    inserted = json.loads(first.stdout)["inserted"]
    assert all(inserted[t] > 0 for t in APP_TABLES)
    after_first = counts(running_stack, seeded_db)
    second = running_stack.cli("db", "seed", "--json", env=seeded_db)
    assert json.loads(second.stdout)["total"] == 0
    assert counts(running_stack, seeded_db) == after_first

    import psycopg

    with psycopg.connect(seeded_db["DATABASE_URL"]) as conn:
        clients = conn.execute("SELECT count(DISTINCT client_name) FROM projects").fetchone()[0]
        priced = conn.execute("SELECT count(*) FROM plan_items WHERE unit_price > 0").fetchone()[0]
        budget = conn.execute(
            "SELECT sum(i.total) FROM plan_items i JOIN plans p ON p.id = i.plan_id "
            "JOIN projects pr ON pr.id = p.project_id WHERE pr.name = 'Summer Campaign 2026'"
        ).fetchone()[0]
        answer = conn.execute(
            "SELECT content FROM chat_messages WHERE role = 'assistant' ORDER BY created_at LIMIT 1"
        ).fetchone()[0]
    assert clients >= 3 and priced == after_first["plan_items"]
    assert f"{budget:,.2f}" in answer  # the chat's answer matches the seeded plan


def test_reset_needs_confirmation(running_stack, seeded_db):
    running_stack.cli("db", "seed", env=seeded_db)
    refused = running_stack.cli("db", "seed", "--reset", env=seeded_db)
    assert refused.returncode == 1 and "--yes" in refused.stderr


def test_reset_with_yes_empties_then_reseeds(running_stack, seeded_db):
    import psycopg

    running_stack.cli("db", "seed", env=seeded_db)
    with psycopg.connect(seeded_db["DATABASE_URL"]) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('Not sample data')")
        conn.commit()
    before = counts(running_stack, seeded_db)
    result = running_stack.cli("db", "seed", "--reset", "--yes", env=seeded_db)
    assert result.returncode == 0
    after = counts(running_stack, seeded_db)
    assert after["projects"] == before["projects"] - 1
    assert {t: after[t] for t in APP_TABLES if t != "projects"} == {t: before[t] for t in APP_TABLES if t != "projects"}
