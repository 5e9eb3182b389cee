"""The API against the real embedded stack: health, readiness, liveness, Prometheus metrics, OpenAPI fuzzing."""

from __future__ import annotations

import os
import time

import httpx
import psycopg
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from studioops.api import create_app
from studioops.config import Settings
from studioops.stack.postgres import EmbeddedPostgres
from studioops.stack.process import wait_until
from studioops.stack.seaweed import EmbeddedS3
from tests.conftest import LATEST_MIGRATION, ApiServer

# The schema needs no running services: FastAPI builds it from the routes.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthy_stack(api_server):
    r = httpx.get(api_server.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["overall"] == "healthy"
    assert body["database"]["status"] == "healthy" and body["database"]["service"] == "postgresql"
    assert body["storage"]["status"] == "healthy"
    assert body["observability"]["status"] == "disabled"  # no Langfuse keys: not a degradation
    for check in ("database", "storage", "observability"):
        assert {"status", "service", "latency_ms", "details"} <= set(body[check])
    assert httpx.get(api_server.url + "/livez").json() == {"status": "ok"}
    ready = httpx.get(api_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["migration_head"] == LATEST_MIGRATION


def test_metrics_parse_and_match_what_is_there(api_server, running_stack):
    time.sleep(1.1)  # past the metrics cache
    text = httpx.get(api_server.url + "/metrics").text
    values = samples(text)
    with psycopg.connect(running_stack.url) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    reported = values[("studioops_db_size_bytes", ())]
    assert abs(reported - size) <= 64 * 1024, (reported, size)
    listed_at = time.monotonic()
    usage = {u.bucket: u for u in running_stack.storage().usage()}

    def listed_since() -> bool:  # bucket figures come from a background listing: wait for one after ours
        nonlocal values
        values = samples(httpx.get(api_server.url + "/metrics").text)
        return values[("studioops_storage_usage_age_seconds", ())] < time.monotonic() - listed_at

    assert wait_until(listed_since, 15, interval=0.5)
    for bucket, u in usage.items():
        assert values[("studioops_storage_bucket_objects", (("bucket", bucket),))] == u.objects
        assert values[("studioops_storage_bucket_bytes", (("bucket", bucket),))] == u.bytes
    assert values[("studioops_db_up", ())] == 1
    assert 0 <= values[("studioops_db_cache_hit_ratio", ())] <= 1
    assert values[("studioops_disk_free_bytes", ())] > 0
    assert any(name == "studioops_http_requests_total" and dict(labels).get("route") == "/health"
               for name, labels in values)
    assert any(name == "studioops_http_request_duration_seconds_bucket" for name, _ in values)
    with psycopg.connect(running_stack.url) as conn:
        traces = conn.execute("SELECT count(*) FROM llm_traces").fetchone()[0]
    assert values[("studioops_traces", ())] == traces


def test_bucket_figures_match_what_the_test_put_there(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    storage = fresh_stack.storage()
    sizes = [1000, 2500, 4096, 1, 77_777]
    for i, n in enumerate(sizes):
        storage.put_bytes("generated", f"reports/r{i}.bin", os.urandom(n))
    server = ApiServer(fresh_stack)
    try:
        key = ("studioops_storage_bucket_objects", (("bucket", "generated"),))

        def listed() -> bool:  # the first background listing may finish after the first scrape
            nonlocal values
            values = samples(httpx.get(server.url + "/metrics").text)
            return key in values

        values: dict = {}
        assert wait_until(listed, 15, interval=0.3)
        assert values[key] == len(sizes)
        assert values[("studioops_storage_bucket_folders", (("bucket", "generated"),))] == 2  # reports/, pdfs/
        assert values[("studioops_storage_bucket_bytes", (("bucket", "generated"),))] == sum(sizes)
        doc = httpx.get(server.url + "/metrics.json").json()
        generated = next(b for b in doc["storage"]["minio_usage"] if b["bucket"] == "generated")
        assert generated == {"bucket": "generated", "objects": len(sizes), "bytes": sum(sizes), "folders": 2}
        # No trace yet: a count of zero, and an error rate that is unavailable rather than a made-up 0.
        assert doc["observability"]["traces_count"] == 0 and doc["observability"]["error_rate"] is None
    finally:
        server.stop()


def test_database_outage_and_recovery_without_restarting_the_api(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    server = ApiServer(fresh_stack)
    try:
        assert httpx.get(server.url + "/health").status_code == 200
        EmbeddedPostgres(fresh_stack.settings).stop()
        time.sleep(1.1)  # past the 1 s health cache
        began = time.monotonic()
        r = httpx.get(server.url + "/health", timeout=10)
        assert time.monotonic() - began < 3.0  # bounded by the 2 s check timeout
        assert r.status_code == 503 and r.json()["overall"] == "unhealthy"
        assert "error" in r.json()["database"]
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 503
        assert httpx.get(server.url + "/livez").status_code == 200

        EmbeddedPostgres(fresh_stack.settings).start()

        def healthy() -> bool:
            return httpx.get(server.url + "/health", timeout=10).json()["overall"] == "healthy"

        assert wait_until(healthy, 20, interval=0.5)
        assert wait_until(lambda: httpx.get(server.url + "/readyz", timeout=10).status_code == 200, 10, 0.5)

        EmbeddedS3(fresh_stack.settings).stop()
        time.sleep(1.1)
        r = httpx.get(server.url + "/health", timeout=10)
        assert r.status_code == 200 and r.json()["overall"] == "degraded"
        assert r.json()["storage"]["status"] == "degraded"
    finally:
        server.stop()


def test_readyz_waits_for_pending_migrations(fresh_stack, tmp_path):
    import shutil

    from studioops.config import PACKAGE_MIGRATIONS_DIR

    assert fresh_stack.cli("up").returncode == 0
    migrations = tmp_path / "migrations"
    shutil.copytree(PACKAGE_MIGRATIONS_DIR, migrations)
    (migrations / "999_later.sql").write_text("CREATE TABLE later (id int);\n")
    fresh_stack.env["STUDIOOPS_MIGRATIONS_DIR"] = str(migrations)
    server = ApiServer(fresh_stack)
    try:
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and r.json()["pending"] == ["999_later.sql"]
        assert fresh_stack.cli("db", "migrate").returncode == 0
        assert wait_until(lambda: httpx.get(server.url + "/readyz").status_code == 200, 5, 0.3)
    finally:
        server.stop()


def test_cli_health_exit_codes(fresh_stack):
    down = fresh_stack.cli("health", "--json")
    assert down.returncode == 2  # nothing runs: the database is down
    assert fresh_stack.cli("up").returncode == 0
    ok = fresh_stack.cli("health")
    assert ok.returncode == 0 and "overall: healthy" in ok.stdout
    EmbeddedS3(fresh_stack.settings).stop()
    degraded = fresh_stack.cli("health", "--json")
    assert degraded.returncode == 1


def test_cli_metrics_json(running_stack):
    import json

    result = running_stack.cli("metrics", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["database"]["size"] > 0
    assert data["database"]["queries_per_second"] is not None  # measured over a short window
    assert {b["bucket"] for b in data["storage"]["minio_usage"]} >= {"documents", "uploads", "generated", "backups"}


def test_api_port_in_use_is_one_line(running_stack, api_server):
    result = running_stack.cli("api", "--port", str(api_server.port))
    assert result.returncode == 1 and f"port {api_server.port}" in result.stderr and "--port" in result.stderr


@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz_finds_no_server_error(case, api_server):
    response = case.call(base_url=api_server.url)
    assert response.status_code < 500, (case.path, response.status_code, response.text[:200])


def unmatched_requests(api_server) -> float:
    values = samples(httpx.get(api_server.url + "/metrics").text)
    return sum(v for (name, labels), v in values.items()
               if name == "studioops_http_requests_total" and dict(labels).get("route") == "unmatched")


def test_docs_are_served_offline_and_counted_by_route(api_server, running_stack):
    import re

    from studioops.console.auth import login_link

    assert httpx.get(api_server.url + "/docs").status_code in {303, 401}  # the API description needs a login
    client = httpx.Client(base_url=api_server.url)
    client.get(login_link(running_stack.settings, api_server.url))  # the one-time link sets the session cookie

    unmatched_before = unmatched_requests(api_server)
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from a CDN
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/openapi.json").json()["info"]["title"] == "StudioOps API"
    values = samples(httpx.get(api_server.url + "/metrics").text)
    routes = {dict(labels).get("route") for name, labels in values if name == "studioops_http_requests_total"}
    assert {"/docs", "/openapi.json"} <= routes
    assert unmatched_requests(api_server) == unmatched_before
    for probe in ("..%2Fconsts.py", "index.html", "..%2F..%2Fcore.py"):  # only the listed assets are served
        assert client.get("/docs/assets/" + probe).status_code == 404


def test_metrics_are_bounded_by_the_health_timeout_while_the_database_is_down(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    server = ApiServer(fresh_stack)
    try:
        assert httpx.get(server.url + "/metrics").status_code == 200
        EmbeddedPostgres(fresh_stack.settings).stop()
        time.sleep(1.1)  # past the 1 s metrics cache
        began = time.monotonic()
        r = httpx.get(server.url + "/metrics", timeout=20)
        took = time.monotonic() - began
        assert r.status_code == 200 and samples(r.text)[("studioops_db_up", ())] == 0
        assert took < 3.0, took  # the 2 s health timeout, not one wait per part
    finally:
        server.stop()
