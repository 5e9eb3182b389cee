"""Console pages' server time with 100,000 objects in a bucket, 100,000 rows in a table and 1,000,000
observations in the trace store: p50/p95 per page.

Run: `.venv/bin/python bench/console.py` (BENCH_OBJECTS=100000, BENCH_ROWS=100000, BENCH_OBSERVATIONS=1000000,
BENCH_REQUESTS=60). The observations (10 per trace, through COPY, so migration 005's triggers keep the per-trace
totals and the usage rollup as ingestion does) spread over 30 days, 1,000 users, 5,000 sessions, 4 models. Starts
its own embedded stack and `studioops api` (which serves the console) in temporary directories, makes a real
backup, puts the objects through S3, logs in with a one-time link, then requests each page one at a time over a
keep-alive loopback connection (time to the full response: an upper bound of the server's time). Target: p95
<= 100 ms. Baseline in the same run: /livez of the same server (no I/O). Bucket object counts come from a
background listing (an S3 server has no count call); the time that listing takes is printed too.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from studioops import stack
from studioops.config import Settings
from studioops.console.auth import login_link
from studioops.stack.process import free_port, wait_until

OBJECTS = int(os.environ.get("BENCH_OBJECTS", "100000"))
ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60"))
OBSERVATIONS = int(os.environ.get("BENCH_OBSERVATIONS", "1000000"))
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022", "text-embedding-3-small"]
WORDS = ["invoice", "budget", "summary", "translate", "refund", "schedule", "contract", "weather", "poem", "recipe"]
TARGET_MS = 100.0


def fill_bucket(settings: Settings) -> float:
    from studioops.storage import Storage

    client = Storage.from_settings(settings).client
    began = time.perf_counter()

    def put(i: int) -> None:
        client.put_object(Bucket="generated", Key=f"bench/obj-{i:07d}.txt", Body=b"x" * 100)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(OBJECTS), chunksize=256))
    return time.perf_counter() - began


def fill_table(settings: Settings) -> None:
    import psycopg

    with psycopg.connect(settings.db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigint PRIMARY KEY, label text, payload jsonb)")
        conn.execute("INSERT INTO bench_rows SELECT g, 'row ' || g, jsonb_build_object('n', g) "
                     "FROM generate_series(1, %s) g ON CONFLICT DO NOTHING", (ROWS,))
        conn.execute("ANALYZE bench_rows")


def fill_traces(settings: Settings) -> float:
    """OBSERVATIONS observations in OBSERVATIONS // 10 traces, written with COPY in batches (as the writer does)."""
    import json
    from datetime import UTC, datetime, timedelta

    import psycopg

    traces = OBSERVATIONS // 10
    now = datetime.now(UTC)
    began = time.perf_counter()
    with psycopg.connect(settings.db.url, autocommit=True) as conn:
        batch = 10_000  # traces per COPY: 100,000 observations
        for first in range(0, traces, batch):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY traces (id, timestamp, name, user_id, session_id, tags, input, output) "
                              "FROM STDIN") as copy:
                    for i in range(first, min(first + batch, traces)):
                        start = now - timedelta(seconds=i * 30 * 86400 / traces)
                        copy.write_row((f"bench{i:07d}", start, f"chat-{i % 20}", f"user-{i % 1000}",
                                        f"session-{i % 5000}", [f"team-{i % 7}"],
                                        json.dumps({"question": f"{WORDS[i % 10]} number {i}"}),
                                        json.dumps({"answer": f"{WORDS[(i * 3) % 10]} done"})))
                with cur.copy("COPY observations (id, trace_id, parent_observation_id, type, name, start_time, "
                              "end_time, model, input_tokens, output_tokens, total_tokens, total_cost, level) "
                              "FROM STDIN") as copy:
                    for i in range(first, min(first + batch, traces)):
                        start = now - timedelta(seconds=i * 30 * 86400 / traces)
                        for j in range(10):
                            gen = j % 2 == 1
                            took = timedelta(milliseconds=(i * 37 + j * 11) % 4000 + 20)
                            copy.write_row((
                                f"bench{i:07d}-{j}", f"bench{i:07d}", None if j == 0 else f"bench{i:07d}-0",
                                "generation" if gen else "span", f"step-{j}", start + timedelta(milliseconds=j),
                                start + timedelta(milliseconds=j) + took, MODELS[(i + j) % 4] if gen else None,
                                800 + i % 500 if gen else None, 90 + j if gen else None,
                                890 + i % 500 + j if gen else None, (i % 97) / 100000 if gen else None,
                                "ERROR" if gen and (i + j) % 101 == 0 else "DEFAULT"))
        conn.execute("VACUUM ANALYZE traces")
        conn.execute("VACUUM ANALYZE observations")
        conn.execute("VACUUM ANALYZE usage_rollup")
    return time.perf_counter() - began


def timings(client: httpx.Client, path: str) -> list[float]:
    for _ in range(3):  # warm-up
        assert client.get(path).status_code == 200, path
    out = []
    for _ in range(REQUESTS):
        began = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - began) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-console-") as tmp:
        root = Path(tmp)
        port = free_port()
        env_vars = {
            "STUDIOOPS_HOME": str(root / "home"),
            "DATABASE_URL": f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
            "MINIO_ENDPOINT": f"localhost:{free_port()}",
            "LANGFUSE_HOST": f"http://127.0.0.1:{port}",
        }
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env_vars.items()})
        stack.up(settings, timeout=60)
        api = None
        try:
            from studioops.backup import create_backup

            # The backup first: archiving 100,000 objects would take longer than the whole measurement.
            create_backup(settings)
            seconds = fill_bucket(settings)
            print(f"put {OBJECTS:,} objects through S3 in {seconds:.1f}s ({OBJECTS / seconds:,.0f}/s)")
            fill_table(settings)
            seconds = fill_traces(settings)
            print(f"wrote {OBSERVATIONS:,} observations in {OBSERVATIONS // 10:,} traces with COPY in {seconds:.1f}s "
                  "(triggers included)")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "STUDIOOPS_", "MINIO_",
                                                                           "LANGFUSE_", "CONSOLE_"))}
            log = root / "api.log"
            api = subprocess.Popen([sys.executable, "-m", "studioops", "api", "--port", str(port)],
                                   env={**env, **env_vars}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            url = env_vars["LANGFUSE_HOST"]
            if not wait_until(lambda: _answers(url), 30, interval=0.1):
                raise SystemExit("the console did not start:\n" + log.read_text())
            with httpx.Client(base_url=url, timeout=30) as client:
                client.get(login_link(settings))  # sets the session cookie
                began = time.perf_counter()
                while not all(b["complete"] for b in client.get("/api/console/storage/buckets").json()["buckets"]):
                    time.sleep(0.1)
                print(f"background count of every bucket: {time.perf_counter() - began:.1f}s "
                      "(pages show the running count, labelled, meanwhile)")
                deep_rows = client.get(f"/database/tables/public/bench_rows?after={_cursor(ROWS // 2)}")
                deep_objects = _next_link(client.get("/storage/b/generated?prefix=bench/").text)
                pages = {
                    "/livez (baseline)": "/livez",
                    "Overview": "/",
                    "Overview (refresh)": "/partials/overview",
                    "Database": "/database",
                    f"Table browser, first page of {ROWS:,}": "/database/tables/public/bench_rows",
                    "Table browser, a middle page": deep_rows.url.raw_path.decode(),
                    "Storage (bucket counts)": "/storage",
                    f"Bucket listing, first page of {OBJECTS:,}": "/storage/b/generated?prefix=bench/",
                    "Bucket listing, second page": deep_objects,
                    "Backups": "/backups",
                    **trace_pages(client),
                }
                results = {}
                for name, path in pages.items():
                    try:
                        first = client.get(path)
                    except httpx.TransportError:  # the server dropped the connection after an error: again
                        first = client.get(path)
                    if first.status_code != 200:  # reported, not fatal: the other pages still get measured
                        print(f"{name}: {path} answered {first.status_code}: {first.text[:300]!r}")
                        continue
                    results[name] = timings(client, path)
        finally:
            if api is not None:
                api.terminate()
                api.wait(10)
            stack.down(settings)
    base = p95(results["/livez (baseline)"])
    print(f"\n{'page':44} {'p50 ms':>8} {'p95 ms':>8} {'x /livez':>9}  target p95 <= {TARGET_MS:.0f} ms")
    for name, values in results.items():
        verdict = "" if name.startswith("/livez") else ("ok" if p95(values) <= TARGET_MS else "OVER")
        print(f"{name:44} {statistics.median(values):8.1f} {p95(values):8.1f} {p95(values) / base:9.1f}  {verdict}")


def trace_pages(client: httpx.Client) -> dict[str, str]:
    """The trace pages, each with the filters and sort orders people use, and a page deep in a sorted list."""
    deep = "/traces?sort=cost"
    for _ in range(5):  # five pages in
        deep = _next_link(client.get(deep).text)
    some = client.get("/traces.json?session=session-42").json()["traces"][0]["id"]
    return {
        f"Traces, newest of {OBSERVATIONS:,} obs.": "/traces",
        "Traces by cost": "/traces?sort=cost",
        "Traces by latency, ascending": "/traces?sort=latency&order=asc",
        "Traces by tokens": "/traces?sort=tokens",
        "Traces by cost, 6th page": deep,
        "Traces ?user=": "/traces?user=user-7",
        "Traces ?session=": "/traces?session=session-42",
        "Traces ?model=": "/traces?model=gpt-4o",
        "Traces ?level=ERROR": "/traces?level=ERROR",
        "Traces ?tags=": "/traces?tags=team-3",
        "Traces ?range=1h": "/traces?range=1h",
        "Traces ?q= (free text)": "/traces?q=refund",
        "Traces ?q= + ?user=, by cost": "/traces?q=budget&user=user-10&sort=cost",
        "Trace page (10 observations)": f"/traces/{some}",
        "Sessions": "/sessions",
        "Sessions, last 24h": "/sessions?range=24h",
        "Users": "/users",
        "Usage, 14 days": "/usage",
        "Usage, 90 days": f"/usage?start={_days_ago(89)}",
    }


def _days_ago(n: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=n)).date().isoformat()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _cursor(key: int) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps([str(key)]).encode()).decode().rstrip("=")


def _next_link(html: str) -> str:
    import html as htmllib
    import re

    return htmllib.unescape(re.search(r'rel="next" href="([^"]+)"', html)[1])


if __name__ == "__main__":
    main()
