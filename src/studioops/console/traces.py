"""The console's trace pages: the list (filters, sorting, keyset pages, CSV/JSON export), one trace (tree,
timeline, pretty-printed input and output), sessions, users and usage. Handlers parse the query string, call
studioops.observability (query, usage) and render; `studioops traces` and GET /api/traces share the list query.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from studioops.errors import StudioOpsError
from studioops.observability import query

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
LEVELS = ("ERROR", "WARNING", "DEFAULT", "DEBUG")
FILTER_KEYS = ("range", "from", "to", "name", "user", "session", "tags", "model", "level", "q")
CSV_COLUMNS = ("id", "timestamp", "name", "user_id", "session_id", "tags", "level", "observation_count",
               "latency_ms", "input_tokens", "output_tokens", "total_tokens", "total_cost", "environment")
EXPORT_MAX = 100_000


class BadFilterError(StudioOpsError):
    """A filter value the trace pages cannot read."""

    exit_code = 2


def _stamp(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilterError(f"'{text[:40]}' in '{field}' is not a date and time. Write it as 2025-06-01 or "
                             "2025-06-01T14:30 (UTC)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def read_filters(params) -> tuple[query.TraceFilter, dict[str, str]]:
    """The list's filters from a query string, and the same values to fill the form and build links with."""
    form = {k: (params.get(k) or "").strip() for k in FILTER_KEYS}
    f = query.TraceFilter()
    if form["range"]:
        if form["range"] not in RANGES:
            raise BadFilterError(f"range must be one of {', '.join(RANGES)}, not '{form['range'][:20]}'")
        f.since = query.since(RANGES[form["range"]])
    if form["from"]:
        f.since = _stamp(form["from"], "from")
    if form["to"]:
        f.until = _stamp(form["to"], "to")
    if form["level"]:
        if form["level"].upper() not in LEVELS:
            raise BadFilterError(f"level must be one of {', '.join(LEVELS)}")
        f.level = form["level"].upper()
    f.name, f.user_id, f.session_id = form["name"] or None, form["user"] or None, form["session"] or None
    f.model, f.text = form["model"] or None, form["q"] or None
    f.tags = [t.strip() for t in form["tags"].split(",") if t.strip()]
    return f, form


def _sort(params) -> tuple[str, str]:
    sort, order = params.get("sort") or "start", params.get("order") or "desc"
    if sort not in query.SORTS or order not in ("asc", "desc"):
        raise BadFilterError(f"sort must be one of {', '.join(query.SORTS)} and order asc or desc")
    return sort, order


def _link(form: dict[str, str], **extra: Any) -> str:
    """A query string from the form's values, `extra` set (or removed when empty)."""
    values = {k: v for k, v in form.items() if v}
    for k, v in extra.items():
        if v:
            values[k] = v
        else:
            values.pop(k, None)
    return "?" + urlencode(values)


def pretty(value: Any) -> str:
    """JSON indented for reading; a plain string as it is."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def obs_tokens(o: dict[str, Any]) -> int | None:
    """An observation's total tokens from its usage details (total, or input + output)."""
    usage = o.get("usage_details") or {}
    if isinstance(usage.get("total"), int | float):
        return int(usage["total"])
    parts = [v for k, v in usage.items() if k in ("input", "output") and isinstance(v, int | float)]
    return int(sum(parts)) if parts else None


def _csv_rows(traces):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for t in traces:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([" ".join(t["tags"]) if c == "tags" else
                         (t[c].isoformat() if isinstance(t[c], datetime) else t[c]) for c in CSV_COLUMNS])
        yield buffer.getvalue()


def _json_rows(traces):
    yield '{"traces": ['
    for i, t in enumerate(traces):
        yield ("," if i else "") + json.dumps(t, default=str)
    yield "]}\n"


def router(console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    settings = console.settings

    def read(fn, *args, **kwargs):
        with console.borrow() as conn:
            return fn(conn, *args, **kwargs)

    # -- the list ---------------------------------------------------------------------------------------------
    @r.get("/traces")
    async def traces_page(request: Request, cursor: str | None = None, limit: int = 50):
        f, form = read_filters(request.query_params)
        sort, order = _sort(request.query_params)
        limit = max(1, min(limit, 200))

        def run(conn):
            return query.list_traces(conn, f, limit, cursor, sort, order), query.count_traces(conn)

        page, (stored, exact) = await console.call(read, run)
        here = {**form, "sort": sort if sort != "start" else "", "order": order if order != "desc" else "",
                "limit": str(limit) if limit != 50 else ""}
        context = dict(title="Traces", page=page, form=form, sort=sort, order=order, cursor=cursor, limit=limit,
                       stored=stored, exact=exact, levels=LEVELS, ranges=RANGES, link=_link, here=here,
                       export_query=_link(here)[1:])
        # htmx swaps only the results; a history restore (back button, cache miss) needs the whole page.
        partial = "hx-request" in request.headers and "hx-history-restore-request" not in request.headers
        name = "_traces.html" if partial else "traces.html"
        return console.render(request, name, **context)

    def export(request: Request, kind: str):
        from studioops.db.connect import connect

        f, _ = read_filters(request.query_params)
        sort, order = _sort(request.query_params)
        conn = connect(settings.db, autocommit=True, application_name="studioops-console")
        rows = query.iter_traces(conn, f, sort, order, EXPORT_MAX)
        chunks = _csv_rows(rows) if kind == "csv" else _json_rows(rows)
        try:
            first = [next(chunks), next(chunks, "")]  # a broken filter fails here, as a 4xx, before streaming
        except BaseException:
            conn.close()
            raise

        def stream():
            try:
                yield from first
                yield from chunks
            finally:
                conn.close()

        media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
        return StreamingResponse(stream(), media_type=media, headers={
            **console.headers(), "Content-Disposition": f'attachment; filename="traces.{kind}"'})

    @r.get("/traces.csv")
    async def traces_csv(request: Request):
        return await console.call(export, request, "csv")

    @r.get("/traces.json")
    async def traces_json(request: Request):
        return await console.call(export, request, "json")

    # -- one trace --------------------------------------------------------------------------------------------
    @r.get("/traces/{trace_id}.json")
    async def trace_json(trace_id: str):
        from fastapi.responses import Response

        from studioops.errors import ObjectNotFoundError

        trace = await console.call(read, query.get_trace, trace_id)
        if trace is None:
            raise ObjectNotFoundError(f"no trace '{trace_id}'. Check the id in the trace list")
        return Response(json.dumps(trace, default=str, indent=2), media_type="application/json", headers={
            **console.headers(), "Content-Disposition": f'attachment; filename="trace-{trace_id}.json"'})

    @r.get("/traces/{trace_id}")
    async def trace_page(request: Request, trace_id: str):
        from studioops.console.charts import timeline
        from studioops.errors import ObjectNotFoundError

        trace = await console.call(read, query.get_trace, trace_id)
        if trace is None:
            raise ObjectNotFoundError(f"no trace '{trace_id}'. It may not be flushed yet: reload in a moment")
        rows = list(query.walk(trace["observations"]))
        tokens = sum(obs_tokens(o) or 0 for _, o in rows)
        return console.render(request, "trace.html", title=trace.get("name") or trace_id, t=trace, rows=rows,
                              tl=timeline(trace, rows), pretty=pretty, tokens=tokens,
                              obs_tokens=obs_tokens)

    # -- sessions and users -----------------------------------------------------------------------------------
    def grouped(by: str, title: str):
        async def page(request: Request, after: str | None = None, range: str = "", limit: int = 50):
            if range and range not in RANGES:
                raise BadFilterError(f"range must be one of {', '.join(RANGES)}")
            since = query.since(RANGES[range]) if range else None
            data = await console.call(read, query.group_traces, by, since, None, max(1, min(limit, 200)), after)
            return console.render(request, "groups.html", title=title, by=by, data=data, after=after, range=range,
                                  ranges=RANGES, filter_key="session" if by == "session" else "user")

        return page

    r.add_api_route("/sessions", grouped("session", "Sessions"), methods=["GET"])
    r.add_api_route("/users", grouped("user", "Users"), methods=["GET"])

    # -- usage ------------------------------------------------------------------------------------------------
    @r.get("/usage")
    async def usage_page(request: Request, start: str = "", end: str = ""):
        from studioops.console.charts import colours, line_chart
        from studioops.observability.usage import usage

        today = datetime.now(UTC).date()
        try:
            last = date.fromisoformat(end) if end else today
            first = date.fromisoformat(start) if start else last - timedelta(days=13)
        except ValueError:
            raise BadFilterError("start and end are days: write them as 2025-06-01") from None
        if (last - first).days > 366:
            raise BadFilterError("the range is longer than a year. Choose at most 366 days")
        data = await console.call(read, usage, first, last)
        cells = {(row["day"], row["model"]): row for row in data["rows"]}
        charts = []
        for key, label in (("calls", "Calls"), ("tokens", "Tokens"), ("cost", "Cost (USD)"),
                           ("error_rate", "Error rate"), ("latency_p50_ms", "Latency p50 (ms, ≈)"),
                           ("latency_p95_ms", "Latency p95 (ms, ≈)")):
            series = {m: [(cells.get((d, m)) or {}).get(key) for d in data["days"]] for m in data["models"]}
            charts.append({"key": key, "label": label, **line_chart(data["days"], series, key)})
        return console.render(request, "usage.html", title="Usage", u=data, charts=charts,
                              colours=colours(data["models"]), start=data["first"].isoformat(),
                              end=data["last"].isoformat())

    return r
