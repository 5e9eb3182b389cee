"""Load-test the API on loopback: /livez and /health at a fixed 500 requests/s for 20 s; p50, p99, errors.

Run: `.venv/bin/python bench/api_load.py` (BENCH_RATE=500, BENCH_SECONDS=20). Starts its own embedded stack and
`studioops api` in temporary directories. The load generator keeps 20 connections, each sending its share on a fixed
schedule, and measures latency from the scheduled time (as wrk2 does, so queueing is not hidden); it runs in this
process with async httpx, after a one-second warm-up per endpoint. Baseline, in the same run: a bare ASGI app
under the same uvicorn and the same load. (wrk is not used: it cannot hold a fixed rate.)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from studioops import stack
from studioops.config import Settings
from studioops.stack.process import free_port, wait_until

RATE = int(os.environ.get("BENCH_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
BARE_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
'''


async def load(url: str, rate: int, seconds: float, workers: int = 20) -> tuple[list[float], int]:
    """`workers` keep-alive connections, each sending its share of requests on a fixed schedule. Latency is
    measured from the scheduled send time (as wrk2 does), so a stalled server cannot hide queueing delay."""
    latencies: list[float] = []
    errors = 0
    per_worker = int(rate * seconds) // workers
    interval = workers / rate
    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=5) for _ in range(workers)]
    await asyncio.gather(*(c.get(url) for c in clients))  # open the connections before the clock starts
    start = time.perf_counter() + 0.05

    async def worker(client: httpx.AsyncClient, offset: float) -> None:
        nonlocal errors
        for i in range(per_worker):
            scheduled = start + offset + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.get(url)
                if r.status_code >= 400:
                    errors += 1
                    continue
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - scheduled)

    try:
        await asyncio.gather(*(worker(c, w * interval / workers) for w, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return latencies, errors


def serve(args: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*args, "--port", str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return httpx.get(url + "/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(up, 30, 0.1):
        proc.kill()
        raise SystemExit("server did not start:\n" + log.read_text())
    return proc, url


def report(label: str, latencies: list[float], errors: int, target_ms: float | None, base_p99: float | None) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[int(len(ms) * 0.99) - 1]
    verdict = "" if target_ms is None else ("  ok" if p99 <= target_ms and errors == 0 else "  OVER TARGET")
    ratio = f"  p99 ratio vs bare ASGI {p99 / base_p99:.2f}x" if base_p99 else ""
    target = f"  target p99 <= {target_ms} ms, 0 errors" if target_ms else ""
    print(f"{label:<28} {len(ms):>6} ok  {errors} errors  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{ratio}{target}{verdict}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-api-") as tmp:
        root = Path(tmp)
        env_vars = {
            "STUDIOOPS_HOME": str(root / "home"),
            "DATABASE_URL": f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
            "MINIO_ENDPOINT": f"localhost:{free_port()}",
        }
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env_vars.items()})
        stack.up(settings)
        env = {**os.environ, **env_vars}
        (root / "bare.py").write_text(BARE_APP)
        bare, bare_url = serve([sys.executable, "-m", "uvicorn", "--app-dir", str(root), "bare:app", "--log-level",
                                "warning"], env, root / "bare.log")
        api, api_url = serve([sys.executable, "-m", "studioops", "api"], env, root / "api.log")
        try:
            print(f"API load: {RATE} requests/s for {SECONDS:.0f} s per endpoint, 20 connections, loopback, "
                  f"{os.cpu_count()} cores")
            base_lat, base_err = asyncio.run(load(bare_url + "/livez", RATE, SECONDS))
            report("bare ASGI app (baseline)", base_lat, base_err, None, None)
            base_p99 = sorted(base_lat)[int(len(base_lat) * 0.99) - 1] * 1000
            for path, target in (("/livez", 5.0), ("/health", 10.0)):
                asyncio.run(load(api_url + path, 50, 1, workers=5))  # warm-up: first S3 client, pool
                lat, err = asyncio.run(load(api_url + path, RATE, SECONDS))
                report(f"studioops api {path}", lat, err, target, base_p99)
        finally:
            for proc in (api, bare):
                proc.terminate()
                proc.wait(10)
            stack.down(settings)


if __name__ == "__main__":
    main()
