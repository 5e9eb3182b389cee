"""The part of Langfuse's public API that the SDKs use to send data, served from our trace store.

POST /api/public/otel/v1/traces (OTLP/HTTP: SDK v3+ and any OpenTelemetry exporter), POST /api/public/ingestion
(the v2 SDK's batches, answered 207), GET /api/public/health and GET /api/public/projects (the SDKs' auth check).
Everything but the health probe asks for HTTP Basic LANGFUSE_PUBLIC_KEY:LANGFUSE_SECRET_KEY.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from studioops import __version__
from studioops.config import Settings
from studioops.observability import ingest, otlp
from studioops.observability.keys import basic_auth_matches, ingestion_keys

OTLP_TYPES = {"application/x-protobuf", "application/json"}
PROJECT = {"id": "studioops", "name": "StudioOps (embedded)", "metadata": {},
           "organization": {"id": "studioops", "name": "StudioOps"}}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message, "error": message}, status_code=status)


def require_keys(settings: Settings) -> Callable[[Request], None]:
    """A dependency: 401 unless the request carries the ingestion key pair as HTTP Basic credentials. The pair is
    read on first use (the development pair is a file under STUDIOOPS_HOME: building the app writes nothing)."""
    keys: list[tuple[str, str]] = []

    def check(request: Request) -> None:
        if not keys:
            try:
                keys.append(ingestion_keys(settings))
            except OSError as exc:
                raise HTTPException(503, f"no ingestion key pair: cannot write the development pair ({exc.strerror})."
                                         " Set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY") from None
        if not basic_auth_matches(request.headers.get("authorization"), keys[0]):
            raise HTTPException(401, "Invalid credentials: use HTTP Basic LANGFUSE_PUBLIC_KEY:LANGFUSE_SECRET_KEY",
                                headers={"WWW-Authenticate": 'Basic realm="langfuse"'})

    return check


async def read_body(request: Request, limit: int = ingest.MAX_BODY_BYTES) -> bytes:
    """The raw body, refusing (413) more than `limit` bytes on the wire before reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ingest.TooLarge(f"the body is {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ingest.TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def langfuse_router(settings: Settings, state: dict[str, Any]) -> APIRouter:
    """The router; `state["pool"]` is the app's connection pool (opened by its lifespan)."""
    from studioops.observability.prices import price_table

    router = APIRouter(prefix="/api/public", tags=["langfuse"])
    authorized = require_keys(settings)
    prices = price_table(settings.observability_prices_file)

    def connection():
        return state["pool"].connection(timeout=5)

    async def guarded(request: Request, work: Callable[[], Any]) -> Any:
        """Run `work` off the event loop; our failures become 4xx/503 answers, never a 500."""
        try:
            authorized(request)
        except HTTPException as exc:
            return _error(exc.status_code, exc.detail)
        try:
            return await work()
        except ingest.TooLarge as exc:
            return _error(413, f"{exc}. Send smaller batches")
        except otlp.BadRequest as exc:
            return _error(400, str(exc))
        except ingest.StoreUnavailable as exc:
            return _error(503, str(exc))

    @router.get("/health", summary="Liveness of the ingestion API (no credentials needed).")
    async def health() -> dict[str, str]:
        return {"status": "OK", "version": __version__}

    @router.get("/projects", summary="The project the keys belong to (the SDKs' auth_check).")
    async def projects(request: Request) -> Any:
        async def work():
            return {"data": [PROJECT]}

        return await guarded(request, work)

    @router.post("/otel/v1/traces", summary="OTLP/HTTP traces: protobuf or JSON, gzip or plain.")
    async def otel_traces(request: Request) -> Any:
        async def work():
            content_type = request.headers.get("content-type", "")
            if content_type.split(";", 1)[0].strip().lower() not in OTLP_TYPES:
                return _error(415, f"unsupported content type '{content_type[:60]}': send application/x-protobuf "
                                   "or application/json")
            raw = await read_body(request)
            body = ingest.decompress(raw, request.headers.get("content-encoding"))
            result = await asyncio.to_thread(ingest.ingest_otlp, connection, body, content_type, prices)
            return _otlp_answer(content_type, result)

        return await guarded(request, work)

    @router.post("/ingestion", summary="Langfuse's batch ingestion (SDK v2): 207 with per-event results.")
    async def ingestion(request: Request) -> Any:
        async def work():
            raw = await read_body(request)
            body = ingest.decompress(raw, request.headers.get("content-encoding"))
            result = await asyncio.to_thread(ingest.ingest_events, connection, body, prices)
            return JSONResponse(result, status_code=207)

        return await guarded(request, work)

    return router


def _otlp_answer(content_type: str, result: ingest.OtlpResult) -> Response:
    """OTLP's ExportTraceServiceResponse, in the request's encoding; rejected spans as a partial success."""
    message = "; ".join(result.rejected[:10])
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        payload: dict[str, Any] = {}
        if result.rejected:
            payload["partialSuccess"] = {"rejectedSpans": str(len(result.rejected)), "errorMessage": message}
        return JSONResponse(payload)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse()
    if result.rejected:
        answer.partial_success.rejected_spans = len(result.rejected)
        answer.partial_success.error_message = message
    return Response(answer.SerializeToString(), media_type="application/x-protobuf")
