"""Benchmark retrieval: vector, filtered and hybrid search over N synthetic 1536-d rows, and the tuning's effect.

Run: `.venv/bin/python bench/rag.py` (BENCH_N=100000; BENCH_N=1000000 for the large run). Starts its own embedded
stack (tuned, as `up` does) in a temporary directory. Data: deterministic clustered vectors (tests/support/
vectors.py), queries drawn near the data. Baselines in the same run: exact search (a sequential scan, through the
same function with index scans off) for recall and latency, raw binary COPY for the load rate.

Part two (BENCH_TUNING_N rows, 30000 by default, 0 skips it) loads the same rows into a stack started with
PG_TUNING=false and into a tuned one, then times CREATE INDEX of the HNSW index and `backup restore --force`
(which rebuilds it) on each. It uses fewer rows because an untuned build on 100k rows takes many minutes here.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.support.vectors import Corpus, exact_neighbours

from studioops import rag, stack
from studioops.config import Settings
from studioops.stack import tuning
from studioops.stack.process import free_port

N = int(os.environ.get("BENCH_N", "100000"))
TUNING_N = int(os.environ.get("BENCH_TUNING_N", "30000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
K = 10
INDEX = "idx_rag_documents_embedding_hnsw"


def line(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSES TARGET")
    print(f"{label:<44} {value:<34} {target:<22} {verdict}", flush=True)


def make_settings(root: Path, name: str, **extra) -> Settings:
    return Settings(_env_file=None, studioops_home=root / name, backup_upload=False,
                    database_url=f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
                    minio_endpoint=f"localhost:{free_port()}", **extra)


def index_def(conn) -> str:
    return conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX,)).fetchone()[0]


def raw_copy(conn, rows: list[dict]) -> None:
    """What a hand-written loader does: one binary COPY of the same columns through pgvector's adapter."""
    register_vector(conn)
    with conn.cursor() as cur, cur.copy("COPY rag_documents (content, metadata, embedding) FROM STDIN "
                                        "(FORMAT BINARY)") as copy:
        copy.set_types(["text", "jsonb", "vector"])
        for row in rows:
            copy.write_row((row["content"], Jsonb(row["metadata"]), row["embedding"]))
    conn.commit()


def load(conn, corpus: Corpus) -> tuple[float, float]:
    """Rows/s through rag.add and through raw COPY, loaded before the HNSW index is built (as bulk loads are).
    Two rounds in both orders (raw then ours, ours then raw), the best of each: the first load into a new
    database also pays for creating WAL segments."""
    rows = list(corpus.rows())
    best = {"raw": 0.0, "ours": 0.0}
    for order in (("raw", "ours"), ("ours", "raw")):
        for who in order:
            conn.execute("TRUNCATE rag_documents")
            began = time.perf_counter()
            raw_copy(conn, rows) if who == "raw" else rag.add(conn, rows)
            best[who] = max(best[who], len(rows) / (time.perf_counter() - began))
    return best["ours"], best["raw"]


def build_index(conn, definition: str) -> tuple[float, int]:
    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    conn.commit()
    began = time.perf_counter()
    conn.execute(definition)
    conn.commit()
    seconds = time.perf_counter() - began
    conn.execute("VACUUM ANALYZE rag_documents")
    return seconds, conn.execute("SELECT pg_relation_size(%s)", (INDEX,)).fetchone()[0]


def timed_queries(fn, items) -> tuple[list[float], list]:
    latencies, results = [], []
    for item in items:
        began = time.perf_counter()
        results.append(fn(item))
        latencies.append(time.perf_counter() - began)
    return latencies, results


def ms(values: list[float], pct: float) -> float:
    return 1000 * float(np.percentile(values, pct))


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def rows_of(matches) -> list[int]:
    return [m.metadata["row"] for m in matches]


def qps(url: str, queries: np.ndarray, clients: int = 4, seconds: float = 10.0) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            j = i
            while time.monotonic() < stop:
                rag.search(conn, queries[j % len(queries)], k=K)
                done[i] += 1
                j += clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def retrieval(root: Path) -> None:
    settings = make_settings(root, "retrieval")
    stack.up(settings, timeout=60)
    try:
        corpus = Corpus(N)
        queries, texts = corpus.queries(QUERIES)
        url = settings.db.url
        with psycopg.connect(url, autocommit=True) as conn:
            definition = index_def(conn)
            conn.execute(f"DROP INDEX {INDEX}")
            conn.commit()
            ours, raw = load(conn, corpus)
            line("load through studioops.rag.add", f"{ours:,.0f} rows/s",
                 f"raw binary COPY {raw:,.0f}/s", ours >= 0.9 * raw)
            line("  ratio to raw COPY", f"{ours / raw:.2f}x", "target >= 0.9x", ours >= 0.9 * raw)
            seconds, size = build_index(conn, definition)
            line("HNSW index build (halfvec, m=16, efc=128)", f"{seconds:.1f} s", f"size {size / 2**20:.0f} MB")
            table = conn.execute("SELECT pg_total_relation_size('rag_documents')").fetchone()[0]
            line("  table with all its indexes", f"{table / 2**20:.0f} MB")

        truth = exact_neighbours(corpus, queries, K)
        with psycopg.connect(url, autocommit=True) as conn:
            for q in queries:  # bring the index into shared_buffers, where a serving database has it
                rag.search(conn, q, k=K)
            lat, found = timed_queries(lambda q: rows_of(rag.search(conn, q, k=K)), queries)
            r = recall(found, truth)
            line("recall@10", f"{r:.3f}", "target >= 0.98", r >= 0.98)
            line("latency, 1 client", f"p50 {ms(lat, 50):.1f} ms  p95 {ms(lat, 95):.1f} ms", "target p95 <= 5 ms",
                 ms(lat, 95) <= 5)
            register_vector(conn)
            exact = "SELECT (metadata->>'row')::int FROM rag_documents ORDER BY embedding <=> %s LIMIT 10"
            exact_lat, exact_found = timed_queries(
                lambda q: [r[0] for r in conn.execute(exact, (Vector(q),))], queries[:10])
            line("  baseline: exact search (sequential scan)", f"p50 {ms(exact_lat, 50):.0f} ms",
                 f"recall {recall(exact_found, truth[:10]):.3f}; "
                 f"index {statistics.median(exact_lat) / statistics.median(lat):.0f}x faster")
            approx = ("SELECT (metadata->>'row')::int FROM rag_documents "
                      "ORDER BY embedding::halfvec(1536) <=> %s::halfvec(1536) LIMIT 10")
            for ef in (100, 200, 300, 400):
                conn.execute(f"SET hnsw.ef_search = {ef}")
                ef_lat, ef_found = timed_queries(lambda q: [r[0] for r in conn.execute(approx, (Vector(q),))],
                                                 queries[:100])
                line(f"  index alone, hnsw.ef_search = {ef}", f"recall {recall(ef_found, truth[:100]):.3f}",
                     f"p50 {ms(ef_lat, 50):.1f} ms")
            conn.execute("RESET hnsw.ef_search")
        rate = qps(url, queries)
        line("throughput, 4 clients", f"{rate:.0f} queries/s")

        with psycopg.connect(url, autocommit=True) as conn:
            for label, key, buckets in (("10%", "b10", corpus.bucket10), ("1%", "b100", corpus.bucket100)):
                values = [int(v) for v in np.random.default_rng(3).integers(0, 10 if key == "b10" else 100,
                                                                             len(queries))]
                mask = np.stack([buckets == v for v in values])
                truth_f = exact_neighbours(corpus, queries, K, mask=mask)
                pairs = list(zip(queries, values, strict=True))
                lat, found = timed_queries(
                    lambda qv, key=key: rows_of(rag.search(conn, qv[0], k=K, filter={key: qv[1]})), pairs)
                fewest = min(len(f) for f in found)
                r = recall(found, truth_f)
                line(f"filtered search, {label} selectivity", f"rows {fewest}-{max(len(f) for f in found)}  "
                     f"recall {r:.3f}", "target 10 rows, >= 0.95", fewest == K and r >= 0.95)
                line(f"  p95 ({label})", f"{ms(lat, 95):.1f} ms (p50 {ms(lat, 50):.1f})", "target <= 30 ms",
                     ms(lat, 95) <= 30)
            lat, found = timed_queries(lambda qt: rag.hybrid_search(conn, qt[1], qt[0], k=K),
                                       list(zip(queries, texts, strict=True)))
            line("hybrid search p95", f"{ms(lat, 95):.1f} ms (p50 {ms(lat, 50):.1f})", "target <= 30 ms",
                 ms(lat, 95) <= 30)
            line("  hybrid rows returned", f"{min(map(len, found))}-{max(map(len, found))}")
    finally:
        stack.down(settings)


def tuning_effect(root: Path) -> None:
    """CREATE INDEX and `backup restore` (which rebuilds the HNSW index) untuned and tuned, same rows."""
    from studioops.backup import create_backup, restore_backup

    corpus = Corpus(TUNING_N)
    rows = list(corpus.rows())
    results = {}
    for label, tuned in (("untuned (PostgreSQL defaults)", False), ("tuned", True)):
        settings = make_settings(root, f"tuning-{tuned}", pg_tuning=tuned)
        stack.up(settings, timeout=60)
        try:
            with psycopg.connect(settings.db.url, autocommit=True) as conn:
                definition = index_def(conn)
                conn.execute(f"DROP INDEX {INDEX}")
                conn.commit()
                rag.add(conn, rows)
                conn.commit()
                seconds, _ = build_index(conn, definition)
                mwm = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
            archive = create_backup(settings, prune=False)
            began = time.perf_counter()
            restore_backup(settings, str(archive.path), force=True)
            restore = time.perf_counter() - began
            results[tuned] = (seconds, restore)
            line(f"{label}: HNSW build, {TUNING_N:,} rows", f"{seconds:.1f} s", f"maintenance_work_mem {mwm}")
            line(f"{label}: backup restore --force", f"{restore:.1f} s")
        finally:
            stack.down(settings)
    line("tuning speed-up: index build", f"{results[False][0] / results[True][0]:.2f}x")
    line("tuning speed-up: backup restore", f"{results[False][1] / results[True][1]:.2f}x")


def main() -> None:
    machine = tuning.detect_machine()
    print(f"retrieval benchmark: {N:,} rows x 1536 dims, {QUERIES} queries, k={K}; {machine.cores} cores, "
          f"{machine.memory / 2**30:.1f} GiB ({machine.memory_source}), load average {os.getloadavg()[0]:.1f}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="studioops-bench-rag-") as tmp:
        retrieval(Path(tmp))
        if TUNING_N:
            tuning_effect(Path(tmp))


if __name__ == "__main__":
    main()
