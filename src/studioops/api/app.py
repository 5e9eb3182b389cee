"""The FastAPI application: /health, /livez, /readyz, /metrics, /metrics.json.

One psycopg connection pool for the app, opened at startup (without waiting for the database) and closed at
shutdown; connections are checked on checkout, so the API recovers by itself when the database comes back.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from studioops import __version__
from studioops.api.http_metrics import HttpMetrics
from studioops.config import Settings, get_settings
from studioops.errors import one_line
from studioops.health import UNHEALTHY, check_infrastructure_health
from studioops.metrics import InfrastructureCollector


class TimedCache:
    """The last result of an expensive call, reused for `seconds`; one caller refreshes, the others wait for it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._value: Any = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, compute) -> Any:
        if time.monotonic() - self._at < self.seconds:
            return self._value
        async with self._lock:
            if time.monotonic() - self._at >= self.seconds:
                self._value = await asyncio.to_thread(compute)
                self._at = time.monotonic()
        return self._value


def _open_pool(settings: Settings):
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        settings.db.url,
        min_size=1,
        max_size=10,
        open=False,
        check=ConnectionPool.check_connection,  # drop connections the database closed (restart, failover)
        kwargs={"autocommit": True, "connect_timeout": 2, "application_name": "studioops-api"},
        name="studioops-api",
    )
    pool.open(wait=False)
    return pool


def create_app(settings: Settings | None = None, health_timeout: float = 2.0, cache_seconds: float = 1.0) -> FastAPI:
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # *_created series only double the scrape size
    settings = settings or get_settings()
    from studioops.envfile import guard_production

    guard_production(settings)  # a production API never starts with a default or weak secret
    state: dict[str, Any] = {}
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["pool"] = _open_pool(settings)
        state["collector"] = InfrastructureCollector(
            settings, state["pool"], cache_seconds=cache_seconds, timeout=health_timeout,
            storage_refresh_seconds=settings.api_storage_usage_refresh_seconds)
        registry.register(state["collector"])
        try:
            yield
        finally:
            registry.unregister(state["collector"])
            state["collector"].close()
            state["pool"].close()

    # FastAPI's own /docs loads Swagger UI from a CDN (blank offline), and its /docs and /openapi.json are plain
    # Starlette routes that request metrics count as `unmatched`: both are served by routes of our own below.
    app = FastAPI(title="StudioOps API", version=__version__, lifespan=lifespan, docs_url=None, openapi_url=None,
                  redoc_url=None, description="Health, readiness and metrics of the StudioOps infrastructure.")
    app.add_middleware(HttpMetrics, registry=registry)
    from studioops.console.web import install as install_console

    install_console(app, settings, state)  # the console's pages and its login gate (deny by default)
    from studioops.api.langfuse_api import langfuse_router
    from studioops.api.traces import traces_router

    app.include_router(langfuse_router(settings, state))
    app.include_router(traces_router(settings, state))
    health_cache = TimedCache(cache_seconds)
    ready_cache = TimedCache(cache_seconds)

    @app.get("/livez", summary="Liveness: the process is up (no I/O).")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health", summary="Health of the database, storage and observability.",
             responses={503: {"description": "unhealthy: the database is down"}})
    async def health() -> JSONResponse:
        result = await health_cache.get(
            lambda: check_infrastructure_health(settings, state.get("pool"), health_timeout))
        return JSONResponse(result, status_code=503 if result["overall"] == UNHEALTHY else 200)

    def readiness() -> dict[str, Any]:
        from studioops.db.migrate import Migrator

        try:
            with state["pool"].connection(timeout=health_timeout) as conn:
                status = Migrator(settings.db, settings.studioops_migrations_dir).status(conn)
        except Exception as exc:
            return {"ready": False, "reason": "database unavailable: " + one_line(exc, 200)}
        if not status.ok:
            return {"ready": False, "reason": "migrations pending or failed", "pending": status.pending,
                    "drifted": status.drifted, "failed": status.failed}
        return {"ready": True, "migration_head": status.head}

    @app.get("/readyz", summary="Readiness: the database answers and no migration is pending.",
             responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        result = await ready_cache.get(readiness)
        return JSONResponse(result, status_code=200 if result["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format).", response_class=Response)
    async def metrics() -> Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics.json", summary="Metrics in the design document's get_infrastructure_metrics shape.")
    async def metrics_json() -> dict[str, Any]:
        return await asyncio.to_thread(state["collector"].snapshot)

    _add_docs(app)
    return app


# Swagger UI 5 as shipped in the fastapi-offline wheel: served by the app, never fetched from a CDN.
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}


def _swagger_dir():
    from importlib.resources import files

    return files("fastapi_offline") / "static"


def _add_docs(app: FastAPI) -> None:
    from fastapi import HTTPException
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon.png")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in SWAGGER_ASSETS:  # a fixed list: no path from the request reaches the file system
            raise HTTPException(404, f"no asset {name!r}")
        body = await asyncio.to_thread((_swagger_dir() / name).read_bytes)
        return Response(body, media_type=SWAGGER_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
