"""Retrieval (migration 004 and `studioops.rag`) on a real PostgreSQL + pgvector with 5,000 synthetic rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from studioops import rag
from studioops.config import PACKAGE_MIGRATIONS_DIR, Settings
from studioops.db.migrate import Migrator
from studioops.errors import RetrievalError
from tests.support.vectors import Corpus, exact_neighbours

N = 5000
INDEX = "idx_rag_documents_embedding_hnsw"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(N, clusters=20)


@pytest.fixture(scope="module")
def db(running_stack, corpus) -> Iterator[str]:
    """A migrated database of its own holding the corpus, loaded through `rag.add` (index in place)."""
    name = f"rag_{uuid.uuid4().hex[:8]}"
    with running_stack.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = running_stack.settings.db.with_database(name)
    Migrator(Settings(_env_file=None, database_url=url).db, PACKAGE_MIGRATIONS_DIR).migrate()
    with psycopg.connect(url) as conn:
        ids = rag.add(conn, corpus.rows())
        conn.commit()
        conn.execute("ANALYZE rag_documents")
    assert len(ids) == N
    yield url
    with running_stack.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows_of(matches) -> list[int]:
    return [m.metadata["row"] for m in matches]


def test_vector_search_reaches_the_recall_target(db, corpus):
    queries, _ = corpus.queries(50)
    truth = exact_neighbours(corpus, queries, 10)
    with psycopg.connect(db, autocommit=True) as conn:
        found = [rows_of(rag.search(conn, q, k=10)) for q in queries]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall
    with psycopg.connect(db, autocommit=True) as conn:
        scores = [m.score for m in rag.search(conn, queries[0], k=10)]
    assert scores == sorted(scores, reverse=True)  # best first, after the relaxed-order scan


def test_the_function_plan_uses_the_hnsw_index(db, corpus):
    queries, _ = corpus.queries(1)
    with psycopg.connect(db, autocommit=True) as conn:
        rag._prepare(conn)
        plan = "\n".join(r[0] for r in conn.execute(
            "SELECT * FROM explain_match_rag_documents(%s, 10)", (rag._vector(queries[0], "q"),)))
    assert f"Index Scan using {INDEX}" in plan, plan


def test_a_one_percent_filter_still_gives_k_rows_through_the_index(db, corpus):
    """1% of the rows match {"b100": 7}. Forced onto the HNSW index (no bitmap or sequential scan to fall back
    on), a plain scan finds only the few matches among its ef_search candidates; the iterative scan keeps going."""
    queries, texts = corpus.queries(5, seed=3)
    flt = {"b100": 7}
    mask = np.broadcast_to(corpus.bucket100 == 7, (len(queries), N))
    truth = exact_neighbours(corpus, queries, 10, mask=mask)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        rag._prepare(conn)
        plan = "\n".join(r[0] for r in conn.execute(
            "SELECT * FROM explain_match_rag_documents(%s, 10, %s)", (rag._vector(queries[0], "q"), '{"b100": 7}')))
        assert f"Index Scan using {INDEX}" in plan, plan
        recalls = []
        for q, text, t in zip(queries, texts, truth, strict=True):
            found = rag.search(conn, q, k=10, filter=flt)
            assert len(found) == 10 and all(m.metadata["b100"] == 7 for m in found)
            recalls.append(len(set(rows_of(found)) & set(t)) / 10)
            hybrid = rag.hybrid_search(conn, text, q, k=10, filter=flt)
            assert len(hybrid) == 10 and all(m.metadata["b100"] == 7 for m in hybrid)
    assert np.mean(recalls) >= 0.9, recalls


def test_hybrid_search_ranks_first_the_document_holding_a_rare_keyword(db, corpus):
    queries, _ = corpus.queries(1, seed=5)
    with psycopg.connect(db) as conn:
        tenth = rag.search(conn, queries[0], k=10)[-1]
        near = conn.execute("SELECT embedding FROM rag_documents WHERE id = %s", (tenth.id,)).fetchone()[0]
        rng = np.random.default_rng(1)
        embedding = near.to_numpy() + rng.standard_normal(1536).astype(np.float32) * 0.002
        [rare] = rag.add(conn, [{"content": "call sheet for the zyzzogeton night shoot", "embedding": embedding,
                                 "metadata": {"row": -1}}])
        assert rows_of(rag.search(conn, queries[0], k=1)) != [-1]  # vector search alone does not rank it first
        results = rag.hybrid_search(conn, "zyzzogeton shoot", queries[0], k=10)
        conn.rollback()
    assert results[0].id == rare
    assert len(results) == 10
    assert results[0].score > results[1].score


def test_add_is_all_or_nothing_and_checks_its_rows(db):
    good = {"content": "fine", "embedding": [0.1] * 1536}
    with psycopg.connect(db, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM rag_documents").fetchone()[0]
        with pytest.raises(RetrievalError, match="row 1: the embedding has 3 dimensions"):
            rag.add(conn, [good, {"content": "short", "embedding": [1, 2, 3]}])
        with pytest.raises(RetrievalError, match="row 0: each row needs 'content' and 'embedding'"):
            rag.add(conn, [{"embedding": [0.1] * 1536}])
        with pytest.raises(RetrievalError, match="k must be"):
            rag.search(conn, [0.1] * 1536, k=0)
        assert conn.execute("SELECT count(*) FROM rag_documents").fetchone()[0] == before
