"""Database introspection for the console: tables and their sizes, indexes, activity, and a read-only table
browser with keyset pagination and CSV export.

Row counts come from the planner's statistics (`reltuples`, else `n_live_tup`) and are labelled estimates: an
exact `count(*)` scans the table. Browsing pages by primary key (by `ctid` when there is none), so page 1,000
costs what page 1 does. Every browse runs in a READ ONLY transaction with a statement timeout.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from studioops.errors import StudioOpsError

CELL_LIMIT = 300  # characters of a value shown in a page (CSV export has them whole)
STATEMENT_TIMEOUT = "5s"
USER_SCHEMAS = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_(catalog|toast|temp)'"


class TableNotFoundError(StudioOpsError):
    """The console was asked for a table that does not exist (or is not a user table)."""


def summary(conn: psycopg.Connection) -> dict:
    """Server version, database size, connections by state and the connection limit."""
    version, size, limit = conn.execute(
        "SELECT current_setting('server_version'), pg_database_size(current_database()), "
        "current_setting('max_connections')::int").fetchone()
    states = dict(conn.execute(
        "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "GROUP BY 1 ORDER BY 1").fetchall())
    return {"version": version, "size": size, "connections": sum(states.values()), "by_state": states,
            "max_connections": limit}


def tables(conn: psycopg.Connection) -> list[dict]:
    """Every user table: estimated rows, total/table/index bytes, last (auto)analyze."""
    rows = conn.execute(f"""
        SELECT n.nspname, c.relname,
               CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE s.n_live_tup END,
               pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid),
               greatest(s.last_analyze, s.last_autoanalyze)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS}
        ORDER BY n.nspname, c.relname""").fetchall()
    return [{"schema": r[0], "name": r[1], "rows_estimate": r[2], "total_bytes": r[3], "table_bytes": r[4],
             "index_bytes": r[5], "analyzed_at": r[6]} for r in rows]


def indexes(conn: psycopg.Connection) -> list[dict]:
    """Every index of a user table: definition, size, scans, validity."""
    rows = conn.execute(f"""
        SELECT n.nspname, t.relname, i.relname, pg_get_indexdef(i.oid), pg_relation_size(i.oid),
               coalesce(s.idx_scan, 0), x.indisvalid, x.indisprimary, x.indisunique
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.oid
        WHERE {USER_SCHEMAS}
        ORDER BY n.nspname, t.relname, i.relname""").fetchall()
    return [{"schema": r[0], "table": r[1], "name": r[2], "definition": r[3], "bytes": r[4], "scans": r[5],
             "valid": r[6], "primary": r[7], "unique": r[8]} for r in rows]


def activity(conn: psycopg.Connection) -> list[dict]:
    """pg_stat_activity for this database (background workers excluded), longest-running first."""
    rows = conn.execute(r"""
        SELECT pid, usename, application_name, client_addr::text, state, wait_event_type, wait_event,
               backend_start, xact_start, query_start, extract(epoch FROM now() - query_start),
               regexp_replace(left(query, 500), '\s+', ' ', 'g'),
               pid = pg_backend_pid()
        FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'
        ORDER BY query_start NULLS LAST""").fetchall()
    keys = ("pid", "user", "application", "client", "state", "wait_event_type", "wait_event", "backend_start",
            "xact_start", "query_start", "seconds", "query", "is_self")
    return [dict(zip(keys, r, strict=True)) for r in rows]


# -- the table browser ----------------------------------------------------------------------------------------
@dataclass
class TablePage:
    schema: str
    table: str
    columns: list[str]
    types: list[str]
    key: list[str]  # the columns pages are ordered by (primary key), or ["ctid"]
    rows: list[list[str | None]]
    next_cursor: str | None
    rows_estimate: int

    def as_dict(self) -> dict:
        return {"schema": self.schema, "table": self.table, "columns": self.columns, "types": self.types,
                "key": self.key, "rows": self.rows, "next": self.next_cursor, "rows_estimate": self.rows_estimate}


@dataclass
class _Table:
    oid: int
    schema: str
    name: str
    columns: list[tuple[str, str]]  # (name, type)
    key: list[tuple[str, str]]
    rows_estimate: int


def _describe(conn: psycopg.Connection, schema: str, table: str) -> _Table:
    found = conn.execute(f"""
        SELECT c.oid, CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE 0 END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND {USER_SCHEMAS}""",
        (schema, table)).fetchone()
    if not found:
        raise TableNotFoundError(f"no table {schema}.{table}. Pick one from the Database page")
    oid, estimate = found
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()
    key = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index x "
        "JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, pos) ON true "
        "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
        "WHERE x.indrelid = %s AND x.indisprimary ORDER BY k.pos", (oid,)).fetchall()
    return _Table(oid, schema, table, list(columns), list(key) or [("ctid", "tid")], estimate)


def _encode(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode(cursor: str, width: int) -> list[str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != width or not all(isinstance(v, str) for v in values):
        raise TableNotFoundError("the page cursor is malformed. Start again from the first page")
    return values


def _read_only(conn: psycopg.Connection) -> None:
    conn.execute("SET TRANSACTION READ ONLY")
    conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")


def _select(t: _Table, cell_limit: int | None) -> sql.Composed:
    def cell(name: str) -> sql.Composable:
        text = sql.SQL("{}::text").format(sql.Identifier(name))
        return sql.SQL("left({}, {})").format(text, sql.Literal(cell_limit + 1)) if cell_limit else text

    keys = [sql.SQL("{}::text").format(sql.Identifier(k)) for k, _ in t.key]
    return sql.SQL(", ").join([*keys, *(cell(name) for name, _ in t.columns)])


def _order_and_after(t: _Table, after: list[str] | None) -> tuple[sql.Composed, list[str]]:
    # Qualified: a bare name would pick the text-cast output column of the same name and sort as text.
    order = sql.SQL(", ").join(sql.Identifier("t", k) for k, _ in t.key)
    if after is None:
        return sql.SQL("ORDER BY {}").format(order), []
    bound = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(typ)) for _, typ in t.key)  # types from the catalog
    return sql.SQL("WHERE ({}) > ({}) ORDER BY {}").format(order, bound, order), after


def browse(conn: psycopg.Connection, schema: str, table: str, cursor: str | None = None,
           limit: int = 50) -> TablePage:
    """One page of a table in primary-key order, after `cursor` (the previous page's `next_cursor`)."""
    limit = max(1, min(limit, 500))
    with conn.transaction():
        _read_only(conn)
        t = _describe(conn, schema, table)
        after = _decode(cursor, len(t.key)) if cursor else None
        tail, params = _order_and_after(t, after)
        query = sql.SQL("SELECT {} FROM {}.{} AS t {} LIMIT {}").format(
            _select(t, CELL_LIMIT), sql.Identifier(schema), sql.Identifier(table), tail, sql.Literal(limit + 1))
        rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    n = len(t.key)
    shown = [[_clip(v) for v in r[n:]] for r in rows]
    next_cursor = _encode(list(rows[-1][:n])) if more and rows else None
    return TablePage(schema, table, [c for c, _ in t.columns], [typ for _, typ in t.columns],
                     [k for k, _ in t.key], shown, next_cursor, t.rows_estimate)


def _clip(value: str | None) -> str | None:
    if value is None or len(value) <= CELL_LIMIT:
        return value
    return value[:CELL_LIMIT] + "…"


def export_csv(conn: psycopg.Connection, schema: str, table: str, batch: int = 2000) -> Iterator[str]:
    """The whole table as CSV (a header, then every row in key order), produced batch by batch."""
    cursor = None
    while True:
        with conn.transaction():
            _read_only(conn)
            t = _describe(conn, schema, table)
            tail, params = _order_and_after(t, _decode(cursor, len(t.key)) if cursor else None)
            query = sql.SQL("SELECT {} FROM {}.{} AS t {} LIMIT {}").format(
                _select(t, None), sql.Identifier(schema), sql.Identifier(table), tail, sql.Literal(batch))
            rows = conn.execute(query, params).fetchall()
        out = io.StringIO()
        writer = csv.writer(out)
        if cursor is None:
            writer.writerow([c for c, _ in t.columns])
        n = len(t.key)
        writer.writerows(r[n:] for r in rows)
        yield out.getvalue()
        if len(rows) < batch:
            return
        cursor = _encode(list(rows[-1][:n]))
