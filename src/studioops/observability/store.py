"""Reading the local trace store: recent traces for `studioops traces`, counts for health and metrics."""

from __future__ import annotations

from typing import Any

from studioops.config import DatabaseURL


def recent_traces(db: DatabaseURL, limit: int = 20, pool=None) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    from studioops.db.connect import borrow

    query = (
        "SELECT trace_id, langfuse_trace_id, name, model, status, error, input_tokens, output_tokens, "
        "usage_source, latency_ms, started_at, left(input, 200) AS input, left(output, 200) AS output "
        "FROM llm_traces ORDER BY started_at DESC, created_at DESC LIMIT %s"
    )
    with borrow(db, pool, timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (limit,)).fetchall()


def trace_stats(conn) -> dict[str, Any]:
    """Trace count and error rate from llm_traces (None when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('llm_traces') IS NOT NULL").fetchone()[0]
    if not exists:
        return {"traces_count": None, "error_rate": None, "status": "unavailable",
                "reason": "llm_traces table missing: run `studioops db migrate`"}
    total, errors = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM llm_traces").fetchone()
    return {"traces_count": total, "error_rate": round(errors / total, 6) if total else None,
            "errors": errors, "status": "ok", "source": "local"}


def langfuse_trace_count(host: str, public_key: str, secret_key: str, timeout: float = 2.0) -> int | None:
    """Langfuse's own count of traces (its public API), or None when it does not answer."""
    import httpx

    try:
        response = httpx.get(host.rstrip("/") + "/api/public/traces", params={"limit": 1},
                             auth=(public_key, secret_key), timeout=timeout)
        response.raise_for_status()
        return int(response.json()["meta"]["totalItems"])
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return None
