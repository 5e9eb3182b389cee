"""GET /api/traces and GET /api/traces/{id}: the trace store's list and tree (studioops.observability.query),
behind the same credentials as the ingestion API, or a console session."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from studioops.config import Settings, parse_duration
from studioops.errors import StudioOpsError, one_line


def traces_router(settings: Settings, state: dict[str, Any]) -> APIRouter:
    from studioops.api.langfuse_api import require_keys
    from studioops.observability import query

    router = APIRouter(prefix="/api/traces", tags=["traces"])
    authorized = require_keys(settings)

    async def run(request: Request, work) -> Any:
        try:
            if not request.scope.get("state", {}).get("console_session"):
                authorized(request)
        except HTTPException as exc:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

        def call():
            with state["pool"].connection(timeout=5) as conn:
                return work(conn)

        try:
            return await asyncio.to_thread(call)
        except StudioOpsError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # the store is down or not migrated: the client may retry
            if type(exc).__module__.startswith(("psycopg", "psycopg_pool")):
                return JSONResponse({"error": "the trace store is unavailable: " + one_line(exc, 200)},
                                    status_code=503)
            raise

    @router.get("", summary="Traces, newest first (keyset-paginated: pass next_cursor back as cursor).")
    async def list_traces(
        request: Request,
        limit: int = Query(20, ge=1, le=query.MAX_LIMIT),
        cursor: str | None = None,
        user: str | None = None,
        session: str | None = None,
        name: str | None = None,
        model: str | None = None,
        level: str | None = Query(None, description="DEBUG, DEFAULT, WARNING or ERROR"),
        tag: list[str] = Query(default_factory=list),
        since: str | None = Query(None, description="a duration back from now: 30s, 15m, 1h, 7d"),
    ) -> Any:
        from studioops.observability.rows import LEVELS

        try:
            start = query.since(parse_duration(since)) if since else None
        except StudioOpsError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if level is not None and level.upper() not in LEVELS:
            return JSONResponse({"error": f"level must be one of {', '.join(LEVELS)}"}, status_code=400)
        filters = query.TraceFilter(user_id=user, session_id=session, name=name, model=model, level=level,
                                    tags=tag, since=start)
        return await run(request, lambda conn: query.list_traces(conn, filters, limit, cursor))

    @router.get("/{trace_id}", summary="One trace and its observation tree.")
    async def get_trace(request: Request, trace_id: str) -> Any:
        result = await run(request, lambda conn: query.get_trace(conn, trace_id))
        if result is None:
            return JSONResponse({"error": f"no trace '{trace_id}'"}, status_code=404)
        return result

    return router
