"""The console's pages: server-rendered Jinja2 (autoescaped), htmx for partial refresh, readable without
JavaScript. Route handlers only parse, call the library (console.overview, db.inspect, storage.browse,
console.backups) and render.

`install(app, settings, state)` adds the gate (console.access), the pages, the JSON API under /api/console and
the static assets to the FastAPI app. More pages (traces, sessions, users, usage) join the navigation with
`register_page`; the trace pages (traces, sessions, users, usage) live in console.traces.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from studioops.config import Settings
from studioops.console import auth, traces
from studioops.console.access import ConsoleGate, server_port
from studioops.errors import ObjectNotFoundError, StudioOpsError, one_line

HERE = Path(__file__).parent
HTMX = "htmx-2.0.11.min.js"
NAV: list[tuple[int, str, str]] = []  # (order, path, title)


def register_page(path: str, title: str, order: int) -> None:
    """Add a page to the navigation (order: Overview 10, Database 50, Storage 60, Backups 70)."""
    if all(p != path for _, p, _ in NAV):
        NAV.append((order, path, title))
        NAV.sort()


for _order, _path, _title in ((10, "/", "Overview"), (20, "/traces", "Traces"), (25, "/sessions", "Sessions"),
                              (30, "/users", "Users"), (40, "/usage", "Usage"), (50, "/database", "Database"),
                              (60, "/storage", "Storage"), (70, "/backups", "Backups")):
    register_page(_path, _title, _order)


# -- formatting filters ---------------------------------------------------------------------------------------
def _bytes(n: float | None) -> str:
    from studioops.cli.output import human_bytes

    return "" if n is None else human_bytes(n)


def _when(value: Any) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: Any) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.timestamp()
    age = time.time() - value
    return "just now" if age < 2 else _duration(age) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    if days:
        return f"{days}d {h}h"
    return f"{hours}h {m}m" if hours else f"{m}m {s}s"


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int | float) else ("" if n is None else str(n))


def _ms(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{float(ms):.2g} ms" if float(ms) < 10 else _duration(float(ms) / 1000)


def _usd(cost: Any) -> str:
    if cost is None:
        return ""
    cost = float(cost)
    return "$0" if cost == 0 else (f"${cost:,.2f}" if cost >= 1 else f"${cost:.6f}".rstrip("0"))


def _templates():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(bytes=_bytes, when=_when, ago=_ago, duration=_duration, num=_num, ms=_ms, usd=_usd,
                       urlq=lambda s: quote(str(s), safe=""))
    return env


def _parent(prefix: str) -> str:
    trimmed = prefix.rstrip("/")
    return trimmed.rsplit("/", 1)[0] + "/" if "/" in trimmed else ""


def _safe_next(target: str | None) -> str:
    """Only a local path: a login link must never redirect to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class Console:
    """The pages' shared state: settings, the app's pool, the usage counter, verify jobs, templates."""

    def __init__(self, settings: Settings, state: dict) -> None:
        from studioops.console.backups import VerifyJobs

        self.settings = settings
        self.state = state
        self.env = _templates()
        self.jobs = VerifyJobs(settings)
        self._counter = None

    @property
    def pool(self):
        return self.state.get("pool")

    @property
    def storage(self):
        from studioops.storage import Storage

        return Storage.from_settings(self.settings, timeout=5)

    @property
    def counter(self):
        from studioops.storage.browse import UsageCounter

        if self._counter is None:
            self._counter = UsageCounter(self.storage)
        return self._counter

    def headers(self) -> dict[str, str]:
        from studioops.storage.client import endpoint_url

        s3 = urlsplit(endpoint_url(self.settings))
        return {
            # No inline script or style at all: even markup that escaped escaping could not run.
            "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' "
                                       f"data:; connect-src 'self' {s3.scheme}://{s3.netloc}; frame-ancestors "
                                       "'none'; form-action 'self'; base-uri 'none'",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        sid = request.scope.get("state", {}).get("console_session")
        html = self.env.get_template(name).render(
            nav=[(p, t) for _, p, t in NAV], path=request.url.path, htmx=HTMX, logged_in=sid is not None,
            csrf=auth.csrf_token(self.settings, sid) if sid else "", **context)
        return HTMLResponse(html, status_code=status, headers=self.headers())

    async def call(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    def borrow(self):
        from studioops.db.connect import borrow

        return borrow(self.settings.db, self.pool, timeout=5)


def install(app: FastAPI, settings: Settings, state: dict) -> None:
    """Add the console (gate, pages, JSON API, static files) to `app`."""
    from fastapi.staticfiles import StaticFiles

    console = Console(settings, state)
    app.add_middleware(ConsoleGate, settings=settings)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(_pages(console))
    app.include_router(traces.router(console))
    app.include_router(_api(console))

    def explain(request: Request, status: int, message: str):
        if request.url.path.startswith("/api/") or "hx-request" in request.headers:
            return JSONResponse({"detail": message}, status_code=status)
        return console.render(request, "error.html", status=status, title="Error", message=message)

    @app.exception_handler(StudioOpsError)
    async def _studioops_error(request: Request, exc: StudioOpsError):
        from studioops.db.inspect import TableNotFoundError
        from studioops.errors import DatabaseUnavailableError, StorageUnavailableError

        if isinstance(exc, ObjectNotFoundError | TableNotFoundError):
            status = 404
        elif isinstance(exc, DatabaseUnavailableError | StorageUnavailableError):
            status = 503
        else:
            status = 400
        return explain(request, status, str(exc))

    from psycopg import Error as DatabaseError
    from psycopg_pool import PoolTimeout

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(DatabaseError)
    async def _database_error(request: Request, exc: Exception):
        from studioops.config import redact_url

        return explain(request, 503, "the database did not answer: " + redact_url(one_line(exc, 300))
                       + ". Check it with `studioops status`")


def _login_response(console: Console, request: Request, target: str) -> Response:
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(auth.cookie_name(server_port(request.scope)), auth.new_session(console.settings),
                        max_age=int(console.settings.console_session_seconds), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


def _pages(console: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    settings = console.settings

    # -- access ---------------------------------------------------------------------------------------------
    @router.get("/login")
    async def login_page(request: Request, token: str = "", next: str = "/"):
        if token:
            if auth.redeem_token(settings, token):
                return _login_response(console, request, next)
            return _login_form(console, request, next, "This login link was already used or has expired. "
                               "Run `studioops console` for a new one.", 403)
        return _login_form(console, request, next, None, 200)

    @router.post("/login")
    async def login_password(request: Request):
        form = await request.form()
        cookie = request.cookies.get(auth.cookie_name(server_port(request.scope)) + "_login")
        target = str(form.get("next") or "/")
        if not cookie or cookie != form.get("csrf"):
            return _login_form(console, request, target, "The form expired. Try again.", 403)
        if not auth.check_password(settings, str(form.get("password") or "")):
            await asyncio.sleep(1.0)  # slows guessing
            return _login_form(console, request, target, "Wrong password.", 403)
        return _login_response(console, request, target)

    @router.post("/logout")
    async def logout(request: Request):
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.cookie_name(server_port(request.scope)), path="/")
        return response

    # -- overview -----------------------------------------------------------------------------------------------
    def address(request: Request) -> str:
        server = request.scope.get("server") or ("", 0)
        return f"{server[0]}:{server[1]}"

    @router.get("/")
    async def overview_page(request: Request):
        from studioops.console.overview import overview

        data = await console.call(overview, settings, console.pool, address(request))
        return console.render(request, "overview.html", title="Overview", o=data)

    @router.get("/partials/overview")
    async def overview_partial(request: Request):
        from studioops.console.overview import overview

        data = await console.call(overview, settings, console.pool, address(request))
        return console.render(request, "_overview.html", o=data)

    # -- database -----------------------------------------------------------------------------------------------
    async def database_facts() -> dict:
        from studioops.db import inspect
        from studioops.db.migrate import Migrator

        def migrations(conn) -> dict:
            return Migrator(settings.db, settings.studioops_migrations_dir).status(conn).as_dict()

        def on_own_connection(query):
            with console.borrow() as conn:
                return query(conn)

        # Independent catalog queries, each on its own pooled connection: the page costs the slowest one.
        parts = {"summary": inspect.summary, "tables": inspect.tables, "indexes": inspect.indexes,
                 "activity": inspect.activity, "migrations": migrations}
        results = await asyncio.gather(*(console.call(on_own_connection, q) for q in parts.values()))
        return dict(zip(parts, results, strict=True))

    @router.get("/database")
    async def database_page(request: Request):
        return console.render(request, "database.html", title="Database", d=await database_facts())

    @router.get("/partials/activity")
    async def activity_partial(request: Request):
        from studioops.db import inspect

        def rows():
            with console.borrow() as conn:
                return inspect.activity(conn)

        return console.render(request, "_activity.html", activity=await console.call(rows))

    @router.get("/database/tables/{schema}/{table}.csv")
    async def table_csv(schema: str, table: str):
        from studioops.db import inspect
        from studioops.db.connect import connect

        # Its own connection: a long export must not hold one of the pool's for the pages.
        conn = await console.call(connect, settings.db, autocommit=True, application_name="studioops-console")
        rows = inspect.export_csv(conn, schema, table)
        try:
            first = await console.call(next, rows)  # an unknown table fails here, as a 404, before streaming
        except BaseException:
            conn.close()
            raise

        def stream():
            try:
                yield first
                yield from rows
            finally:
                conn.close()

        return StreamingResponse(stream(), media_type="text/csv; charset=utf-8", headers={
            **console.headers(), "Content-Disposition": f'attachment; filename="{schema}.{table}.csv"'})

    @router.get("/database/tables/{schema}/{table}")
    async def table_page(request: Request, schema: str, table: str, after: str | None = None, limit: int = 50):
        from studioops.db import inspect

        def page():
            with console.borrow() as conn:
                return inspect.browse(conn, schema, table, after, limit)

        return console.render(request, "table.html", title=f"{schema}.{table}", page=await console.call(page),
                              after=after, limit=limit)

    # -- storage ----------------------------------------------------------------------------------------------------
    def buckets() -> list[dict]:
        names = console.storage.list_buckets()
        return [console.counter.get(b).as_dict() for b in names]

    def admin_ui() -> str:
        # The SeaweedFS admin UI (policies, users) on the MinIO console port; 0 turns it off.
        port = settings.minio_console_port
        return f"http://127.0.0.1:{port}/" if port else ""

    @router.get("/storage")
    async def storage_page(request: Request):
        return console.render(request, "storage.html", title="Storage", buckets=await console.call(buckets),
                              admin_ui=admin_ui())

    @router.get("/partials/storage/usage")
    async def storage_usage_partial(request: Request):
        return console.render(request, "_buckets.html", buckets=await console.call(buckets))

    @router.get("/storage/b/{bucket}")
    async def bucket_page(request: Request, bucket: str, prefix: str = "", token: str | None = None):
        from studioops.storage.browse import list_page

        listing = await console.call(list_page, console.storage, bucket, prefix, token, 100)
        crumbs, acc = [], ""
        for part in [p for p in prefix.split("/") if p]:
            acc += part + "/"
            crumbs.append((part, acc))
        return console.render(request, "bucket.html", title=f"{bucket}/{prefix}", listing=listing, crumbs=crumbs,
                              parent=_parent(prefix), token=token, admin_ui=admin_ui())

    @router.get("/storage/download")
    async def download(bucket: str, key: str):
        await console.call(console.storage.head, bucket, key)  # a missing object is a 404 here, not at S3
        name = key.rsplit("/", 1)[-1]
        url = await console.call(console.storage.client.generate_presigned_url, "get_object", Params={
            "Bucket": bucket, "Key": key, "ResponseContentDisposition": f"attachment; filename*=UTF-8''"
                                                                       f"{quote(name, safe='')}"}, ExpiresIn=300)
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    # -- backups --------------------------------------------------------------------------------------------------
    @router.get("/backups")
    async def backups_page(request: Request, job: str | None = None):
        from studioops.console.backups import archives

        listed = await console.call(archives, settings)
        current = console.jobs.get(job) if job else console.jobs.latest()
        return console.render(request, "backups.html", title="Backups", archives=listed.rows,
                              bucket_error=listed.bucket_error, job=current)

    @router.post("/backups/verify")
    async def verify(request: Request):
        form = await request.form()
        archive = str(form.get("archive") or "latest")
        job = console.jobs.start(archive)
        if "hx-request" in request.headers:
            return console.render(request, "_job.html", job=job)
        return RedirectResponse(f"/backups?job={job.id}", status_code=303)

    @router.get("/partials/backups/jobs/{job_id}")
    async def job_partial(request: Request, job_id: str):
        job = console.jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "no such verification"}, status_code=404)
        response = console.render(request, "_job.html", job=job)
        if not job.running:
            response.headers["HX-Refresh"] = "true"  # the archives table shows the new verification time
        return response

    return router


def _login_form(console: Console, request: Request, target: str, error: str | None, status: int) -> Response:
    import secrets

    token = secrets.token_urlsafe(24)
    response = console.render(request, "login.html", status=status, title="Log in", next=_safe_next(target),
                              error=error, login_csrf=token,
                              has_password=bool(console.settings.console_password.get_secret_value()))
    response.set_cookie(auth.cookie_name(server_port(request.scope)) + "_login", token, httponly=True,
                        samesite="strict", max_age=3600, path="/login")
    return response


def _api(console: Console) -> APIRouter:
    """The JSON behind the pages, for scripts (the same login as the pages)."""
    router = APIRouter(prefix="/api/console", tags=["console"])
    settings = console.settings

    @router.get("/overview", summary="Services, health, disk, database, backups, migrations.")
    async def api_overview(request: Request) -> dict:
        from studioops.console.overview import overview

        server = request.scope.get("server") or ("", 0)
        return await console.call(overview, settings, console.pool, f"{server[0]}:{server[1]}")

    @router.get("/storage/buckets", summary="Buckets with object counts and bytes (complete=false: counting).")
    async def api_buckets() -> dict:
        names = await console.call(console.storage.list_buckets)
        return {"buckets": [console.counter.get(b).as_dict() for b in names]}

    @router.post("/storage/upload-url", summary="A presigned PUT URL for one new object (needs the CSRF token).")
    async def upload_url(request: Request) -> dict:
        form = await request.form()
        bucket, key = str(form.get("bucket") or ""), str(form.get("key") or "")
        url = await console.call(console.storage.presign, bucket, key, 900, True)
        return {"url": url, "bucket": bucket, "key": key, "expires_in": 900}

    @router.get("/backups", summary="Archives, local and in the bucket, with their contents.")
    async def api_backups() -> dict:
        from studioops.console.backups import archives

        listed = await console.call(archives, settings)
        return {"archives": listed.rows, "bucket_error": listed.bucket_error}

    @router.get("/backups/jobs/{job_id}", summary="A verification's progress.")
    async def api_job(job_id: str) -> JSONResponse:
        job = console.jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "no such verification"}, status_code=404)
        return JSONResponse(job.as_dict())

    @router.get("/database/tables", summary="User tables with estimated rows and sizes.")
    async def api_tables() -> dict:
        from studioops.db import inspect

        def run():
            with console.borrow() as conn:
                return {"tables": inspect.tables(conn), "indexes": inspect.indexes(conn)}

        return await console.call(run)

    return router

