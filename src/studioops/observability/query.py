"""Reading the trace store: the trace list (newest first, filtered, keyset-paginated) and one trace's tree.

The CLI (`studioops traces`), the API (GET /api/traces[/{id}]) and the console pages all call these, so every
face shows the same figures. The list walks idx_traces_timestamp and adds up each listed trace's observations
through idx_observations_trace: its cost grows with the page size, not with the store.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from studioops.errors import StudioOpsError

LEVEL_RANK = "CASE o.level WHEN 'ERROR' THEN 3 WHEN 'WARNING' THEN 2 WHEN 'DEFAULT' THEN 1 ELSE 0 END"
MAX_LIMIT = 1000


class BadCursorError(StudioOpsError):
    """A pagination cursor that this store did not hand out."""

    exit_code = 2


@dataclass
class TraceFilter:
    user_id: str | None = None
    session_id: str | None = None
    name: str | None = None
    model: str | None = None
    level: str | None = None  # traces with at least one observation at this level
    tags: list[str] = field(default_factory=list)  # traces carrying all of them
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(timestamp: datetime, trace_id: str) -> str:
    raw = json.dumps([timestamp.isoformat(), trace_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, trace_id = json.loads(raw)
        return datetime.fromisoformat(stamp), str(trace_id)
    except (ValueError, TypeError):
        raise BadCursorError(f"'{cursor[:40]}' is not a cursor from this list. Use the next_cursor of a "
                             "previous page") from None


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def list_traces(conn, filters: TraceFilter | None = None, limit: int = 20,
                cursor: str | None = None) -> dict[str, Any]:
    """One page of traces, newest first: {"traces": [...], "next_cursor": str | None}."""
    from psycopg.rows import dict_row

    f = filters or TraceFilter()
    limit = max(1, min(int(limit), MAX_LIMIT))
    where, params = ["TRUE"], []
    for column, value in (("t.user_id", f.user_id), ("t.session_id", f.session_id), ("t.name", f.name)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if f.tags:
        where.append("t.tags @> %s")
        params.append(list(f.tags))
    if f.since is not None:
        where.append("t.timestamp >= %s")
        params.append(f.since)
    if f.until is not None:
        where.append("t.timestamp < %s")
        params.append(f.until)
    if f.model is not None:
        where.append("EXISTS (SELECT 1 FROM observations m WHERE m.trace_id = t.id AND m.model = %s)")
        params.append(f.model)
    if f.level is not None:
        where.append("EXISTS (SELECT 1 FROM observations m WHERE m.trace_id = t.id AND m.level = %s)")
        params.append(f.level.upper())
    if cursor:
        stamp, trace_id = decode_cursor(cursor)
        where.append("(t.timestamp, t.id) < (%s, %s)")
        params += [stamp, trace_id]
    sql = f"""
        SELECT t.id, t.name, t.user_id, t.session_id, t.tags, t.timestamp, t.environment,
               a.observation_count, a.input_tokens, a.output_tokens, a.total_cost, a.level, a.latency_ms
        FROM traces t
        CROSS JOIN LATERAL (
            SELECT count(*) AS observation_count, sum(o.input_tokens) AS input_tokens,
                   sum(o.output_tokens) AS output_tokens, sum(o.total_cost) AS total_cost,
                   CASE max({LEVEL_RANK}) WHEN 3 THEN 'ERROR' WHEN 2 THEN 'WARNING' WHEN 0 THEN 'DEBUG'
                        ELSE 'DEFAULT' END AS level,
                   extract(epoch FROM max(coalesce(o.end_time, o.start_time))
                                      - least(min(o.start_time), t.timestamp)) * 1000 AS latency_ms
            FROM observations o WHERE o.trace_id = t.id
        ) a
        WHERE {' AND '.join(where)}
        ORDER BY t.timestamp DESC, t.id DESC
        LIMIT %s
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # A page is a short walk down an index: starting parallel workers costs more than it saves (seen: 80 ms).
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        rows = cur.execute(sql, [*params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    traces = []
    for r in rows:
        traces.append({
            "id": r["id"], "name": r["name"], "user_id": r["user_id"], "session_id": r["session_id"],
            "tags": r["tags"], "timestamp": r["timestamp"], "environment": r["environment"],
            "latency_ms": _number(r["latency_ms"]), "input_tokens": _number(r["input_tokens"]),
            "output_tokens": _number(r["output_tokens"]), "total_cost": _number(r["total_cost"]),
            "level": r["level"], "observation_count": r["observation_count"],
        })
    next_cursor = encode_cursor(rows[-1]["timestamp"], rows[-1]["id"]) if more and rows else None
    return {"traces": traces, "next_cursor": next_cursor}


OBSERVATION_FIELDS = ("id", "parent_observation_id", "type", "name", "model", "model_parameters", "start_time",
                      "end_time", "completion_start_time", "input", "output", "usage_details", "cost_details",
                      "total_cost", "level", "status_message", "metadata", "prompt_name", "prompt_version",
                      "environment", "version")


def get_trace(conn, trace_id: str) -> dict[str, Any] | None:
    """One trace with its observations as a tree (children under `observations`), or None."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        trace = cur.execute(
            "SELECT id, name, user_id, session_id, tags, timestamp, metadata, input, output, environment, release, "
            "version, public FROM traces WHERE id = %s", (trace_id,)).fetchone()
        if trace is None:
            return None
        observations = cur.execute(
            f"SELECT {', '.join(OBSERVATION_FIELDS)} FROM observations WHERE trace_id = %s "
            "ORDER BY start_time, id", (trace_id,)).fetchall()
        scores = cur.execute(
            "SELECT id, observation_id, name, value, string_value, data_type, comment, timestamp FROM scores "
            "WHERE trace_id = %s ORDER BY timestamp, id", (trace_id,)).fetchall()
    nodes = {}
    for o in observations:
        o["total_cost"] = _number(o["total_cost"])
        o["latency_ms"] = ((o["end_time"] - o["start_time"]).total_seconds() * 1000
                           if o["end_time"] is not None else None)
        o["observations"] = []
        nodes[o["id"]] = o
    roots = []
    for o in observations:
        parent = nodes.get(o["parent_observation_id"])
        (parent["observations"] if parent is not None and parent is not o else roots).append(o)
    trace["observations"] = roots
    trace["scores"] = scores
    trace["observation_count"] = len(observations)
    trace["total_cost"] = _number(sum((o["total_cost"] or 0 for o in observations), 0)) if any(
        o["total_cost"] is not None for o in observations) else None
    return trace


def walk(observations: list[dict[str, Any]], depth: int = 0):
    """(depth, observation) for a tree from get_trace, depth-first in time order."""
    for o in observations:
        yield depth, o
        yield from walk(o["observations"], depth + 1)


def since(seconds: float) -> datetime:
    return datetime.fromtimestamp(datetime.now(UTC).timestamp() - seconds, UTC)
