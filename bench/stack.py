"""Benchmark the embedded stack: cold/warm `up`, `down`, `--help`, and `db migrate`, each against a raw baseline;
and `down` with an API client connected and scraping (DOWN_RUNS, 20), against `down` with no client.

Run: `.venv/bin/python bench/stack.py` (or `make bench`). Prints medians of N runs and the ratio to the baseline
measured in the same run: raw initdb + pg_ctl for `up`, raw pg_ctl stop for `down`, `python -c pass` for `--help`,
and executing the same SQL directly with psycopg for `db migrate`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from studioops.config import PACKAGE_MIGRATIONS_DIR, Settings
from studioops.db.migrate import Migrator
from studioops.stack.postgres import pg_bin
from studioops.stack.process import ensure_traversable, free_port, resolve_run_as

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DOWN_RUNS = int(os.environ.get("BENCH_DOWN_RUNS", "20"))
PASSWORD = "bench-password-123"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "studioops", *args], env={**os.environ, **env}, check=True,
                   capture_output=True)


def studioops_cycle(root: Path) -> tuple[float, float, float]:
    home = root / uuid.uuid4().hex[:8]
    env = {"STUDIOOPS_HOME": str(home),
           "DATABASE_URL": f"postgresql://studioops:{PASSWORD}@localhost:{free_port()}/studioops"}
    cold = timed(lambda: cli(env, "up"))
    down = timed(lambda: cli(env, "down"))
    warm = timed(lambda: cli(env, "up"))
    cli(env, "down")
    return cold, warm, down


def raw_cycle(root: Path) -> tuple[float, float, float]:
    """initdb + pg_ctl start -w / pg_ctl stop: what any wrapper must at least spend."""
    run_as = resolve_run_as("studioops")
    data = root / uuid.uuid4().hex[:8]
    data.mkdir()
    run_as.own(data)
    ensure_traversable(data, run_as)
    pw = data / "pw"
    pw.write_text(PASSWORD)
    run_as.own(pw)
    pgdata = data / "data"
    port = free_port()
    kw = run_as.popen_kwargs()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"

    def initdb_start():
        subprocess.run([pg_bin("initdb"), "-D", str(pgdata), "-U", "studioops", f"--pwfile={pw}", "-A",
                        "scram-sha-256", "--data-checksums"], check=True, capture_output=True, **kw)
        subprocess.run([pg_bin("pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(data / "log"), "-w", "start"],
                       check=True, capture_output=True, **kw)

    def start():
        subprocess.run([pg_bin("pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(data / "log"), "-w", "start"],
                       check=True, capture_output=True, **kw)

    def stop():
        subprocess.run([pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], check=True,
                       capture_output=True, **kw)

    cold = timed(initdb_start)
    down = timed(stop)
    warm = timed(start)
    stop()
    return cold, warm, down


def migrate_bench(root: Path) -> tuple[float, float, float]:
    home = root / uuid.uuid4().hex[:8]
    env = {"STUDIOOPS_HOME": str(home),
           "DATABASE_URL": f"postgresql://studioops:{PASSWORD}@localhost:{free_port()}/studioops"}
    cli(env, "up")
    settings = Settings(_env_file=None, studioops_home=home, database_url=env["DATABASE_URL"])
    try:
        empties, noops, raws = [], [], []
        sql = (PACKAGE_MIGRATIONS_DIR / "001_initial_schema.sql").read_text()
        for _ in range(RUNS):
            for action in ("migrate", "raw"):
                name = f"b_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(settings.db.url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                db = Settings(_env_file=None, database_url=settings.db.with_database(name)).db
                if action == "migrate":
                    m = Migrator(db, PACKAGE_MIGRATIONS_DIR)
                    empties.append(timed(m.migrate))
                    noops.append(timed(lambda db=db: cli({**env, "DATABASE_URL": db.url}, "db", "migrate")))
                else:
                    def raw(db=db):
                        with psycopg.connect(db.url) as conn:
                            conn.execute(sql)
                    raws.append(timed(raw))
        return statistics.median(empties), statistics.median(noops), statistics.median(raws)
    finally:
        cli(env, "down")


def down_with_client(root: Path) -> tuple[list[float], list[float]]:
    """`studioops down` timed DOWN_RUNS times with no client, then with `studioops api` connected and a client
    scraping /metrics, /health and /readyz without pause (requests in flight while the servers stop)."""
    import threading

    import httpx

    home = root / uuid.uuid4().hex[:8]
    env = {"STUDIOOPS_HOME": str(home),
           "DATABASE_URL": f"postgresql://studioops:{PASSWORD}@localhost:{free_port()}/studioops",
           "MINIO_ENDPOINT": f"localhost:{free_port()}"}
    cli(env, "up")
    alone = []
    for _ in range(DOWN_RUNS):
        alone.append(timed(lambda: cli(env, "down")))
        cli(env, "up")
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "studioops", "api", "--port", str(port)],
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                for path in ("/metrics", "/health", "/readyz"):
                    try:
                        client.get(f"http://127.0.0.1:{port}{path}")
                    except httpx.HTTPError:
                        time.sleep(0.05)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    connected = []
    try:
        for _ in range(DOWN_RUNS):
            time.sleep(0.5)  # let the client's connections settle on the new servers
            connected.append(timed(lambda: cli(env, "down")))
            cli(env, "up")
    finally:
        stop.set()
        api.terminate()
        api.wait(10)
        cli(env, "down")
    return alone, connected


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-") as tmp:
        root = Path(tmp)
        ours = [studioops_cycle(root) for _ in range(RUNS)]
        raws = [raw_cycle(root) for _ in range(RUNS)]
        helps = [timed(lambda: subprocess.run([sys.executable, "-m", "studioops", "--help"], check=True,
                                              capture_output=True)) for _ in range(RUNS)]
        pythons = [timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)) for _ in range(RUNS)]
        empty, noop, raw_sql = migrate_bench(root)
        alone, connected = down_with_client(root)

    def row(label: str, value: float, base: float, target: float, base_label: str) -> None:
        verdict = "ok" if value <= target else "OVER TARGET"
        print(f"{label:<34} {value:7.3f} s   {base_label:<28} {base:7.3f} s   ratio {value / base:5.2f}x"
              f"   target <= {target} s  {verdict}")

    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    print(f"embedded stack benchmark, median of {RUNS} runs, {os.cpu_count()} cores")
    row("cold `studioops up` (schema ready)", med(ours, 0), med(raws, 0), 3.0, "raw initdb + pg_ctl start")
    row("warm `studioops up`", med(ours, 1), med(raws, 1), 1.5, "raw pg_ctl start")
    row("`studioops down`", med(ours, 2), med(raws, 2), 1.0, "raw pg_ctl stop -m fast")
    row("`studioops --help`", statistics.median(helps), statistics.median(pythons), 0.3, "python -c pass")
    row("db migrate, empty database", empty, raw_sql, 1.0, "same SQL via psycopg")
    row("`studioops db migrate`, no-op", noop, statistics.median(pythons), 0.3, "python -c pass")
    print(f"`studioops down`, {DOWN_RUNS} runs each: no client median {statistics.median(alone):.2f} s, "
          f"max {max(alone):.2f} s; API client connected and scraping median {statistics.median(connected):.2f} s, "
          f"max {max(connected):.2f} s (ratio of maxima {max(connected) / statistics.median(alone):.2f}x the "
          f"no-client median); runs over 4 s: {sum(t > 4 for t in connected)}")


if __name__ == "__main__":
    main()
