"""Benchmark a `/metrics` scrape with 100,000 objects in the store (BENCH_OBJECTS), against listing every object
once (what each scrape did before bucket figures came from a background listing).

Run: `.venv/bin/python bench/metrics_scrape.py`. Prints the median and maximum of BENCH_SCRAPES scrapes (each past
the API's 1 s snapshot cache, so every one measures again) and the ratio to the listing's median. Target: a scrape
<= 50 ms with 100,000 objects.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from studioops import stack
from studioops.config import Settings
from studioops.metrics import storage_metrics
from studioops.stack.process import free_port, wait_until
from studioops.storage import Storage

OBJECTS = int(os.environ.get("BENCH_OBJECTS", "100000"))
SCRAPES = int(os.environ.get("BENCH_SCRAPES", "20"))
TARGET = 0.050


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-") as tmp:
        home = Path(tmp) / uuid.uuid4().hex[:8]
        env = {"STUDIOOPS_HOME": str(home),
               "DATABASE_URL": f"postgresql://studioops:bench-password-123@localhost:{free_port()}/studioops",
               "MINIO_ENDPOINT": f"localhost:{free_port()}"}
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
        stack.up(settings, timeout=120)
        api = None
        try:
            client = Storage.from_settings(settings).client
            began = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:  # setup, not measured: the raw client, no per-put checks
                list(pool.map(lambda i: client.put_object(Bucket="generated", Key=f"bench/{i:06d}.txt", Body=b"x"),
                              range(OBJECTS)))
            print(f"stored {OBJECTS:,} objects in {time.perf_counter() - began:.1f}s")
            listings = [timed(lambda: storage_metrics(settings)) for _ in range(3)]

            port = free_port()
            api = subprocess.Popen([sys.executable, "-m", "studioops", "api", "--port", str(port)],
                                   env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}/metrics"

            def listed() -> bool:
                try:
                    return "studioops_storage_bucket_objects{" in httpx.get(url, timeout=30).text
                except httpx.HTTPError:
                    return False

            if not wait_until(listed, 300, interval=1):
                raise SystemExit("the API never reported bucket figures")
            scrapes = []
            with httpx.Client(timeout=30) as http:
                for _ in range(SCRAPES):
                    time.sleep(1.1)  # past the API's 1 s snapshot cache: every scrape measures again
                    scrapes.append(timed(lambda: http.get(url).raise_for_status()))
        finally:
            if api is not None:
                api.terminate()
                api.wait(10)
            stack.down(settings)

    median, baseline = statistics.median(scrapes), statistics.median(listings)
    verdict = "ok" if median <= TARGET else "OVER TARGET"
    print(f"/metrics scrape with {OBJECTS:,} objects, {os.cpu_count()} cores: median {median * 1000:.1f} ms, "
          f"max {max(scrapes) * 1000:.1f} ms over {SCRAPES} scrapes   listing every object (the old scrape) "
          f"{baseline * 1000:.0f} ms   ratio {median / baseline:.5f}x ({baseline / median:,.0f} times faster)   "
          f"target <= {TARGET * 1000:.0f} ms  {verdict}")


if __name__ == "__main__":
    main()
