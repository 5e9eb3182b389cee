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
from studioops.observability.prices import DEFAULT_PRICES, PriceTable
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
        with propagate_attributes(user_id=f"user-{tag}", session_id=f"session-{tag}", tags=["summer", tag],
                                  trace_name=f"chat-{tag}"):
            with client.start_as_current_observation(name="retrieve", as_type="span") as retrieve:
                retrieve.update(output={"documents": 3})
                with client.start_as_current_observation(
                        name="answer", as_type="generation", model="gpt-4o-mini",
                        model_parameters={"temperature": 0.2},
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
    client = sdk_client(console, public=f"pk-lf-{uuid.uuid4().hex[:8]}")
    assert not client.auth_check()
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
