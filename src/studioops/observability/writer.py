"""Writing a batch of traces, observations and scores: one transaction, so a request is stored whole or not at all.

Traces are upserted (many spans name the same trace; given values win, tags and metadata add up). Observations
go in with COPY; only when an id is already stored (an update, a re-sent span, or the same call written by
ObservabilityService and exported to the console) do they take the slower merge path through a temporary table.
"""

from __future__ import annotations

import json
import math
from typing import Any

from studioops.observability.prices import PriceTable
from studioops.observability.rows import Batch, ObservationRow, RawJSON, ScoreRow, TraceRow

OBSERVATION_COLUMNS = (
    "id", "trace_id", "parent_observation_id", "type", "name", "start_time", "end_time", "completion_start_time",
    "model", "model_parameters", "input", "output", "usage_details", "cost_details", "input_tokens",
    "output_tokens", "total_tokens", "total_cost", "cost_source", "level", "status_message", "metadata",
    "prompt_name", "prompt_version", "environment", "version",
)
_JSON_COLUMNS = {"model_parameters", "input", "output", "usage_details", "cost_details", "metadata"}
_NOT_NULL_DEFAULTS = {"type": "'span'", "start_time": "now()", "usage_details": "'{}'::jsonb",
                      "cost_details": "'{}'::jsonb", "level": "'DEFAULT'", "metadata": "'{}'::jsonb",
                      "environment": "'default'"}

_TRACE_UPSERT = """
INSERT INTO traces (id, timestamp, name, user_id, session_id, tags, metadata, input, output, environment, release,
                    version, public)
VALUES (%s, coalesce(%s, now()), %s, %s, %s, %s, %s, %s, %s, coalesce(%s, 'default'), %s, %s, coalesce(%s, false))
ON CONFLICT (id) DO UPDATE SET
    timestamp = least(traces.timestamp, EXCLUDED.timestamp),
    name = coalesce(EXCLUDED.name, traces.name),
    user_id = coalesce(EXCLUDED.user_id, traces.user_id),
    session_id = coalesce(EXCLUDED.session_id, traces.session_id),
    tags = CASE WHEN EXCLUDED.tags = '{}' THEN traces.tags
                ELSE ARRAY(SELECT DISTINCT t FROM unnest(traces.tags || EXCLUDED.tags) AS t ORDER BY t) END,
    metadata = traces.metadata || EXCLUDED.metadata,
    input = coalesce(EXCLUDED.input, traces.input),
    output = coalesce(EXCLUDED.output, traces.output),
    environment = CASE WHEN EXCLUDED.environment = 'default' THEN traces.environment ELSE EXCLUDED.environment END,
    release = coalesce(EXCLUDED.release, traces.release),
    version = coalesce(EXCLUDED.version, traces.version),
    public = traces.public OR EXCLUDED.public,
    updated_at = now()
"""

_SCORE_UPSERT = """
INSERT INTO scores (id, trace_id, observation_id, session_id, name, value, string_value, data_type, comment,
                    metadata, environment, timestamp)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, 'default'), coalesce(%s, now()))
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, value = EXCLUDED.value, string_value = EXCLUDED.string_value,
    data_type = EXCLUDED.data_type, comment = EXCLUDED.comment, metadata = EXCLUDED.metadata
"""


_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, allow_nan=False)  # built once: this runs per value


def _json(value: Any) -> str | None:
    """JSON text for a jsonb column. PostgreSQL refuses the NUL character in jsonb and text: it is dropped."""
    if value is None:
        return None
    if type(value) is RawJSON:  # JSON text as it arrived (already checked to parse)
        return value.replace("\\u0000", "") if "\\u0000" in value else value
    try:
        text = _ENCODER.encode(value)
    except ValueError:  # NaN or Infinity, which JSON (and jsonb) cannot hold: stored as null
        text = json.dumps(_finite(value), default=str, ensure_ascii=False)
    except RecursionError:  # nested deeper than the parser goes: kept as text
        text = json.dumps(str(value)[:100_000])
    return text.replace("\\u0000", "") if "\\u0000" in text else text


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _text(value: str | None) -> str | None:
    return value.replace("\x00", "") if value and "\x00" in value else value


def _trace_params(t: TraceRow) -> tuple:
    return (t.id, t.timestamp, _text(t.name), _text(t.user_id), _text(t.session_id),
            [_text(tag) for tag in t.tags], _json(t.metadata), _json(t.input), _json(t.output),
            _text(t.environment), _text(t.release), _text(t.version), t.public)


def _observation_values(o: ObservationRow) -> tuple:
    """The row in OBSERVATION_COLUMNS order (written out: this runs for every span)."""
    t = _text
    return (o.id, o.trace_id, o.parent_observation_id, o.type, t(o.name), o.start_time, o.end_time,
            o.completion_start_time, t(o.model), _json(o.model_parameters) if o.model_parameters else None,
            _json(o.input), _json(o.output), _json(o.usage_details) if o.usage_details else None,
            _json(o.cost_details) if o.cost_details else None, o.input_tokens, o.output_tokens, o.total_tokens,
            o.total_cost, o.cost_source, o.level, t(o.status_message), _json(o.metadata) if o.metadata else None,
            t(o.prompt_name), o.prompt_version, t(o.environment), t(o.version))


def _merged(rows: list, key=lambda r: r.id) -> list:
    """One row per id: later rows fold into a copy of the first (the caller's rows stay as they were: a batch
    may be retried event by event)."""
    out: dict[str, Any] = {}
    copied: set[str] = set()
    for row in rows:
        k = key(row)
        first = out.get(k)
        if first is None:
            out[k] = row
            continue
        if k not in copied:
            out[k] = first = type(first)(**{name: getattr(first, name) for name in first.__slots__})
            copied.add(k)
        first.merge(row)
    return list(out.values())


def _copy_observations(cur, values: list[tuple]) -> None:
    with cur.copy(f"COPY observations ({', '.join(OBSERVATION_COLUMNS)}) FROM STDIN") as copy:
        for row in values:
            copy.write_row(tuple(_NOT_NULL_VALUE.get(c, v) if v is None else v
                                 for c, v in zip(OBSERVATION_COLUMNS, row, strict=True)))


# COPY cannot use column defaults for NULLs it is handed: the values the defaults stand for.
_NOT_NULL_VALUE = {"type": "span", "usage_details": "{}", "cost_details": "{}", "level": "DEFAULT",
                   "metadata": "{}", "environment": "default"}


def _merge_observations(cur, values: list[tuple], prices: PriceTable) -> None:
    """Insert or merge: given values win, metadata adds up, usage and cost are replaced when given; then the
    token and cost columns of the merged rows are derived again from their merged model and usage."""
    # No NOT NULL constraints here (CREATE TABLE AS copies none): NULL means "not given".
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS observations_in ON COMMIT DELETE ROWS AS "
                "SELECT * FROM observations WITH NO DATA")
    with cur.copy(f"COPY observations_in ({', '.join(OBSERVATION_COLUMNS)}) FROM STDIN") as copy:
        for row in values:
            copy.write_row(row)
    insert = ", ".join(f"coalesce(i.{c}, {_NOT_NULL_DEFAULTS[c]})" if c in _NOT_NULL_DEFAULTS else f"i.{c}"
                       for c in OBSERVATION_COLUMNS)
    set_clause = []
    for c in OBSERVATION_COLUMNS[1:]:
        if c == "metadata":
            set_clause.append("metadata = o.metadata || EXCLUDED.metadata")
        elif c in {"usage_details", "cost_details"}:
            set_clause.append(f"{c} = CASE WHEN EXCLUDED.{c} = '{{}}' THEN o.{c} ELSE EXCLUDED.{c} END")
        elif c == "start_time":
            set_clause.append("start_time = least(o.start_time, "
                              "(SELECT g.start_time FROM observations_in g WHERE g.id = EXCLUDED.id))")
        elif c == "end_time":
            set_clause.append("end_time = coalesce(o.end_time, EXCLUDED.end_time)")
        elif c in _NOT_NULL_DEFAULTS:
            # EXCLUDED holds the default when the value was not given: read what was given.
            set_clause.append(f"{c} = coalesce((SELECT g.{c} FROM observations_in g WHERE g.id = EXCLUDED.id), "
                              f"o.{c})")
        else:
            set_clause.append(f"{c} = coalesce(EXCLUDED.{c}, o.{c})")
    cur.execute(
        f"INSERT INTO observations AS o ({', '.join(OBSERVATION_COLUMNS)}) "
        f"SELECT {insert} FROM observations_in i "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(set_clause)}"
    )
    ids = [row[0] for row in values]
    rows = cur.execute(
        "SELECT id, model, usage_details, cost_details, cost_source FROM observations WHERE id = ANY(%s)",
        (ids,)).fetchall()
    derived = []
    for oid, model, usage, cost, source in rows:
        # A computed cost is computed again (the model or usage may have changed); a provided one is kept.
        obs = ObservationRow(id=oid, trace_id="", model=model, usage_details=usage or {},
                             cost_details=(cost or {}) if source == "provided" else {})
        obs.finish(prices)
        derived.append((obs.input_tokens, obs.output_tokens, obs.total_tokens, _json(obs.cost_details),
                        obs.total_cost, obs.cost_source, oid))
    cur.executemany(
        "UPDATE observations SET input_tokens = %s, output_tokens = %s, total_tokens = %s, cost_details = %s, "
        "total_cost = %s, cost_source = %s WHERE id = %s", derived)


def write_batch(conn, batch: Batch, prices: PriceTable, merge: bool = False) -> None:
    """Store `batch` in one transaction on `conn` (an autocommit connection). `merge`: observations may be
    partial updates of stored ones (Langfuse's v2 `*-update` events)."""
    import psycopg

    traces = _merged(batch.traces)
    observations = _merged(batch.observations)
    for obs in observations:
        obs.finish(prices)
    values = [_observation_values(o) for o in observations]
    with conn.transaction(), conn.cursor() as cur:
        if traces:
            cur.executemany(_TRACE_UPSERT, [_trace_params(t) for t in traces])
        if values:
            if merge:
                _merge_observations(cur, values, prices)
            else:
                try:
                    with conn.transaction():
                        _copy_observations(cur, values)
                except psycopg.errors.UniqueViolation:
                    _merge_observations(cur, values, prices)
        if batch.scores:
            cur.executemany(_SCORE_UPSERT, [_score_params(s) for s in _merged(batch.scores)])


def _score_params(s: ScoreRow) -> tuple:
    return (s.id, s.trace_id, s.observation_id, _text(s.session_id), _text(s.name), s.value, _text(s.string_value),
            s.data_type, _text(s.comment), _json(s.metadata), _text(s.environment), s.timestamp)
