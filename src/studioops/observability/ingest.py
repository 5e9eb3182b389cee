"""Ingestion: a request body in, rows stored in one transaction, an answer out. The HTTP layer
(api/langfuse_api.py) only reads the body, checks the credentials and turns these results into responses.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from studioops.errors import one_line
from studioops.observability import batch_events, otlp
from studioops.observability.prices import PriceTable
from studioops.observability.rows import Batch
from studioops.observability.writer import write_batch

# Bodies larger than this (after decompression) are refused with 413. The SDKs send 512 spans a request, a few
# hundred KB; Langfuse's own limit on a batch is of the same order.
MAX_BODY_BYTES = 16 * 1024 * 1024


class TooLarge(ValueError):
    """The body is over MAX_BODY_BYTES."""


class StoreUnavailable(RuntimeError):
    """The trace store cannot be reached or is not migrated: 503, the client retries."""


def decompress(body: bytes, encoding: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body without its Content-Encoding; bounded, so a small gzip bomb cannot fill the memory."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in {"identity", ""}:
        if len(body) > limit:
            raise TooLarge(f"the body is {len(body)} bytes, over the limit of {limit}")
        return body
    if encoding not in {"gzip", "deflate"}:
        raise otlp.BadRequest(f"unsupported content encoding '{encoding[:20]}' (use gzip or none)")
    inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"the body inflates to over the limit of {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise otlp.BadRequest(f"the body is not valid {encoding} ({exc})") from None
    if not inflater.eof:
        raise otlp.BadRequest(f"the {encoding} body is truncated")
    return out


def _store(connection, batch: Batch, prices: PriceTable, merge: bool) -> None:
    import psycopg

    try:
        with connection() as conn:
            write_batch(conn, batch, prices, merge=merge)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError, UnicodeEncodeError) as exc:
        raise otlp.BadRequest(f"the data was refused by the trace store: {one_line(exc, 200)}") from None
    except psycopg.errors.UndefinedTable:
        raise StoreUnavailable("the trace store is not migrated. Run `studioops db migrate`") from None
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the trace store is unavailable: {one_line(exc, 200)}") from None
    except Exception as exc:  # the pool's own errors (PoolTimeout...) come from psycopg_pool
        if type(exc).__module__.startswith("psycopg_pool"):
            raise StoreUnavailable(f"the trace store is unavailable: {one_line(exc, 200)}") from None
        raise


@dataclass
class OtlpResult:
    spans: int
    rejected: list[str] = field(default_factory=list)


def ingest_otlp(connection, body: bytes, content_type: str, prices: PriceTable) -> OtlpResult:
    """Decode and store one OTLP export request; invalid spans are rejected, the valid ones stored together."""
    spans = otlp.decode(body, content_type)
    batch, rejected = otlp.to_batch(spans)
    if batch.observations:
        _store(connection, batch, prices, merge=False)
    return OtlpResult(len(batch.observations), rejected)


def ingest_events(connection, body: bytes, prices: PriceTable) -> dict[str, Any]:
    """Langfuse's 207 answer to a v2 batch: every well-formed event stored (in one transaction), every bad one
    named with its reason. Should the store refuse the batch, each event is tried alone to find the culprits."""
    events = batch_events.parse_body(body)
    successes, errors = [], []
    good: list[tuple[str, Batch]] = []
    for index, event in enumerate(events):
        eid = batch_events.event_id(event, index)
        try:
            good.append((eid, batch_events.event_rows(event)))
        except batch_events.EventError as exc:
            errors.append({"id": eid, "status": 400, "message": "Invalid request data", "error": str(exc)})
    if good:
        whole = Batch()
        for _, rows in good:
            whole.traces += rows.traces
            whole.observations += rows.observations
            whole.scores += rows.scores
        try:
            _store(connection, whole, prices, merge=True)
            successes = [{"id": eid, "status": 201} for eid, _ in good]
        except otlp.BadRequest:
            for eid, rows in good:
                try:
                    _store(connection, rows, prices, merge=True)
                    successes.append({"id": eid, "status": 201})
                except otlp.BadRequest as exc:
                    errors.append({"id": eid, "status": 400, "message": "Invalid request data", "error": str(exc)})
    return {"successes": successes, "errors": errors}
