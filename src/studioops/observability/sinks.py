"""Where traces go: the local trace store (traces and observations) and Langfuse (through its official SDK).

Both run on the service's worker thread, never on the caller's. The Langfuse sink hands the SDK an OTLP exporter
of our own only to count failed exports; the spans, their attributes and the wire format are the SDK's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from studioops.config import DatabaseURL, Settings
from studioops.errors import one_line
from studioops.observability.records import TraceRecord, as_text, langfuse_trace_id
from studioops.observability.rows import Batch, ObservationRow, TraceRow

log = logging.getLogger("studioops.observability")


class Sink(Protocol):
    name: str
    failures: int

    def write(self, batch: list[TraceRecord]) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def close(self, timeout: float) -> None: ...


class _FailureLog:
    """Count failures; log the first one of each sink (then stay quiet: an outage must not flood the logs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._logged = False
        self._lock = threading.Lock()

    def failed(self, count: int, reason: str) -> None:
        with self._lock:
            self.failures += count
            first = not self._logged
            self._logged = True
        if first:
            log.warning("trace sink %s failed (%s); counting further failures silently", self.name, reason)


class LocalStoreSink:
    """Each batch into the trace store (a trace and a generation per call) in one transaction; reconnects after
    the database comes back."""

    name = "local"

    def __init__(self, db: DatabaseURL, prices_file: Path | None = None) -> None:
        self.db = db
        self.prices_file = prices_file
        self._conn = None
        self._failures = _FailureLog(self.name)
        self.written = 0

    @property
    def failures(self) -> int:
        return self._failures.failures

    def _connection(self):
        from studioops.db.connect import connect

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db, autocommit=True, timeout=2, application_name="studioops-traces")
        return self._conn

    def write(self, batch: list[TraceRecord]) -> None:
        from studioops.observability.prices import price_table
        from studioops.observability.writer import write_batch

        try:
            rows = records_to_rows(batch)
            write_batch(self._connection(), rows, price_table(self.prices_file))
            self.written += len(batch)
        except Exception as exc:
            self._failures.failed(len(batch), one_line(exc, 200))
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def flush(self, timeout: float) -> None:
        pass  # every write is committed (autocommit COPY)

    def close(self, timeout: float) -> None:
        self._drop_connection()


def records_to_rows(batch: list[TraceRecord]) -> Batch:
    """A trace per caller trace id (in Langfuse's id format) and a generation per call."""
    rows = Batch()
    for r in batch:
        trace_id = langfuse_trace_id(r.trace_id)
        start = datetime.fromtimestamp(r.started_at, UTC)
        usage = {k: v for k, v in (("input", r.input_tokens), ("output", r.output_tokens)) if v is not None}
        rows.traces.append(TraceRow(id=trace_id, timestamp=start, name=r.name,
                                    metadata={"studioops_trace_id": r.trace_id}))
        rows.observations.append(ObservationRow(
            id=r.record_id, trace_id=trace_id, type="generation", name=r.name, start_time=start,
            end_time=start + timedelta(milliseconds=r.latency_ms) if r.latency_ms is not None else None,
            model=r.model, input=as_text(r.input), output=as_text(r.output), usage_details=usage,
            level="ERROR" if r.status == "error" else "DEFAULT", status_message=r.error,
            metadata={**r.metadata, "studioops_trace_id": r.trace_id, "usage_source": r.usage_source,
                      "latency_ms": r.latency_ms},
        ))
    return rows


class LangfuseSink:
    """One generation per record, through the Langfuse SDK (OTLP over HTTP to {host}/api/public/otel)."""

    name = "langfuse"

    def __init__(self, settings: Settings, flush_interval: float = 1.0) -> None:
        import base64
        from importlib.metadata import version

        from langfuse import Langfuse
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._failures = _FailureLog(self.name)
        self.written = 0
        failures = self._failures
        public_key = settings.langfuse_public_key
        secret_key = settings.langfuse_secret_key.get_secret_value()
        host = settings.langfuse_host.rstrip("/")

        class CountingExporter(OTLPSpanExporter):
            def export(self, spans):
                try:
                    result = super().export(spans)
                except Exception as exc:  # the SDK's batch thread would log and drop it; we count it
                    failures.failed(len(spans), type(exc).__name__)
                    return SpanExportResult.FAILURE
                if result is not SpanExportResult.SUCCESS:
                    failures.failed(len(spans), f"export to {host} failed")
                return result

        auth = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        exporter = CountingExporter(
            endpoint=f"{host}/api/public/otel/v1/traces",
            headers={"Authorization": f"Basic {auth}", "x-langfuse-sdk-name": "python",
                     "x-langfuse-sdk-version": version("langfuse"), "x-langfuse-public-key": public_key,
                     "x-langfuse-ingestion-version": "4"},
            timeout=5,
            compression=Compression.Gzip,
        )
        # A provider of our own: the application's global OpenTelemetry setup is left alone.
        self.client = Langfuse(public_key=public_key, secret_key=secret_key, host=host,
                               tracer_provider=TracerProvider(), span_exporter=exporter,
                               flush_interval=flush_interval)

    @property
    def failures(self) -> int:
        return self._failures.failures

    def write(self, batch: list[TraceRecord]) -> None:
        for r in batch:
            try:
                usage = {}
                if r.input_tokens is not None:
                    usage["input"] = r.input_tokens
                if r.output_tokens is not None:
                    usage["output"] = r.output_tokens
                generation = self.client.start_observation(
                    trace_context={"trace_id": langfuse_trace_id(r.trace_id)},
                    name=r.name,
                    as_type="generation",
                    model=r.model,
                    input=r.input,
                    output=r.output,
                    usage_details=usage or None,
                    metadata={**r.metadata, "studioops_trace_id": r.trace_id, "latency_ms": r.latency_ms,
                              "usage_source": r.usage_source, "studioops_observation_id": r.record_id},
                    level="ERROR" if r.status == "error" else None,
                    status_message=r.error,
                )
                # The SDK starts the span now (on our worker), so the call's own latency travels as metadata.
                generation.end()
                self.written += 1
            except Exception as exc:
                self._failures.failed(1, type(exc).__name__)

    def flush(self, timeout: float) -> None:
        self.client.flush()

    def close(self, timeout: float) -> None:
        self.client.shutdown()
