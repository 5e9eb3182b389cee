"""The embedded console speaks Langfuse's public ingestion API: the real Langfuse SDK (v5 OTLP, and v2 batches in
a virtual environment of its own), a plain OpenTelemetry exporter, and bad input, against a real console process
and a real PostgreSQL."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from studioops.observability.keys import development_keys
from studioops.observability.prices import DEFAULT_PRICES
from studioops.stack.process import wait_until

PRICES = {m["model_name"]: m["prices"] for m in json.loads(DEFAULT_PRICES.read_text())["models"]}


@pytest.fixture(scope="module")
def console(running_stack):
    """The shared stack's console (started by `up`), its URL and its development key pair."""
    settings = running_stack.settings
    public, secret = development_keys(settings, create=False)
    url = settings.langfuse_host.rstrip("/")
    assert httpx.get(url + "/api/public/health", timeout=5).status_code == 200
    return {"url": url, "public": public, "secret": secret, "stack": running_stack}


def sdk_client(console, public=None, secret=None):
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    return Langfuse(public_key=public or console["public"], secret_key=secret or console["secret"],
                    host=console["url"], tracer_provider=TracerProvider(), flush_interval=0.2)


def trace_tree(stack, trace_id: str):
    from studioops.observability.query import get_trace

    with psycopg.connect(stack.url) as conn:
        return get_trace(conn, trace_id)


def count(stack, sql: str, *params) -> int:
    with psycopg.connect(stack.url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_langfuse_sdk_trace_is_stored_as_its_tree_with_usage_and_cost(console):
    from langfuse import propagate_attributes

    client = sdk_client(console)
    assert client.auth_check()
    tag = uuid.uuid4().hex[:8]
    with client.start_as_current_observation(name=f"handle-request-{tag}", input={"question": "budget?"}) as root:
        with (propagate_attributes(user_id=f"user-{tag}", session_id=f"session-{tag}", tags=["summer", tag],
                                   trace_name=f"chat-{tag}"),
              client.start_as_current_observation(name="retrieve", as_type="span") as retrieve):
            retrieve.update(output={"documents": 3})
            with client.start_as_current_observation(
                    name="answer", as_type="generation", model="gpt-4o-mini", model_parameters={"temperature": 0.2},
                    usage_details={"input": 1200, "output": 300}, input=[{"role": "user", "content": "q"}],
            ) as generation:
                generation.update(output="96,950 USD", metadata={"project": "summer"})
        root.update(output="done")
        trace_id = root.trace_id
    client.flush()
    client.shutdown()

    assert wait_until(lambda: trace_tree(console["stack"], trace_id) is not None, 10, 0.1)
    trace = trace_tree(console["stack"], trace_id)
    assert trace["name"] == f"chat-{tag}"
    assert trace["user_id"] == f"user-{tag}" and trace["session_id"] == f"session-{tag}"
    assert set(trace["tags"]) == {"summer", tag}
    assert trace["input"] == {"question": "budget?"} and trace["output"] == "done"
    (root_obs,) = trace["observations"]
    assert root_obs["name"] == f"handle-request-{tag}" and root_obs["parent_observation_id"] is None
    (retrieve_obs,) = root_obs["observations"]
    assert retrieve_obs["type"] == "span" and retrieve_obs["output"] == {"documents": 3}
    (gen,) = retrieve_obs["observations"]
    assert gen["type"] == "generation" and gen["model"] == "gpt-4o-mini"
    assert gen["parent_observation_id"] == retrieve_obs["id"]
    assert gen["usage_details"] == {"input": 1200, "output": 300}
    assert gen["model_parameters"] == {"temperature": 0.2}
    assert gen["output"] == "96,950 USD" and gen["metadata"]["project"] == "summer"
    price = PRICES["gpt-4o-mini"]
    assert gen["cost_details"]["input"] == pytest.approx(1200 * price["input"])
    assert gen["cost_details"]["output"] == pytest.approx(300 * price["output"])
    assert gen["total_cost"] == pytest.approx(1200 * price["input"] + 300 * price["output"])
    assert gen["start_time"] <= gen["end_time"]


def test_wrong_or_missing_keys_get_401_and_nothing_is_stored(console):
    # (A new public key: the SDK shares one client's credentials among clients with the same public key.)
    from langfuse.api import UnauthorizedError

    client = sdk_client(console, public=f"pk-lf-{uuid.uuid4().hex[:8]}")
    with pytest.raises(UnauthorizedError):
        client.auth_check()
    with client.start_as_current_observation(name="should-not-be-stored") as span:
        trace_id = span.trace_id
    client.flush()
    client.shutdown()
    body = otlp_request([span_dict(uuid.uuid4().hex, "x")])
    url = console["url"] + "/api/public/otel/v1/traces"
    for auth in [None, ("pk-wrong", console["secret"]), (console["public"], "sk-wrong"), (console["public"], "")]:
        response = httpx.post(url, content=body, headers={"Content-Type": "application/x-protobuf"}, auth=auth)
        assert response.status_code == 401, auth
    response = httpx.post(console["url"] + "/api/public/ingestion", json={"batch": []},
                          auth=("pk", "sk"))
    assert response.status_code == 401
    time.sleep(0.5)
    assert count(console["stack"], "SELECT count(*) FROM traces WHERE id = %s", trace_id) == 0


# -- plain OpenTelemetry -----------------------------------------------------------------------------------------
def span_dict(trace_id: str, span_id: str, **kw) -> dict:
    return {"trace_id": trace_id, "span_id": span_id, **kw}


def otlp_request(spans: list[dict], scope: str = "test-instrumentation") -> bytes:
    """An ExportTraceServiceRequest built with opentelemetry-proto, as an exporter builds it."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def value(v):
        if isinstance(v, bool):
            return AnyValue(bool_value=v)
        if isinstance(v, int):
            return AnyValue(int_value=v)
        if isinstance(v, float):
            return AnyValue(double_value=v)
        return AnyValue(string_value=str(v))

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=value("bench")))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    now = time.time_ns()
    for s in spans:
        span = ss.spans.add()
        span.trace_id = bytes.fromhex(s["trace_id"]) if len(s["trace_id"]) == 32 else s["trace_id"].encode()
        span.span_id = bytes.fromhex(s["span_id"]) if len(s["span_id"]) == 16 else s["span_id"].encode()
        if s.get("parent"):
            span.parent_span_id = bytes.fromhex(s["parent"])
        span.name = s.get("name", "span")
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + 1_000_000
        for k, v in (s.get("attributes") or {}).items():
            span.attributes.append(KeyValue(key=k, value=value(v)))
    return request.SerializeToString()


def basic(console) -> tuple[str, str]:
    return console["public"], console["secret"]


def test_plain_opentelemetry_exporter_with_genai_attributes(console):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    token = base64.b64encode(f"{console['public']}:{console['secret']}".encode()).decode()
    exporter = OTLPSpanExporter(endpoint=console["url"] + "/api/public/otel/v1/traces",
                                headers={"Authorization": f"Basic {token}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot", "service.version": "1.2.3"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("my-genai-instrumentation")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                             "gen_ai.request.temperature": 0.5, "gen_ai.usage.input_tokens": 1000,
                             "gen_ai.usage.output_tokens": 100, "user.id": "otel-user"})
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    trace = trace_tree(console["stack"], trace_id)
    assert trace["user_id"] == "otel-user" and trace["name"] == "chat gpt-4o" and trace["version"] == "1.2.3"
    (gen,) = trace["observations"]
    assert gen["type"] == "generation" and gen["model"] == "gpt-4o"
    assert gen["usage_details"] == {"input": 1000, "output": 100}
    assert gen["model_parameters"] == {"temperature": 0.5}
    assert gen["level"] == "ERROR" and gen["status_message"] == "rate limited"
    price = PRICES["gpt-4o"]
    assert gen["total_cost"] == pytest.approx(1000 * price["input"] + 100 * price["output"])


def otlp_json(trace_id: str, span_ids: list[str], **attributes) -> dict:
    now = time.time_ns()
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "js"}, "spans": [
        {"traceId": trace_id, "spanId": sid, "name": f"json-{sid}", "startTimeUnixNano": str(now),
         "endTimeUnixNano": str(now + 5_000_000), "status": {"code": 0},
         "attributes": [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
                        for k, v in attributes.items()]}
        for sid in span_ids]}]}]}


@pytest.mark.parametrize("compressed", [False, True])
def test_otlp_json_plain_and_gzip(console, compressed):
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    body = json.dumps(otlp_json(trace_id, [span_id], **{
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-3-5-haiku-20241022",
        "langfuse.observation.usage_details": json.dumps({"input": 10, "output": 20}),
        "langfuse.observation.cost_details": json.dumps({"total": 0.5}),
        "langfuse.trace.tags": '["a", "b"]', "session.id": "s-json"})).encode()
    headers = {"Content-Type": "application/json"}
    if compressed:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = httpx.post(console["url"] + "/api/public/otel/v1/traces", content=body, headers=headers,
                          auth=basic(console))
    assert response.status_code == 200, response.text
    trace = trace_tree(console["stack"], trace_id)
    assert trace["session_id"] == "s-json" and trace["tags"] == ["a", "b"]
    (obs,) = trace["observations"]
    assert obs["id"] == span_id and obs["usage_details"] == {"input": 10, "output": 20}
    assert obs["total_cost"] == 0.5 and obs["cost_details"] == {"total": 0.5}  # provided cost wins


@pytest.mark.parametrize(("content_type", "encoding", "body", "status", "reason"), [
    ("application/x-protobuf", None, b"\xff\xff\xff not protobuf", 400, "not an OTLP protobuf"),
    ("application/json", None, b"{not json", 400, "not OTLP JSON"),
    ("application/json", None, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "x"}]}]}]}',
     400, "not OTLP JSON"),
    ("application/x-protobuf", "gzip", b"\x1f\x8b\x08 truncated gzip", 400, "gzip"),
    ("application/x-protobuf", "br", b"whatever", 400, "unsupported content encoding"),
    ("text/plain", None, b"hello", 415, "unsupported content type"),
    ("", None, b"hello", 415, "unsupported content type"),
])
def test_bad_otlp_bodies_get_4xx_with_the_reason(console, content_type, encoding, body, status, reason):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    before = count(console["stack"], "SELECT count(*) FROM observations")
    response = httpx.post(console["url"] + "/api/public/otel/v1/traces", content=body, headers=headers,
                          auth=basic(console))
    assert response.status_code == status, response.text
    assert reason in response.json()["message"]
    assert count(console["stack"], "SELECT count(*) FROM observations") == before


def test_oversized_bodies_get_413(console):
    from studioops.observability.ingest import MAX_BODY_BYTES

    url = console["url"] + "/api/public/otel/v1/traces"
    big = b"\x00" * (MAX_BODY_BYTES + 1)
    response = httpx.post(url, content=big, headers={"Content-Type": "application/x-protobuf"}, auth=basic(console))
    assert response.status_code == 413 and "limit" in response.json()["message"]
    bomb = gzip.compress(big)  # ~16 KB on the wire, over the limit once inflated
    assert len(bomb) < 100_000
    response = httpx.post(url, content=bomb, headers={"Content-Type": "application/x-protobuf",
                                                      "Content-Encoding": "gzip"}, auth=basic(console))
    assert response.status_code == 413
    response = httpx.post(console["url"] + "/api/public/ingestion", content=big,
                          headers={"Content-Type": "application/json"}, auth=basic(console))
    assert response.status_code == 413


def test_invalid_spans_are_rejected_and_the_valid_ones_stored_whole(console):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    trace_id = uuid.uuid4().hex
    good = [uuid.uuid4().hex[:16] for _ in range(3)]
    spans = [span_dict(trace_id, sid, attributes={"langfuse.observation.input": "\x00nul is dropped"})
             for sid in good]
    spans.append(span_dict("00" * 16, uuid.uuid4().hex[:16]))  # all-zero trace id: invalid in OTLP
    spans.append(span_dict(trace_id, "abc"))  # a span id of 3 bytes
    response = httpx.post(console["url"] + "/api/public/otel/v1/traces", content=otlp_request(spans),
                          headers={"Content-Type": "application/x-protobuf"}, auth=basic(console))
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "invalid trace id" in answer.partial_success.error_message
    stored = count(console["stack"], "SELECT count(*) FROM observations WHERE trace_id = %s", trace_id)
    assert stored == 3
    assert trace_tree(console["stack"], trace_id)["observations"][0]["input"] == "nul is dropped"


def v2_event(kind: str, body: dict, event_id: str | None = None) -> dict:
    return {"id": event_id or uuid.uuid4().hex, "type": kind, "timestamp": "2026-01-01T00:00:00Z", "body": body}


def test_half_bad_v2_batch_stores_the_good_events_and_names_the_bad(console):
    trace_id = f"v2-{uuid.uuid4().hex[:8]}"
    gen_id = uuid.uuid4().hex
    batch = [
        v2_event("trace-create", {"id": trace_id, "name": "v2 trace", "userId": "u2", "tags": ["x"]}, "e-trace"),
        v2_event("generation-create", {"id": gen_id, "traceId": trace_id, "name": "gen", "model": "gpt-4o-mini",
                                       "startTime": "2026-01-01T00:00:01Z",
                                       "usage": {"promptTokens": 100, "completionTokens": 10}}, "e-gen"),
        v2_event("generation-update", {"id": gen_id, "traceId": trace_id, "endTime": "2026-01-01T00:00:02Z",
                                       "output": "answer"}, "e-gen-update"),
        v2_event("span-create", {"id": uuid.uuid4().hex, "traceId": trace_id, "startTime": "yesterday"}, "e-bad-time"),
        v2_event("wat-create", {"id": "1"}, "e-bad-type"),
        v2_event("span-update", {"id": uuid.uuid4().hex}, "e-orphan-update"),  # nothing to update, no trace
        v2_event("score-create", {"traceId": trace_id, "name": "quality", "value": 0.9}, "e-score"),
        "not an event",
    ]
    response = httpx.post(console["url"] + "/api/public/ingestion", json={"batch": batch}, auth=basic(console))
    assert response.status_code == 207
    result = response.json()
    assert {s["id"] for s in result["successes"]} == {"e-trace", "e-gen", "e-gen-update", "e-score"}
    errors = {e["id"]: e for e in result["errors"]}
    assert set(errors) == {"e-bad-time", "e-bad-type", "e-orphan-update", "#7"}
    assert "startTime" in errors["e-bad-time"]["error"] and all(e["status"] == 400 for e in errors.values())
    trace = trace_tree(console["stack"], trace_id)
    assert trace["name"] == "v2 trace" and trace["user_id"] == "u2"
    (gen,) = trace["observations"]
    assert gen["output"] == "answer" and gen["end_time"] is not None and gen["name"] == "gen"
    assert gen["usage_details"] == {"input": 100, "output": 10}
    price = PRICES["gpt-4o-mini"]
    assert gen["total_cost"] == pytest.approx(100 * price["input"] + 10 * price["output"])
    assert [s["name"] for s in trace["scores"]] == ["quality"]


# The design document's ObservabilityService (SDK v2 style), as written there except for the usage keys: SDK v2
# accepts {input, output} (or OpenAI's names) and refuses {input_tokens, output_tokens} before sending anything.
DESIGN_DOC_SERVICE = textwrap.dedent("""
    import os
    from langfuse import Langfuse

    class ObservabilityService:
        def __init__(self):
            self.langfuse = Langfuse(
                public_key=os.getenv('LANGFUSE_PUBLIC_KEY'),
                secret_key=os.getenv('LANGFUSE_SECRET_KEY'),
                host=os.getenv('LANGFUSE_HOST', 'http://localhost:3100')
            )
            self.enabled = bool(os.getenv('LANGFUSE_PUBLIC_KEY'))

        def trace_llm_call(self, trace_id: str, input_text: str, output_text: str, model: str):
            if not self.enabled:
                return
            self.langfuse.generation(
                id=f"{trace_id}-generation",
                trace_id=trace_id,
                name="llm_generation",
                model=model,
                input=input_text,
                output=output_text,
                usage={
                    "input": len(input_text.split()),
                    "output": len(output_text.split())
                }
            )

    import sys
    service = ObservabilityService()
    service.trace_llm_call(sys.argv[1], "What is the budget of the summer campaign?", "96,950 USD", "gpt-4o-mini")
    service.langfuse.flush()
""")


@pytest.fixture(scope="session")
def sdk_v2_python(tmp_path_factory) -> Path:
    """A virtual environment with the Langfuse SDK v2 (from PyPI), made once per test session."""
    venv = tmp_path_factory.mktemp("langfuse-v2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "langfuse<3"], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.skip(f"the Langfuse SDK v2 could not be installed from PyPI: {done.stderr.strip()[-300:]}")
    return python


def test_sdk_v2_design_document_code_is_stored(console, sdk_v2_python, tmp_path):
    script = tmp_path / "design_doc_service.py"
    script.write_text(DESIGN_DOC_SERVICE)
    trace_id = f"design-doc-{uuid.uuid4().hex[:8]}"
    env = {"PATH": os.environ["PATH"], "LANGFUSE_PUBLIC_KEY": console["public"],
           "LANGFUSE_SECRET_KEY": console["secret"], "LANGFUSE_HOST": console["url"]}
    done = subprocess.run([str(sdk_v2_python), str(script), trace_id], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr
    trace = trace_tree(console["stack"], trace_id)
    (gen,) = trace["observations"]
    assert gen["id"] == f"{trace_id}-generation" and gen["type"] == "generation" and gen["model"] == "gpt-4o-mini"
    assert gen["input"] == "What is the budget of the summer campaign?" and gen["output"] == "96,950 USD"
    assert gen["usage_details"] == {"input": 8, "output": 2}
    price = PRICES["gpt-4o-mini"]
    assert gen["total_cost"] == pytest.approx(8 * price["input"] + 2 * price["output"])


def test_bad_v2_envelopes_get_400(console):
    url = console["url"] + "/api/public/ingestion"
    for body in [b"not json", b'{"no_batch": []}', b"[1, 2]", b"[" * 100_000]:
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, auth=basic(console))
        assert response.status_code == 400, (body[:20], response.text)
        assert response.json()["message"]


# -- ObservabilityService and the console ------------------------------------------------------------------------
def test_service_exporting_to_the_console_stores_each_call_once(console):
    from studioops.config import Settings
    from studioops.observability import ObservabilityService, langfuse_trace_id

    settings = Settings(_env_file=None, **{**console["stack"].settings.model_dump(),
                                           "langfuse_public_key": console["public"],
                                           "langfuse_secret_key": console["secret"]})
    service = ObservabilityService(settings)
    assert [s.name for s in service.sinks] == ["local", "langfuse"]
    caller_id = f"once-{uuid.uuid4().hex[:8]}"
    service.trace_llm_call(caller_id, "Summarise the brief", "A summer campaign.", "gpt-4o-mini",
                           input_tokens=120, output_tokens=9, latency_ms=800)
    assert service.flush(15)
    service.shutdown()
    assert service.stats().failures == {"local": 0, "langfuse": 0}
    trace_id = langfuse_trace_id(caller_id)

    def exported() -> bool:  # the console's copy has arrived (only the Langfuse path sends this key)
        return count(console["stack"], "SELECT count(*) FROM observations WHERE trace_id = %s "
                                       "AND metadata ? 'studioops_observation_id'", trace_id) > 0

    assert wait_until(exported, 10, 0.1)
    assert count(console["stack"], "SELECT count(*) FROM observations WHERE trace_id = %s", trace_id) == 1
    assert count(console["stack"], "SELECT count(*) FROM traces WHERE id = %s", trace_id) == 1
    (gen,) = trace_tree(console["stack"], trace_id)["observations"]
    assert gen["usage_details"] == {"input": 120, "output": 9} and gen["total_cost"] > 0


def test_service_drops_and_counts_rather_than_blocks_when_the_store_is_down(running_stack):
    from studioops.config import Settings
    from studioops.observability import ObservabilityService
    from studioops.stack.process import free_port

    base = running_stack.settings.model_dump()
    base.update(database_url=f"postgresql://studioops:x@127.0.0.1:{free_port()}/studioops",
                langfuse_public_key="", langfuse_secret_key="")
    service = ObservabilityService(Settings(_env_file=None, **base), queue_size=50)
    started = time.perf_counter()
    for i in range(200):
        service.trace_llm_call(f"down-{i}", "q", "a", "gpt-4o", input_tokens=1, output_tokens=1)
    assert time.perf_counter() - started < 0.5  # the caller never waits for the store
    service.flush(15)
    service.shutdown()
    stats = service.stats()
    assert stats.enqueued + stats.dropped == 200
    assert stats.failures["local"] == stats.enqueued > 0


# -- the console service -----------------------------------------------------------------------------------------
def console_state(stack) -> dict:
    status = json.loads(stack.cli("status", "--json").stdout)
    return next(s for s in status["services"] if s["name"] == "console")


def test_console_lifecycle_status_logs_down_and_stale_pid(fresh_stack):
    import signal
    import stat

    up = fresh_stack.cli("up")
    assert up.returncode == 0, up.stderr
    port = fresh_stack.settings.langfuse_host.rsplit(":", 1)[1]
    assert "started" in up.stdout and "console" in up.stdout
    public, secret = development_keys(fresh_stack.settings, create=False)
    assert f"LANGFUSE_PUBLIC_KEY={public}" in up.stdout and f"LANGFUSE_SECRET_KEY={secret}" in up.stdout
    state = console_state(fresh_stack)
    assert state["state"] == "running" and state["address"] == f"127.0.0.1:{port}"
    pid = state["pid"]
    for path in (fresh_stack.home / "console" / "keys.json", fresh_stack.home / "console" / "console.log"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((fresh_stack.home / "console").stat().st_mode) == 0o700
    # Loopback only, and nothing but the health probe without credentials.
    assert httpx.get(f"http://127.0.0.1:{port}/api/public/health").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/api/public/projects").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/api/traces").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/api/traces", auth=(public, secret)).status_code == 200
    logs = fresh_stack.cli("logs", "console")
    assert logs.returncode == 0 and "Uvicorn running" in logs.stdout
    again = fresh_stack.cli("up")
    assert again.returncode == 0 and console_state(fresh_stack)["pid"] == pid  # already running: left alone

    # Killed hard: the pid file is stale, and the next `up` starts a new console.
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: console_state(fresh_stack)["state"] == "stopped", 10, 0.1)
    up = fresh_stack.cli("up")
    assert up.returncode == 0, up.stderr
    new_pid = console_state(fresh_stack)["pid"]
    assert new_pid and new_pid != pid

    down = fresh_stack.cli("down")
    assert down.returncode == 0 and "console" in down.stdout
    assert console_state(fresh_stack)["state"] == "stopped"
    assert not (fresh_stack.home / "run" / "console.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/api/public/health", timeout=1)
    # A pid file naming an unrelated live process (a reused PID after a reboot) is not our console.
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        (fresh_stack.home / "run" / "console.json").write_text(json.dumps({"pid": unrelated.pid, "port": port}))
        assert console_state(fresh_stack)["state"] == "stopped"
        up = fresh_stack.cli("up")
        assert up.returncode == 0, up.stderr
        assert console_state(fresh_stack)["pid"] not in (None, unrelated.pid)
        assert unrelated.poll() is None  # left alone
    finally:
        unrelated.kill()


def test_console_port_in_use_is_one_line_naming_langfuse_host(fresh_stack):
    from tests.conftest import port_taken

    port = int(fresh_stack.settings.langfuse_host.rsplit(":", 1)[1])
    with port_taken(port):
        result = fresh_stack.cli("up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studioops: "), result.stderr
    assert f"port {port}" in lines[0] and "LANGFUSE_HOST" in lines[0]


def test_no_console_for_a_remote_langfuse_host(fresh_stack):
    fresh_stack.env["LANGFUSE_HOST"] = "https://cloud.langfuse.com"
    up = fresh_stack.cli("up")
    assert up.returncode == 0, up.stderr
    state = console_state(fresh_stack)
    assert state["state"] == "external" and state["pid"] is None
    assert not (fresh_stack.home / "run" / "console.json").exists()


def test_console_with_a_relative_home_accepts_the_keys_up_printed(fresh_stack):
    """STUDIOOPS_HOME is relative (the default, ./.studioops): the console, running in a directory of its own,
    must still use the same home, and so the same development keys."""
    relative = {"STUDIOOPS_HOME": "."}  # `cli` runs in the stack's home
    try:
        up = fresh_stack.cli("up", env=relative)
        assert up.returncode == 0, up.stderr
        public = up.stdout.split("LANGFUSE_PUBLIC_KEY=")[1].split()[0]
        secret = up.stdout.split("LANGFUSE_SECRET_KEY=")[1].split()[0]
        response = httpx.get(fresh_stack.settings.langfuse_host + "/api/public/projects", auth=(public, secret))
        assert response.status_code == 200, response.text
        assert not (fresh_stack.home / "console" / "console").exists()
    finally:
        fresh_stack.cli("down", env=relative)
