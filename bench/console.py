"""Console pages' server time with 100,000 objects in a bucket and 100,000 rows in a table: p50/p95 per page.

Run: `.venv/bin/python bench/console.py` (BENCH_OBJECTS=100000, BENCH_ROWS=100000, BENCH_REQUESTS=60). Starts
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
                }
                results = {name: timings(client, path) for name, path in pages.items()}
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
