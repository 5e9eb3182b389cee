"""Benchmark the console's OTLP ingestion and the trace list over a large store.

Run: `.venv/bin/python bench/ingest.py` (BENCH_REQUESTS=60 requests of BENCH_BATCH=512 spans, BENCH_CLIENTS=2
concurrent senders, BENCH_OBSERVATIONS=1000000 for the list). Starts its own embedded stack, console included.

1. Spans per second through POST /api/public/otel/v1/traces: gzip OTLP protobuf bodies of 512 spans each, as the
   Langfuse SDK sends them (a trace of 8 spans: a root span, nested spans and generations with model, usage,
   input and output, trace name, user, session, tags). Baseline, in the same run: raw COPY of the same rows
   (traces and observations, already mapped) into the same tables, one transaction per 512 rows.
   Targets on 2 cores: >= 10,000 spans/s, >= 0.5x the raw COPY rate, p99 of one request <= 100 ms.
2. The trace list (`studioops traces`: studioops.observability.query.list_traces) over BENCH_OBSERVATIONS
   observations, unfiltered and with each filter. Target: <= 100 ms.
"""

from __future__ import annotations

import gzip
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import httpx
import psycopg

from studioops import stack
from studioops.config import Settings
from studioops.observability import otlp, query
from studioops.observability.keys import ingestion_keys
from studioops.observability.prices import price_table
from studioops.observability.writer import _TRACE_UPSERT, _copy_observations, _observation_values, _trace_params
from studioops.stack.process import free_port

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60"))
BATCH = int(os.environ.get("BENCH_BATCH", "512"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "2"))
OBSERVATIONS = int(os.environ.get("BENCH_OBSERVATIONS", "1000000"))
SPANS_PER_TRACE = 8


def sdk_like_request(batch: int) -> bytes:
    """One export request of `batch` spans with the attributes the Langfuse SDK sets, gzip-compressed."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key, value):
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        if isinstance(value, list):
            from opentelemetry.proto.common.v1.common_pb2 import ArrayValue

            return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(
                values=[AnyValue(string_value=v) for v in value])))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "studioops-ai"), kv("telemetry.sdk.language", "python")])
    ss = rs.scope_spans.add()
    ss.scope.name = "langfuse-sdk"
    now = time.time_ns()
    trace_id = parent = b""
    for i in range(batch):
        if i % SPANS_PER_TRACE == 0:
            trace_id, parent = uuid.uuid4().bytes, b""
        span = ss.spans.add()
        span.trace_id, span.span_id = trace_id, os.urandom(8)
        if parent:
            span.parent_span_id = parent
        else:
            parent = span.span_id
        span.start_time_unix_nano, span.end_time_unix_nano = now + i * 1000, now + i * 1000 + 250_000_000
        turn = i // SPANS_PER_TRACE  # propagate_attributes gives every span of a trace the same trace attributes
        attrs = [kv("langfuse.trace.name", "chat-turn"), kv("user.id", f"user-{turn % 50}"),
                 kv("session.id", f"session-{turn % 20}"), kv("langfuse.trace.tags", ["bench", "summer"]),
                 kv("langfuse.environment", "default")]
        if i % 2:
            span.name = "llm-call"
            attrs += [kv("langfuse.observation.type", "generation"),
                      kv("langfuse.observation.model.name", "gpt-4o-mini"),
                      kv("langfuse.observation.model.parameters", '{"temperature": 0.2}'),
                      kv("langfuse.observation.usage_details", '{"input": 812, "output": 95}'),
                      kv("langfuse.observation.input", '[{"role": "user", "content": "' + "budget? " * 20 + '"}]'),
                      kv("langfuse.observation.output", "The summer campaign costs 96,950 USD. " * 3)]
        else:
            span.name = "retrieve"
            attrs += [kv("langfuse.observation.type", "span"),
                      kv("langfuse.observation.metadata.project", '"summer"')]
        span.attributes.extend(attrs)
    return gzip.compress(request.SerializeToString(), 6)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (load-independent, unlike wall time on a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest_rate(console_url: str, auth: tuple[str, str], bodies: list[bytes]) -> tuple[float, list[float]]:
    """Send every body (CLIENTS senders at once); (spans per second, per-request seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(bodies)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

    def sender():
        with httpx.Client(base_url=console_url, auth=auth, timeout=30) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                started = time.perf_counter()
                response = client.post("/api/public/otel/v1/traces", content=body, headers=headers)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"ingest failed: {response.status_code} {response.text[:200]}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=sender) for _ in range(CLIENTS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(bodies) * BATCH / (time.perf_counter() - began), latencies


def copy_rate(url: str, bodies: list[bytes]) -> float:
    """The same rows, already decoded and mapped, written with COPY (observations) and the trace upsert."""
    prices = price_table(None)
    batches = []
    for body in bodies:
        b, _ = otlp.to_batch(otlp.decode(gzip.decompress(body), "application/x-protobuf"))
        traces = {t.id: t for t in b.traces}  # one row per trace, as the writer merges them
        for o in b.observations:
            o.finish(prices)
        batches.append(([_trace_params(t) for t in traces.values()], [_observation_values(o) for o in b.observations]))
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        for trace_rows, obs_rows in batches:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_TRACE_UPSERT, trace_rows)
                _copy_observations(cur, obs_rows)
        return len(bodies) * BATCH / (time.perf_counter() - began)


def fill(url: str, observations: int) -> None:
    """A large store, made by the database itself: 10 observations per trace, a few models, 1% errors."""
    traces = observations // 10
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
        if have >= observations:
            return
        conn.execute(f"""
            INSERT INTO traces (id, timestamp, name, user_id, session_id, tags)
            SELECT 'fill' || i, now() - make_interval(secs => i), 'chat-turn', 'user-' || (i % 1000),
                   'session-' || (i % 5000), ARRAY['fill']
            FROM generate_series(1, {traces}) i""")
        conn.execute(f"""
            INSERT INTO observations (id, trace_id, parent_observation_id, type, name, start_time, end_time, model,
                                      usage_details, input_tokens, output_tokens, total_tokens, total_cost, level)
            SELECT 'fill' || i || '-' || j, 'fill' || i, CASE WHEN j > 1 THEN 'fill' || i || '-1' END,
                   CASE WHEN j % 2 = 0 THEN 'generation' ELSE 'span' END, 'step-' || j,
                   now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '300 ms',
                   CASE WHEN j % 2 = 0 THEN (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku-20241022'])[1 + i % 3]
                   END, '{{"input": 800, "output": 90}}', 800, 90, 890, 0.00017,
                   CASE WHEN i % 100 = 0 AND j = 2 THEN 'ERROR' ELSE 'DEFAULT' END
            FROM generate_series(1, {traces}) i, generate_series(1, 10) j""")
        conn.execute("ANALYZE traces")
        conn.execute("ANALYZE observations")


def list_timings(url: str) -> dict[str, float]:
    cases = {
        "newest 20": query.TraceFilter(),
        "--user": query.TraceFilter(user_id="user-7"),
        "--session": query.TraceFilter(session_id="session-42"),
        "--model": query.TraceFilter(model="gpt-4o"),
        "--level ERROR": query.TraceFilter(level="ERROR"),
        "--since 1h": query.TraceFilter(since=query.since(3600)),
    }
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for label, filters in cases.items():
            query.list_traces(conn, filters, 20)  # warm the cache, as a second run of the command would be
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                page = query.list_traces(conn, filters, 20)
                runs.append(time.perf_counter() - started)
            assert page["traces"], label
            second = query.list_traces(conn, filters, 20, page["next_cursor"]) if page["next_cursor"] else None
            assert second is None or second["traces"][0]["timestamp"] <= page["traces"][-1]["timestamp"]
            out[label] = statistics.median(runs) * 1000
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-ingest-") as tmp:
        settings = Settings(
            _env_file=None, studioops_home=Path(tmp) / "home",
            database_url=f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
            minio_endpoint=f"localhost:{free_port()}", langfuse_host=f"http://localhost:{free_port()}",
        )
        stack.up(settings, timeout=60)
        try:
            url, console = settings.db.url, settings.langfuse_host
            auth = ingestion_keys(settings)
            print(f"building {REQUESTS} + {REQUESTS} requests of {BATCH} spans (gzip OTLP protobuf)...")
            bodies = [sdk_like_request(BATCH) for _ in range(REQUESTS)]
            baseline_bodies = [sdk_like_request(BATCH) for _ in range(REQUESTS)]
            ingest_rate(console, auth, bodies[:4])  # warm-up: imports, pool, prepared plans
            import json

            console_pid = json.loads((settings.home / "run" / "console.json").read_text())["pid"]
            cpu_before = cpu_seconds(console_pid)
            rate, latencies = ingest_rate(console, auth, bodies[4:])
            console_cpu = (cpu_seconds(console_pid) - cpu_before) / len(latencies)
            baseline = copy_rate(url, baseline_bodies)
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            print(f"ingest via /api/public/otel/v1/traces: {rate:,.0f} spans/s ({CLIENTS} senders, "
                  f"{len(latencies)} requests of {BATCH})   target >= 10,000")
            print(f"raw COPY of the same rows:              {baseline:,.0f} spans/s")
            print(f"ratio ingest / raw COPY:                {rate / baseline:.2f}   target >= 0.5")
            print(f"per request: p50 {p50:.1f} ms, p99 {p99:.1f} ms   target p99 <= 100 ms")
            print(f"console CPU per request: {console_cpu * 1000:.1f} ms, i.e. {BATCH / console_cpu:,.0f} spans/s per "
                  f"core of the console alone (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

            print(f"filling the store to {OBSERVATIONS:,} observations...")
            began = time.perf_counter()
            fill(url, OBSERVATIONS)
            print(f"  filled in {time.perf_counter() - began:.1f}s")
            for label, ms in list_timings(url).items():
                print(f"studioops traces {label:<14} {ms:7.1f} ms   target <= 100 ms")
            env = {**os.environ, "DATABASE_URL": url, "STUDIOOPS_HOME": str(settings.home)}
            import subprocess

            began = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "studioops", "traces", "--json"], env=env,
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            print(f"`studioops traces --json` as a command (Python start-up included): "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms")
        finally:
            stack.down(settings)


if __name__ == "__main__":
    main()
