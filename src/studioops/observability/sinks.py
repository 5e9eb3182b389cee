"""Where traces go: the local Postgres store (`llm_traces`) and Langfuse (through its official SDK).

Both run on the service's worker thread, never on the caller's. The Langfuse sink hands the SDK an OTLP exporter
of our own only to count failed exports; the spans, their attributes and the wire format are the SDK's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import UTC, datetime
from typing import Protocol

from studioops.config import DatabaseURL, Settings
from studioops.errors import one_line
from studioops.observability.records import TraceRecord, as_text, langfuse_trace_id

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
    """Batched COPY into llm_traces; reconnects after the database comes back."""

    name = "local"
    COLUMNS = ("trace_id", "langfuse_trace_id", "name", "model", "input", "output", "input_tokens", "output_tokens",
               "usage_source", "latency_ms", "status", "error", "metadata", "started_at")

    def __init__(self, db: DatabaseURL) -> None:
        self.db = db
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
        rows = [
            (r.trace_id, langfuse_trace_id(r.trace_id), r.name, r.model, as_text(r.input), as_text(r.output),
             r.input_tokens, r.output_tokens, r.usage_source, r.latency_ms, r.status, r.error,
             json.dumps(r.metadata, default=str), datetime.fromtimestamp(r.started_at, UTC))
            for r in batch
        ]
        try:
            conn = self._connection()
            with conn.cursor() as cur, cur.copy(f"COPY llm_traces ({', '.join(self.COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            self.written += len(rows)
        except Exception as exc:
            self._failures.failed(len(rows), one_line(exc, 200))
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
                              "usage_source": r.usage_source},
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
