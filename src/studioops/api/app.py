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
        state["collector"] = InfrastructureCollector(settings, state["pool"], cache_seconds=cache_seconds)
        registry.register(state["collector"])
        try:
            yield
        finally:
            registry.unregister(state["collector"])
            state["pool"].close()

    app = FastAPI(title="StudioOps API", version=__version__, lifespan=lifespan,
                  description="Health, readiness and metrics of the StudioOps infrastructure.")
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

    return app
