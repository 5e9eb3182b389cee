"""`studioops traces [filters]` and `studioops traces show ID`: the trace store, read through
studioops.observability.query (the same queries as GET /api/traces)."""

from __future__ import annotations

import json
from typing import Any

import typer

from studioops.cli.output import emit_json, say, settings, table

app = typer.Typer(help="LLM traces in the local trace store: the newest first, or one trace's tree.",
                  invoke_without_command=True, no_args_is_help=False)


def _tokens(n: Any) -> str:
    return "" if n is None else f"{int(n):,}"


def _cost(c: Any) -> str:
    return "" if c is None else f"${c:.6f}"


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:,.0f}"


@app.callback()
def list_traces(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many of the newest traces."),
    user: str = typer.Option(None, "--user", help="Only this user id."),
    session: str = typer.Option(None, "--session", help="Only this session id."),
    name: str = typer.Option(None, "--name", help="Only traces with this name."),
    model: str = typer.Option(None, "--model", help="Only traces with an observation of this model."),
    level: str = typer.Option(None, "--level", help="Only traces with an observation at this level (e.g. ERROR)."),
    tag: list[str] = typer.Option(None, "--tag", help="Only traces carrying this tag (repeat for all of several)."),
    since: str = typer.Option(None, "--since", help="Only traces from the last 30s, 15m, 1h, 7d..."),
    cursor: str = typer.Option(None, "--cursor", help="Continue after a previous page (its next_cursor)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """List traces newest first: id, name, user, session, tags, start, latency, tokens, cost, level."""
    if ctx.invoked_subcommand is not None:
        return
    from studioops.config import parse_duration
    from studioops.db.connect import borrow
    from studioops.errors import StudioOpsError
    from studioops.observability import query
    from studioops.observability.rows import LEVELS

    if level is not None and level.upper() not in LEVELS:
        raise StudioOpsError(f"--level must be one of {', '.join(LEVELS)}, got '{level}'. Pick one of those")
    filters = query.TraceFilter(user_id=user, session_id=session, name=name, model=model, level=level,
                                tags=list(tag or []), since=query.since(parse_duration(since)) if since else None)
    with borrow(settings().db, timeout=5) as conn:
        page = _read(lambda: query.list_traces(conn, filters, limit, cursor))
    if as_json:
        emit_json(page)
        return
    rows = [[t["timestamp"].strftime("%Y-%m-%d %H:%M:%S"), t["id"], t["name"] or "", t["user_id"] or "",
             t["session_id"] or "", ",".join(t["tags"]), _ms(t["latency_ms"]),
             f"{_tokens(t['input_tokens'])}/{_tokens(t['output_tokens'])}", _cost(t["total_cost"]), t["level"],
             t["observation_count"]] for t in page["traces"]]
    table(None, ["started (UTC)", "trace id", "name", "user", "session", "tags", "ms", "tokens in/out", "cost",
                 "level", "obs"], rows)
    if page["next_cursor"]:
        say(f"more: studioops traces --cursor {page['next_cursor']}")


def _read(call):
    """Run a trace store query; a store that is not migrated yet is a clear message, not a traceback."""
    import psycopg

    from studioops.errors import DatabaseUnavailableError

    try:
        return call()
    except psycopg.errors.UndefinedTable:
        raise DatabaseUnavailableError("the trace store is not migrated. Run `studioops db migrate` "
                                       "(or `studioops up`)") from None


@app.command("show")
def show(
    trace_id: str = typer.Argument(..., help="The trace id (from `studioops traces`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """One trace and its observation tree (indented by parent), with usage, cost, times, input and output."""
    from studioops.db.connect import borrow
    from studioops.errors import StudioOpsError
    from studioops.observability import query

    with borrow(settings().db, timeout=5) as conn:
        trace = _read(lambda: query.get_trace(conn, trace_id))
    if trace is None:
        raise StudioOpsError(f"no trace with id '{trace_id}'. List the ids with `studioops traces`")
    if as_json:
        emit_json(trace)
        return
    say(f"trace {trace['id']}  {trace['name'] or ''}")
    say(f"  started {trace['timestamp'].isoformat()}  user {trace['user_id'] or '-'}  session "
        f"{trace['session_id'] or '-'}  tags {','.join(trace['tags']) or '-'}  "
        f"cost {_cost(trace['total_cost']) or '-'}")
    rows = []
    for depth, o in query.walk(trace["observations"]):
        usage = o["usage_details"] or {}
        rows.append(["  " * depth + (o["name"] or o["id"]), o["type"], o["model"] or "",
                     f"{_tokens(usage.get('input'))}/{_tokens(usage.get('output'))}" if usage else "",
                     _cost(o["total_cost"]), _ms(o["latency_ms"]), o["level"], _preview(o["input"]),
                     _preview(o["output"])])
    table(None, ["observation", "type", "model", "tokens in/out", "cost", "ms", "level", "input", "output"], rows)


def _preview(value: Any, width: int = 40) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
