"""The schema as the application sees it: tables, constraints, ON DELETE rules, triggers, vector search."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from studioops.db.seed import embedding_for

APP_TABLES = ["projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents", "chat_sessions",
              "chat_messages"]


@pytest.fixture
def conn(running_stack):
    with running_stack.connect() as c:
        yield c
        c.rollback()  # every test's rows disappear with its transaction


def new_project(conn, name="Test project") -> uuid.UUID:
    row = conn.execute("INSERT INTO projects (name, client_name) VALUES (%s, 'ACME') RETURNING id", (name,))
    return row.fetchone()[0]


def test_every_table_has_a_uuid_key_and_timestamps(conn):
    for table in APP_TABLES:
        cols = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall())
        assert cols["id"] == "uuid", table
        assert cols["created_at"] == cols["updated_at"] == "timestamp with time zone", table


def test_rag_documents_embedding_is_vector_1536(conn):
    kind = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'rag_documents'::regclass AND attname = 'embedding'"
    ).fetchone()[0]
    assert kind == "vector(1536)"


def test_deleting_a_project_cascades_to_plans_and_items_but_keeps_documents_and_chats(conn):
    project = new_project(conn)
    plan = conn.execute(
        "INSERT INTO plans (project_id, name) VALUES (%s, 'Budget') RETURNING id", (project,)
    ).fetchone()[0]
    conn.execute("INSERT INTO plan_items (plan_id, description, unit_price) VALUES (%s, 'Camera', 100)", (plan,))
    doc = conn.execute(
        "INSERT INTO documents (project_id, title) VALUES (%s, 'Contract') RETURNING id", (project,)
    ).fetchone()[0]
    chat = conn.execute(
        "INSERT INTO chat_sessions (project_id) VALUES (%s) RETURNING id", (project,)
    ).fetchone()[0]
    conn.execute("DELETE FROM projects WHERE id = %s", (project,))
    assert conn.execute("SELECT count(*) FROM plans WHERE id = %s", (plan,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM plan_items WHERE plan_id = %s", (plan,)).fetchone()[0] == 0
    assert conn.execute("SELECT project_id FROM documents WHERE id = %s", (doc,)).fetchone() == (None,)
    assert conn.execute("SELECT project_id FROM chat_sessions WHERE id = %s", (chat,)).fetchone() == (None,)


def test_deleting_a_document_cascades_to_chunks_and_rag_entries(conn):
    doc = conn.execute("INSERT INTO documents (title) VALUES ('Brief') RETURNING id").fetchone()[0]
    chunk = conn.execute(
        "INSERT INTO doc_chunks (document_id, chunk_index, text) VALUES (%s, 0, 'hello') RETURNING id", (doc,)
    ).fetchone()[0]
    conn.execute("INSERT INTO rag_documents (document_id, chunk_id, content) VALUES (%s, %s, 'hello')", (doc, chunk))
    conn.execute("DELETE FROM documents WHERE id = %s", (doc,))
    assert conn.execute("SELECT count(*) FROM doc_chunks WHERE document_id = %s", (doc,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM rag_documents WHERE document_id = %s", (doc,)).fetchone()[0] == 0


def test_deleting_a_chat_session_deletes_its_messages(conn):
    chat = conn.execute("INSERT INTO chat_sessions DEFAULT VALUES RETURNING id").fetchone()[0]
    conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'user', 'hi')", (chat,))
    conn.execute("DELETE FROM chat_sessions WHERE id = %s", (chat,))
    assert conn.execute("SELECT count(*) FROM chat_messages WHERE session_id = %s", (chat,)).fetchone()[0] == 0


def test_updated_at_is_kept_by_the_trigger(running_stack):
    with running_stack.connect() as conn:
        project = new_project(conn, "Trigger test")
        conn.commit()
        before = conn.execute("SELECT created_at, updated_at FROM projects WHERE id = %s", (project,)).fetchone()
        time.sleep(0.02)
        conn.execute("UPDATE projects SET status = 'active' WHERE id = %s", (project,))
        conn.commit()
        after = conn.execute("SELECT created_at, updated_at FROM projects WHERE id = %s", (project,)).fetchone()
        conn.execute("DELETE FROM projects WHERE id = %s", (project,))
        conn.commit()
    assert after[0] == before[0]
    assert after[1] > before[1]


def test_money_is_numeric_and_line_totals_are_derived(conn):
    project = new_project(conn)
    plan = conn.execute("INSERT INTO plans (project_id, name) VALUES (%s, 'Q') RETURNING id", (project,)).fetchone()[0]
    total = conn.execute(
        "INSERT INTO plan_items (plan_id, description, quantity, unit_price) VALUES (%s, 'Crew', 3, 0.1) "
        "RETURNING total", (plan,)
    ).fetchone()[0]
    assert str(total) == "0.30"  # numeric, not 0.30000000000000004


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO projects (name, status) VALUES ('x', 'bogus')",
        "INSERT INTO projects (name) VALUES ('   ')",
        "INSERT INTO projects (name, budget) VALUES ('x', -1)",
        "INSERT INTO chat_sessions (id) VALUES (gen_random_uuid()); "
        "INSERT INTO chat_messages (session_id, role, content) SELECT id, 'robot', 'x' FROM chat_sessions LIMIT 1",
    ],
)
def test_check_constraints_refuse_bad_rows(conn, statement):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)


def test_nearest_neighbour_query_uses_the_hnsw_index(conn):
    for i in range(20):
        conn.execute(
            "INSERT INTO rag_documents (content, embedding) VALUES (%s, %s::vector)",
            (f"doc {i}", embedding_for(f"doc {i}")),
        )
    conn.execute("SET LOCAL enable_seqscan = off")  # tiny table: make the planner show its index choice
    query = embedding_for("doc 7")
    # 004 indexes the embedding as halfvec (half the memory): queries order by the same expression to use it.
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN SELECT content FROM rag_documents ORDER BY embedding::halfvec(1536) <=> %s::halfvec(1536) LIMIT 3",
        (query,)
    ))
    assert "idx_rag_documents_embedding_hnsw" in plan
    nearest = conn.execute(
        "SELECT content FROM rag_documents ORDER BY embedding <=> %s::vector LIMIT 1", (query,)
    ).fetchone()[0]
    assert nearest == "doc 7"
    index_kind = conn.execute(
        "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
        "WHERE c.relname = 'idx_rag_documents_embedding_hnsw'"
    ).fetchone()[0]
    assert index_kind == "hnsw"


def test_full_text_search_uses_gin_indexes(conn):
    indexes = {r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING gin%to_tsvector%'"
    )}
    # The design document's two, and the console's free text over trace input and output (migration 005).
    assert indexes == {"idx_doc_chunks_text_fts", "idx_rag_documents_content_fts", "idx_traces_text"}
