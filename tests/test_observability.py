"""LLM tracing: the real Langfuse SDK against a local OTLP receiver, the local trace store (traces and
observations; `llm_traces` is a view over them since 003), `studioops traces`, and the store-once rule."""

from __future__ import annotations

import json
import logging
import threading
import uuid

import psycopg
import pytest

from studioops.config import Settings
from studioops.observability import ObservabilityService, TraceRecord, langfuse_trace_id
from studioops.observability.tokens import count_tokens
from studioops.stack.process import free_port, wait_until
from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def settings_for(stack=None, **overrides) -> Settings:
    base = stack.settings.model_dump() if stack else {}
    # A fresh public key per service: the SDK shares its exporter between clients with the same key.
    base.update({"langfuse_public_key": "", "langfuse_secret_key": ""})
    base.update(overrides)
    return Settings(_env_file=None, **base)


def lf(url: str, **overrides) -> dict:
    return {"langfuse_public_key": f"pk-lf-{uuid.uuid4().hex[:8]}", "langfuse_secret_key": "sk-lf-test-secret",
            "langfuse_host": url, **overrides}


def rows_for(stack, trace_ids: list[str]) -> dict[str, tuple]:
    with psycopg.connect(stack.url) as conn:
        rows = conn.execute(
            "SELECT trace_id, langfuse_trace_id, model, input, output, input_tokens, output_tokens, usage_source, "
            "status, error, latency_ms, metadata FROM llm_traces WHERE trace_id = ANY(%s)", (trace_ids,)
        ).fetchall()
    return {r[0]: r for r in rows}


def test_langfuse_sdk_sends_model_usage_input_output_and_trace_id(receiver):
    settings = settings_for(**lf(receiver.url), observability_local_store=False)
    service = ObservabilityService(settings)
    assert service.enabled
    hex_id = uuid.uuid4().hex
    service.trace_llm_call("chat-42/turn-1", "What is the budget?", "96,950 USD", "gpt-4o-mini",
                           input_tokens=17, output_tokens=5, metadata={"project": "summer"})
    service.trace_llm_call(hex_id, "hi", "hello", "claude-sonnet", input_tokens=1, output_tokens=1)
    assert service.flush(15)
    service.shutdown()

    assert receiver.requests and all(r["path"] == "/api/public/otel/v1/traces" for r in receiver.requests)
    assert receiver.requests[0]["auth"] == f"{settings.langfuse_public_key}:sk-lf-test-secret"
    assert receiver.requests[0]["content_type"] == "application/x-protobuf"
    by_trace = {s["trace_id"]: s for s in receiver.spans}
    first = by_trace[langfuse_trace_id("chat-42/turn-1")]
    attrs = first["attributes"]
    assert attrs["langfuse.observation.type"] == "generation"
    assert attrs["langfuse.observation.model.name"] == "gpt-4o-mini"
    assert json.loads(attrs["langfuse.observation.usage_details"]) == {"input": 17, "output": 5}
    assert attrs["langfuse.observation.input"] == "What is the budget?"
    assert attrs["langfuse.observation.output"] == "96,950 USD"
    assert json.loads(attrs["langfuse.observation.metadata.studioops_trace_id"]) == "chat-42/turn-1"
    assert json.loads(attrs["langfuse.observation.metadata.project"]) == "summer"
    # A caller id already in Langfuse's format is kept as is; others map deterministically.
    assert hex_id in by_trace
    assert langfuse_trace_id("chat-42/turn-1") == langfuse_trace_id("chat-42/turn-1") != langfuse_trace_id("x")
    assert len(langfuse_trace_id("chat-42/turn-1")) == 32


def test_errors_reach_langfuse_as_error_level(receiver):
    service = ObservabilityService(settings_for(**lf(receiver.url), observability_local_store=False))
    with pytest.raises(TimeoutError), service.trace_call(model="gpt-4o", input_text="slow question",
                                                         trace_id="err-1"):
        raise TimeoutError("provider timed out")
    service.flush(15)
    service.shutdown()
    (span,) = [s for s in receiver.spans if s["trace_id"] == langfuse_trace_id("err-1")]
    assert span["attributes"]["langfuse.observation.level"] == "ERROR"
    assert "provider timed out" in span["attributes"]["langfuse.observation.status_message"]


def test_langfuse_down_never_breaks_the_caller_and_failures_are_counted(running_stack, caplog):
    closed = f"http://127.0.0.1:{free_port()}"
    service = ObservabilityService(settings_for(running_stack, **lf(closed)))
    ids = [f"down-{uuid.uuid4().hex[:8]}-{i}" for i in range(300)]
    with caplog.at_level(logging.WARNING, logger="studioops.observability"):
        for trace_id in ids:
            service.trace_llm_call(trace_id, "q", "a", "gpt-4o", input_tokens=1, output_tokens=1)
        assert service.stats().enqueued == 300 and service.stats().dropped == 0
        service.flush(30)
        assert wait_until(lambda: service.stats().failures["langfuse"] > 0, 30, 0.2)
        service.shutdown()
    warnings = [r for r in caplog.records if "langfuse" in r.getMessage()]
    assert len(warnings) == 1  # logged once, then counted silently
    assert len(rows_for(running_stack, ids)) == 300  # the local store is unaffected


def test_local_store_rows_match_the_calls(running_stack):
    service = ObservabilityService(settings_for(running_stack))
    assert not service.enabled and [s.name for s in service.sinks] == ["local"]  # no keys: Langfuse disabled
    tag = uuid.uuid4().hex[:8]
    service.trace_llm_call(f"{tag}-a", "Summarise the brief", "A summer campaign.", "gpt-4o-mini",
                           input_tokens=120, output_tokens=9, latency_ms=812.5, metadata={"project": "summer"})
    with service.trace_call(model="gpt-4o", input_text="Draft a quote", trace_id=f"{tag}-b") as call:
        call.output = "Quote Q-1: 1,000 USD"
        call.usage(input_tokens=40, output_tokens=12)
    with pytest.raises(ValueError), service.trace_call(model="gpt-4o", input_text="bad", trace_id=f"{tag}-c"):
        raise ValueError("invalid response")
    service.trace_llm_call(f"{tag}-d", "tokenization is estimated offline", "indeed", "local-llm")
    assert service.flush(15)
    service.shutdown()

    rows = rows_for(running_stack, [f"{tag}-{x}" for x in "abcd"])
    a, b, c, d = (rows[f"{tag}-{x}"] for x in "abcd")
    assert a[1] == langfuse_trace_id(f"{tag}-a")
    assert a[2:10] == ("gpt-4o-mini", "Summarise the brief", "A summer campaign.", 120, 9, "provider", "ok", None)
    assert a[10] == pytest.approx(812.5) and a[11]["project"] == "summer"
    assert b[2] == "gpt-4o" and b[4] == "Quote Q-1: 1,000 USD" and b[5:8] == (40, 12, "provider")
    assert b[10] is not None and b[10] >= 0
    assert c[8] == "error" and c[9] == "ValueError: invalid response"
    # No usage given: a real tokenizer's count, not a word count.
    assert d[7] == "estimate"
    words = ["tokenization", "is", "estimated", "offline"]
    assert d[5] == count_tokens(" ".join(words)) != len(words)
    assert d[6] == count_tokens("indeed")


def test_decorator_records_provider_usage(running_stack):
    service = ObservabilityService(settings_for(running_stack))

    @service.observe(model="gpt-4o-mini")
    def complete(prompt: str) -> dict:
        return {"text": prompt.upper(), "usage": {"prompt_tokens": 11, "completion_tokens": 4}}

    assert complete("decorated call " + uuid.uuid4().hex)["text"].startswith("DECORATED")
    service.flush(15)
    service.shutdown()
    with psycopg.connect(running_stack.url) as conn:
        row = conn.execute("SELECT name, input_tokens, output_tokens, usage_source FROM llm_traces "
                           "WHERE name = 'complete' ORDER BY created_at DESC LIMIT 1").fetchone()
    assert row == ("complete", 11, 4, "provider")


class BlockingSink:
    """Holds the worker inside write() so the bounded queue can be filled deterministically."""

    name = "blocking"
    failures = 0

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records: list[TraceRecord] = []

    def write(self, batch):
        self.entered.set()
        self.release.wait(10)
        self.records.extend(batch)

    def flush(self, timeout):
        pass

    def close(self, timeout):
        pass


def test_full_queue_drops_and_counts(running_stack):
    sink = BlockingSink()
    service = ObservabilityService(settings_for(running_stack), sinks=[sink], queue_size=5)
    service.trace_llm_call("first", "q", "a", "m", input_tokens=1, output_tokens=1)
    assert sink.entered.wait(5)
    for i in range(20):
        service.trace_llm_call(f"t{i}", "q", "a", "m", input_tokens=1, output_tokens=1)
    stats = service.stats()
    assert stats.enqueued == 6 and stats.dropped == 15
    sink.release.set()
    service.flush(10)
    service.shutdown()
    assert [r.trace_id for r in sink.records] == ["first", "t0", "t1", "t2", "t3", "t4"]


def test_traces_command_and_metrics_read_the_trace_store(running_stack):
    service = ObservabilityService(settings_for(running_stack))
    tag = uuid.uuid4().hex[:8]
    service.trace_llm_call(f"{tag}-ok", "q", "a", "gpt-4o", input_tokens=3000, output_tokens=200,
                           metadata={"user": "u"})
    service.trace_llm_call(f"{tag}-err", "q", None, "no-such-model", input_tokens=5, output_tokens=0,
                           status="error", error="RateLimitError")
    service.flush(15)
    service.shutdown()
    ok_id, err_id = langfuse_trace_id(f"{tag}-ok"), langfuse_trace_id(f"{tag}-err")
    listed = running_stack.cli("traces", "--limit", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    by_id = {t["id"]: t for t in page["traces"]}
    assert set(by_id) == {ok_id, err_id}
    ok, err = by_id[ok_id], by_id[err_id]
    assert (ok["input_tokens"], ok["output_tokens"], ok["level"], ok["observation_count"]) == (3000, 200, "DEFAULT", 1)
    from studioops.observability.prices import price_table

    expected = price_table(None).cost("gpt-4o", {"input": 3000, "output": 200})["total"]
    assert ok["total_cost"] == pytest.approx(expected)
    assert err["level"] == "ERROR" and err["total_cost"] is None  # unknown model: no cost, never a guess
    for name in ("id", "name", "user_id", "session_id", "tags", "timestamp", "latency_ms", "input_tokens",
                 "output_tokens", "total_cost", "level", "observation_count"):
        assert name in ok
    errors_only = json.loads(running_stack.cli("traces", "--level", "error", "--since", "1h", "--json").stdout)
    assert err_id in {t["id"] for t in errors_only["traces"]} and ok_id not in {t["id"] for t in errors_only["traces"]}
    by_model = json.loads(running_stack.cli("traces", "--model", "no-such-model", "--json").stdout)
    assert [t["id"] for t in by_model["traces"]][:1] == [err_id]
    text = running_stack.cli("traces", "--limit", "2")
    assert text.returncode == 0 and ok_id in text.stdout

    metrics = json.loads(running_stack.cli("metrics", "--json").stdout)["observability"]
    with psycopg.connect(running_stack.url) as conn:
        total = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        errors = conn.execute("SELECT count(DISTINCT trace_id) FROM observations WHERE level = 'ERROR'").fetchone()[0]
        unpriced = conn.execute("SELECT count(*) FROM observations WHERE model IS NOT NULL AND total_cost IS NULL "
                                "AND usage_details <> '{}'").fetchone()[0]
    assert metrics["traces_count"] == total
    assert metrics["error_rate"] == pytest.approx(errors / total, abs=1e-6)
    assert metrics["unpriced_observations"] == unpriced >= 1
    models = {m["model"]: m for m in metrics["models"]}
    assert models["gpt-4o"]["input_tokens"] >= 3000 and models["gpt-4o"]["cost"] >= expected


def test_traces_show_prints_the_tree(running_stack):
    from datetime import UTC, datetime, timedelta

    from studioops.observability.prices import price_table
    from studioops.observability.rows import Batch, ObservationRow, TraceRow
    from studioops.observability.writer import write_batch

    trace_id, t0 = uuid.uuid4().hex, datetime.now(UTC)
    batch = Batch(traces=[TraceRow(id=trace_id, timestamp=t0, name="tree", tags=["t"])], observations=[
        ObservationRow(id=f"{trace_id}-root", trace_id=trace_id, type="agent", name="agent", start_time=t0,
                       end_time=t0 + timedelta(seconds=2)),
        ObservationRow(id=f"{trace_id}-tool", trace_id=trace_id, type="tool", name="search", start_time=t0,
                       parent_observation_id=f"{trace_id}-root", input={"q": "x"}, output=["r"]),
        ObservationRow(id=f"{trace_id}-gen", trace_id=trace_id, type="generation", name="answer",
                       start_time=t0 + timedelta(seconds=1), parent_observation_id=f"{trace_id}-root",
                       model="gpt-4o-mini", usage_details={"input": 10, "output": 5}),
    ])
    with psycopg.connect(running_stack.url, autocommit=True) as conn:
        write_batch(conn, batch, price_table(None))
    shown = running_stack.cli("traces", "show", trace_id, "--json")
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    (root,) = tree["observations"]
    assert root["name"] == "agent" and [c["name"] for c in root["observations"]] == ["search", "answer"]
    tool, gen = root["observations"]
    assert tool["parent_observation_id"] == root["id"] and tool["input"] == {"q": "x"} and tool["output"] == ["r"]
    assert gen["usage_details"] == {"input": 10, "output": 5} and gen["total_cost"] > 0
    text = running_stack.cli("traces", "show", trace_id)
    lines = text.stdout.splitlines()
    agent_line = next(line for line in lines if "agent" in line and "│" in line)
    search_line = next(line for line in lines if "search" in line)
    assert search_line.index("search") > agent_line.index("agent")  # indented under its parent
    missing = running_stack.cli("traces", "show", "no-such-trace")
    assert missing.returncode == 1 and missing.stderr.startswith("studioops: no trace with id")
    bad = running_stack.cli("traces", "--since", "soon")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and bad.stderr.startswith("studioops:")


def test_health_checks_langfuse_when_configured(running_stack, receiver):
    ok = running_stack.cli("health", "--json", env={"LANGFUSE_PUBLIC_KEY": "pk-lf-h", "LANGFUSE_SECRET_KEY": "sk-lf-h",
                                                    "LANGFUSE_HOST": receiver.url})
    body = json.loads(ok.stdout)
    assert ok.returncode == 0 and body["observability"]["status"] == "healthy"
    assert body["observability"]["details"]["traces_count"] >= 0
    closed = f"http://127.0.0.1:{free_port()}"
    down = running_stack.cli("health", "--json", env={"LANGFUSE_PUBLIC_KEY": "pk-lf-h", "LANGFUSE_SECRET_KEY": "sk",
                                                      "LANGFUSE_HOST": closed})
    assert down.returncode == 1 and json.loads(down.stdout)["overall"] == "degraded"
    assert "sk" not in json.loads(down.stdout)["observability"].get("error", "").split()


def test_user_prices_add_models_and_override_defaults(running_stack, tmp_path):
    from studioops.errors import ConfigError
    from studioops.observability.prices import PriceTable

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps([
        {"model_name": "studio-llm", "match_pattern": "(?i)^(studio/)?studio-llm(-\\d+)?$",
         "prices": {"input": 0.001, "output": 0.002}},
        {"model_name": "gpt-4o-mini", "prices": {"input": 0.5, "output": 1.0}},  # no pattern: the exact name
    ]))
    service = ObservabilityService(settings_for(running_stack, observability_prices_file=str(prices)))
    tag = uuid.uuid4().hex[:8]
    service.trace_llm_call(f"{tag}-own", "q", "a", "Studio/Studio-LLM-2", input_tokens=100, output_tokens=10)
    service.trace_llm_call(f"{tag}-override", "q", "a", "gpt-4o-mini", input_tokens=2, output_tokens=1)
    service.trace_llm_call(f"{tag}-default", "q", "a", "gpt-4o", input_tokens=1000, output_tokens=0)
    assert service.flush(15)
    service.shutdown()
    with psycopg.connect(running_stack.url) as conn:
        costs = dict(conn.execute(
            "SELECT t.metadata ->> 'studioops_trace_id', o.total_cost FROM observations o JOIN traces t "
            "ON t.id = o.trace_id WHERE t.metadata ->> 'studioops_trace_id' LIKE %s", (f"{tag}-%",)).fetchall())
    assert float(costs[f"{tag}-own"]) == pytest.approx(100 * 0.001 + 10 * 0.002)
    assert float(costs[f"{tag}-override"]) == pytest.approx(2 * 0.5 + 1 * 1.0)
    assert float(costs[f"{tag}-default"]) == pytest.approx(1000 * PriceTable().find("gpt-4o").prices["input"])
    bad = tmp_path / "bad.json"
    bad.write_text('[{"model_name": "x", "match_pattern": "(unclosed", "prices": {}}]')
    with pytest.raises(ConfigError, match="not a price table"):
        PriceTable(bad)


def test_migration_003_moves_llm_traces_rows_into_the_trace_store(scratch_db, tmp_path):
    import shutil

    from studioops.config import PACKAGE_MIGRATIONS_DIR, parse_database_url
    from studioops.db.migrate import Migrator

    old = tmp_path / "migrations"
    old.mkdir()
    for name in ("001_initial_schema.sql", "002_llm_traces.sql"):
        shutil.copy(PACKAGE_MIGRATIONS_DIR / name, old / name)
    db = parse_database_url(scratch_db)
    Migrator(db, old).migrate()
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        for trace_id, status, started, tokens in [("chat-1", "ok", "2026-01-01T10:00:00Z", (10, 2)),
                                                  ("chat-1", "error", "2026-01-01T10:00:05Z", (None, None)),
                                                  ("chat-2", "ok", "2026-01-02T10:00:00Z", (7, 3))]:
            conn.execute(
                "INSERT INTO llm_traces (trace_id, langfuse_trace_id, name, model, input, output, input_tokens, "
                "output_tokens, latency_ms, status, error, metadata, started_at) VALUES (%s, %s, 'llm_generation', "
                "'gpt-4o', 'q', 'a', %s, %s, 1500, %s, %s, '{\"project\": \"p\"}', %s)",
                (trace_id, langfuse_trace_id(trace_id), *tokens, status, "boom" if status == "error" else None,
                 started))
    shutil.copy(PACKAGE_MIGRATIONS_DIR / "003_trace_store.sql", old / "003_trace_store.sql")
    assert Migrator(db, old).migrate() == ["003_trace_store.sql"]
    with psycopg.connect(scratch_db) as conn:
        traces = conn.execute("SELECT id, name, metadata ->> 'studioops_trace_id', timestamp FROM traces "
                              "ORDER BY timestamp").fetchall()
        obs = conn.execute("SELECT trace_id, type, model, input, usage_details, level, status_message, "
                           "end_time - start_time, metadata ->> 'project' FROM observations "
                           "ORDER BY start_time").fetchall()
        view = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM llm_traces").fetchone()
    assert [(t[0], t[2]) for t in traces] == [(langfuse_trace_id("chat-1"), "chat-1"),
                                              (langfuse_trace_id("chat-2"), "chat-2")]
    assert traces[0][3].isoformat().startswith("2026-01-01T10:00:00")
    assert len(obs) == 3 and all(o[1] == "generation" and o[2] == "gpt-4o" and o[3] == "q" for o in obs)
    assert obs[0][4] == {"input": 10, "output": 2, "total": 12} and obs[0][5] == "DEFAULT"
    assert obs[1][4] == {} and obs[1][5] == "ERROR" and obs[1][6] == "boom"
    assert obs[0][7].total_seconds() == 1.5 and obs[0][8] == "p"
    assert view == (3, 1)  # the old name still reads
