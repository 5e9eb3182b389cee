"""Reading the trace store: the trace list (filtered, sorted, keyset-paginated), one trace's tree, and traces
grouped by session or user.

The CLI (`studioops traces`), the API (GET /api/traces[/{id}]) and the console pages all call these, so every
face shows the same figures. The list walks one index in its sort order (idx_traces_timestamp, or the
latency/tokens/cost indexes over the per-trace totals that migration 005's triggers keep) and adds up each listed
trace's observations through idx_observations_trace: its cost grows with the page size, not with the store.
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
    text: str | None = None  # words in the trace's input or output (web-search syntax: "a phrase", -word, or)


# Sort key -> (column, SQL type of its cursor value). Each has an index on (column, id) or (column DESC, id DESC).
SORTS = {"start": ("t.timestamp", "timestamptz"), "latency": ("t.obs_latency_ms", "float8"),
         "tokens": ("t.obs_tokens", "bigint"), "cost": ("t.obs_cost", "numeric")}
# The expression of idx_traces_text (migration 005), written the same way so the planner uses the index.
TEXT_VECTOR = ("(jsonb_to_tsvector('simple', coalesce(t.input, '{}'::jsonb), '[\"string\"]') || "
               "jsonb_to_tsvector('simple', coalesce(t.output, '{}'::jsonb), '[\"string\"]'))")


def encode_cursor(value: Any, trace_id: str, sort: str = "start", order: str = "desc") -> str:
    value = value.isoformat() if isinstance(value, datetime) else str(value)
    # Newest first keeps the short form that `studioops traces` has always handed out.
    parts = [value, trace_id] if (sort, order) == ("start", "desc") else [sort, order, value, trace_id]
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str = "start", order: str = "desc") -> tuple[Any, str]:
    """The (sort value, trace id) a page ended at; refused when it came from another sort order."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if len(raw) == 2:
            raw = ["start", "desc", *raw]
        got_sort, got_order, value, trace_id = raw
        if (got_sort, got_order) != (sort, order):
            raise ValueError("another order")
        value = datetime.fromisoformat(value) if sort == "start" else Decimal(str(value))
        return value, str(trace_id)
    except (ValueError, TypeError, ArithmeticError):
        raise BadCursorError(f"'{cursor[:40]}' is not a cursor from this list in this order. Use the next_cursor "
                             "of a previous page with the same sort") from None


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def list_traces(conn, filters: TraceFilter | None = None, limit: int = 20, cursor: str | None = None,
                sort: str = "start", order: str = "desc") -> dict[str, Any]:
    """One page of traces in `sort` order (start, latency, tokens, cost; `order` desc or asc, newest first by
    default): {"traces": [...], "next_cursor": str | None}."""
    from psycopg.rows import dict_row

    if sort not in SORTS or order not in ("asc", "desc"):
        raise BadCursorError(f"cannot sort by '{sort} {order}'. Sort by one of {', '.join(SORTS)}, asc or desc")
    sort_column, kind = SORTS[sort]
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
    if f.text:
        where.append(f"{TEXT_VECTOR} @@ websearch_to_tsquery('simple', %s)")
        params.append(f.text)
    if cursor:
        value, trace_id = decode_cursor(cursor, sort, order)
        where.append(f"({sort_column}, t.id) {'<' if order == 'desc' else '>'} (%s::{kind}, %s)")
        params += [value, trace_id]
    direction = "DESC" if order == "desc" else "ASC"
    sql = f"""
        SELECT t.id, t.name, t.user_id, t.session_id, t.tags, t.timestamp, t.environment,
               {sort_column} AS sort_value, t.obs_tokens,
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
        ORDER BY {sort_column} {direction}, t.id {direction}
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
            "output_tokens": _number(r["output_tokens"]), "total_tokens": r["obs_tokens"],
            "total_cost": _number(r["total_cost"]),
            "level": r["level"], "observation_count": r["observation_count"],
        })
    next_cursor = encode_cursor(rows[-1]["sort_value"], rows[-1]["id"], sort, order) if more and rows else None
    return {"traces": traces, "next_cursor": next_cursor}


def iter_traces(conn, filters: TraceFilter | None = None, sort: str = "start", order: str = "desc",
                max_rows: int = 100_000):
    """Every trace of the filtered list in order (at most max_rows), a page at a time: for exports."""
    cursor, sent = None, 0
    while sent < max_rows:
        page = list_traces(conn, filters, min(MAX_LIMIT, max_rows - sent), cursor, sort, order)
        yield from page["traces"]
        sent += len(page["traces"])
        cursor = page["next_cursor"]
        if cursor is None:
            return


GROUPS = {"session": "session_id", "user": "user_id"}


def group_traces(conn, by: str, since: datetime | None = None, until: datetime | None = None, limit: int = 50,
                 after: str | None = None) -> dict[str, Any]:
    """Traces grouped by session or user, in key order from `after` on (keyset over idx_traces_session/user):
    {"groups": [{key, traces, first_seen, last_seen, tokens, cost}], "next": str | None}."""
    from psycopg.rows import dict_row

    column = GROUPS[by]
    limit = max(1, min(int(limit), MAX_LIMIT))
    where, params = [f"{column} IS NOT NULL"], []
    for clause, value in ((f"{column} > %s", after), ("timestamp >= %s", since), ("timestamp < %s", until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"""
        SELECT {column} AS key, count(*) AS traces, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
               sum(obs_tokens) AS tokens, sum(obs_cost) AS cost, sum(obs_count) AS observations
        FROM traces WHERE {' AND '.join(where)}
        GROUP BY {column} ORDER BY {column} LIMIT %s
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        rows = cur.execute(sql, [*params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    for r in rows:  # sums of bigint come back as numeric
        r["cost"] = _number(r["cost"])
        r["tokens"] = int(r["tokens"] or 0)
        r["observations"] = int(r["observations"] or 0)
    return {"groups": rows, "next": rows[-1]["key"] if more and rows else None}


def count_traces(conn) -> tuple[int, bool]:
    """(traces stored, exact?): counted while the table is small, else the planner's estimate (an exact count
    of a large table scans all of it)."""
    estimate, pages = conn.execute(
        "SELECT reltuples::bigint, relpages FROM pg_class WHERE oid = 'traces'::regclass").fetchone()
    if pages < 1000 or estimate < 0:  # about 8 MB: counting is quicker than the page's budget
        return conn.execute("SELECT count(*) FROM traces").fetchone()[0], True
    return int(estimate), False


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
