"""Figures of the local trace store for health and metrics (the trace list and tree are in query.py)."""

from __future__ import annotations

from typing import Any

MAX_MODELS = 20  # per-model metrics: the most used models, the rest summed under "other" (bounded labels)


def trace_stats(conn) -> dict[str, Any]:
    """Trace and observation counts and the error rate (share of traces with an ERROR observation) of the
    trace store (counts None when it is not migrated yet)."""
    exists = conn.execute("SELECT to_regclass('traces') IS NOT NULL AND to_regclass('observations') IS NOT NULL"
                          ).fetchone()[0]
    if not exists:
        return {"traces_count": None, "error_rate": None, "status": "unavailable",
                "reason": "trace store missing: run `studioops db migrate`"}
    total = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
    errors = conn.execute("SELECT count(DISTINCT trace_id) FROM observations WHERE level = 'ERROR'").fetchone()[0]
    observations, unpriced = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE model IS NOT NULL AND total_cost IS NULL "
        "AND usage_details <> '{}'::jsonb) FROM observations").fetchone()
    return {"traces_count": total, "observations_count": observations,
            "error_rate": round(errors / total, 6) if total else None, "errors": errors,
            "unpriced_observations": unpriced, "status": "ok", "source": "local"}


def model_usage(conn, limit: int = MAX_MODELS) -> list[dict[str, Any]]:
    """Observations, tokens and cost per model: the `limit` most used models, then one "other" row."""
    rows = conn.execute(
        "SELECT model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "sum(total_cost) FROM observations WHERE model IS NOT NULL GROUP BY model ORDER BY count(*) DESC, model"
    ).fetchall()
    out = [{"model": m, "observations": n, "input_tokens": int(i), "output_tokens": int(o),
            "cost": float(c) if c is not None else None} for m, n, i, o, c in rows[:limit]]
    rest = rows[limit:]
    if rest:
        costs = [r[4] for r in rest if r[4] is not None]
        out.append({"model": "other", "observations": sum(r[1] for r in rest),
                    "input_tokens": int(sum(r[2] for r in rest)), "output_tokens": int(sum(r[3] for r in rest)),
                    "cost": float(sum(costs)) if costs else None})
    return out


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
