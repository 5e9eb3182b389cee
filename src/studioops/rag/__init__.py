"""Retrieval over `rag_documents`: bulk load (`add`), vector search (`search`) and hybrid search (`hybrid_search`).

The ranking lives in SQL (migration 004: `match_rag_documents`, `hybrid_search_rag_documents`), so any client —
psql, LangChain's or LlamaIndex's Supabase-style retrievers, another language — gets the same results; these
functions are the Python face over it. Each takes an open psycopg connection: the caller owns transactions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

from studioops.errors import RetrievalError

DIMENSIONS = 1536  # rag_documents.embedding is vector(1536)
COPY_SQL = ("COPY rag_documents (id, document_id, chunk_id, content, metadata, embedding) "
            "FROM STDIN (FORMAT BINARY)")
COPY_TYPES = ["uuid", "uuid", "uuid", "text", "jsonb", "vector"]


@dataclass(frozen=True)
class Match:
    """One result: the retrieval entry and its score (cosine similarity for `search`, RRF score for hybrid)."""

    id: uuid.UUID
    document_id: uuid.UUID | None
    content: str
    metadata: dict[str, Any]
    score: float


def _prepare(conn: psycopg.Connection) -> None:
    """Register pgvector's types on this connection once (binary vectors in COPY and in query parameters)."""
    if conn.adapters.types.get("vector") is None:
        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            raise RetrievalError(
                "the database has no pgvector extension. Run `studioops db migrate` (or CREATE EXTENSION vector "
                "as a superuser)") from None


def _vector(value: Any, where: str) -> Vector:
    """A pgvector Vector of 1536 floats from a list, a numpy array or a Vector; anything else is refused."""
    try:
        vector = value if isinstance(value, Vector) else Vector(value if hasattr(value, "ndim") else list(value))
    except (TypeError, ValueError) as exc:
        raise RetrievalError(f"{where}: the embedding is not a list of numbers ({exc}). Pass 1536 floats") from None
    if vector.dimensions() != DIMENSIONS:
        raise RetrievalError(f"{where}: the embedding has {vector.dimensions()} dimensions, rag_documents holds "
                             f"{DIMENSIONS}. Use a 1536-dimension model (e.g. text-embedding-3-small)")
    return vector


def add(conn: psycopg.Connection, rows: Iterable[Mapping[str, Any]]) -> list[uuid.UUID]:
    """Bulk-load retrieval entries with one binary COPY; returns their ids, in order.

    Each row is a mapping with `content` and `embedding` (1536 floats: list, numpy array or pgvector.Vector), and
    optionally `metadata` (a JSON object), `document_id`, `chunk_id` and `id`. One COPY is one statement: if any
    row is refused, none is loaded.
    """
    _prepare(conn)
    ids: list[uuid.UUID] = []
    with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        copy.set_types(COPY_TYPES)
        for n, row in enumerate(rows):
            try:
                content = row["content"]
                embedding = row["embedding"]
            except (KeyError, TypeError):
                raise RetrievalError(f"row {n}: each row needs 'content' and 'embedding'. "
                                     "Pass mappings such as {'content': ..., 'embedding': [...]}") from None
            metadata = row.get("metadata") or {}
            if not isinstance(metadata, Mapping):
                raise RetrievalError(f"row {n}: metadata must be a JSON object (a dict). Wrap the value in a dict")
            row_id = row.get("id") or uuid.uuid4()
            ids.append(row_id)
            copy.write_row((row_id, row.get("document_id"), row.get("chunk_id"), content, metadata,
                            _vector(embedding, f"row {n}")))
    return ids


def _filter(filter: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(filter or {}))


def search(conn: psycopg.Connection, embedding: Sequence[float] | Any, k: int = 10,
           filter: Mapping[str, Any] | None = None) -> list[Match]:
    """The k entries most similar to `embedding` (cosine similarity, best first) whose metadata contains
    `filter`: exactly k whenever k rows match the filter."""
    _prepare(conn)
    rows = conn.execute("SELECT id, document_id, content, metadata, similarity "
                        "FROM match_rag_documents(%s, %s, %s::jsonb)",
                        (_vector(embedding, "search"), _check_k(k), _filter(filter))).fetchall()
    return [Match(*row) for row in rows]


def hybrid_search(conn: psycopg.Connection, text: str, embedding: Sequence[float] | Any, k: int = 10,
                  filter: Mapping[str, Any] | None = None, full_text_weight: float = 1.0,
                  semantic_weight: float = 1.0, rrf_k: int = 60) -> list[Match]:
    """Reciprocal rank fusion of full-text search (`websearch_to_tsquery` syntax: words, "phrases", -not, or)
    and vector search, best first; `score` is the fused score."""
    _prepare(conn)
    rows = conn.execute("SELECT id, document_id, content, metadata, score "
                        "FROM hybrid_search_rag_documents(%s, %s, %s, %s::jsonb, %s, %s, %s)",
                        (text, _vector(embedding, "hybrid_search"), _check_k(k), _filter(filter),
                         full_text_weight, semantic_weight, rrf_k)).fetchall()
    return [Match(*row) for row in rows]


def _check_k(k: int) -> int:
    if not isinstance(k, int) or not 1 <= k <= 1000:
        raise RetrievalError(f"k must be a whole number from 1 to 1000, got {k!r}. Ask for fewer results")
    return k
