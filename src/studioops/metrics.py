"""Infrastructure metrics, measured: the design document's `get_infrastructure_metrics` shape and Prometheus.

Database figures come from pg_stat_activity / pg_stat_database, storage from listing the buckets, disk from the
data directory's file system. A figure that cannot be measured is None ("unavailable"), never a made-up zero.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

from studioops.config import Settings
from studioops.errors import one_line


@dataclass
class _XactSample:
    at: float
    xacts: int


class TpsSampler:
    """Transactions per second from deltas of pg_stat_database's commit + rollback counters."""

    def __init__(self) -> None:
        self._last: _XactSample | None = None
        self._lock = threading.Lock()

    def update(self, xacts: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            last, self._last = self._last, _XactSample(now, xacts)
        if last is None or now <= last.at or xacts < last.xacts:
            return None
        return (xacts - last.xacts) / (now - last.at)


def database_metrics(settings: Settings, sampler: TpsSampler, pool=None, first_window: float = 0.5) -> dict:
    """Connections by state, size, transactions per second, cache hit ratio of the app database."""
    from studioops.db.connect import borrow

    def gather(conn) -> dict:
        states = dict(conn.execute(
            "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() GROUP BY 1"
        ).fetchall())
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        commits, rollbacks, hit, read = conn.execute(
            "SELECT xact_commit, xact_rollback, blks_hit, blks_read FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
        return {"states": states, "size": size, "xacts": commits + rollbacks, "hit": hit, "read": read}

    def sample() -> dict:
        with borrow(settings.db, pool) as conn:
            return gather(conn)

    data = sample()
    tps = sampler.update(data["xacts"])
    if tps is None and first_window > 0:
        # No earlier sample (a one-off CLI call): measure over a short window instead.
        time.sleep(first_window)
        data = sample()
        tps = sampler.update(data["xacts"])
    blocks = data["hit"] + data["read"]
    return {
        "connections": {"total": sum(data["states"].values()), "by_state": data["states"]},
        "size": data["size"],
        "queries_per_second": round(tps, 3) if tps is not None else None,
        "cache_hit_ratio": round(data["hit"] / blocks, 6) if blocks else None,
    }


def storage_metrics(settings: Settings) -> list[dict]:
    from studioops.storage import Storage

    return [{"bucket": u.bucket, "objects": u.objects, "bytes": u.bytes}
            for u in Storage.from_settings(settings, timeout=5).usage()]


def disk_metrics(settings: Settings) -> dict:
    path = settings.home if settings.home.exists() else settings.home.parent
    usage = shutil.disk_usage(path)
    return {"path": str(settings.home), "total_bytes": usage.total, "free_bytes": usage.free,
            "used_bytes": usage.used}


def observability_metrics(settings: Settings, pool=None) -> dict:
    """Trace count and error rate from the local trace store, plus Langfuse's own count when it is configured."""
    from studioops.db.connect import borrow
    from studioops.observability.store import langfuse_trace_count, model_usage, trace_stats

    try:
        with borrow(settings.db, pool) as conn:
            out = trace_stats(conn)
            if out["traces_count"] is not None:
                out["models"] = model_usage(conn)
    except Exception as exc:
        out = {"traces_count": None, "error_rate": None, "status": "unavailable",
               "reason": one_line(exc, 200)}
    if settings.langfuse_enabled:
        out["langfuse_traces_count"] = langfuse_trace_count(
            settings.langfuse_host, settings.langfuse_public_key, settings.langfuse_secret_key.get_secret_value())
    return out


def get_infrastructure_metrics(settings: Settings, sampler: TpsSampler | None = None, pool=None) -> dict[str, Any]:
    """Every metric; a part that fails reports its error instead of numbers."""
    sampler = sampler or TpsSampler()
    out: dict[str, Any] = {}
    try:
        out["database"] = database_metrics(settings, sampler, pool, first_window=0.5 if pool is None else 0)
    except Exception as exc:
        out["database"] = {"error": one_line(exc)}
    storage: dict[str, Any] = {"disk_space": disk_metrics(settings)}
    try:
        storage["minio_usage"] = storage_metrics(settings)
    except Exception as exc:
        storage["minio_usage"] = None
        storage["error"] = one_line(exc)
    out["storage"] = storage
    out["observability"] = observability_metrics(settings, pool)
    return out


class InfrastructureCollector:
    """A prometheus-client collector: measures at scrape time (cached briefly, so scrapes never pile up)."""

    def __init__(self, settings: Settings, pool=None, cache_seconds: float = 1.0) -> None:
        self.settings = settings
        self.pool = pool
        self.sampler = TpsSampler()
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            data = get_infrastructure_metrics(self.settings, self.sampler, self.pool)
            self._cached = (time.monotonic(), data)
            return data

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        data = self.snapshot()
        db = data["database"]
        yield GaugeMetricFamily("studioops_db_up", "1 when the database answered the metrics query.",
                                value=0 if "error" in db else 1)
        if "error" not in db:
            conns = GaugeMetricFamily("studioops_db_connections", "Connections to the app database by state.",
                                      labels=["state"])
            for state, count in sorted(db["connections"]["by_state"].items()):
                conns.add_metric([state], count)
            yield conns
            yield GaugeMetricFamily("studioops_db_size_bytes", "Size of the app database.", value=db["size"])
            if db["queries_per_second"] is not None:
                yield GaugeMetricFamily("studioops_db_transactions_per_second",
                                        "Commits + rollbacks per second since the previous scrape.",
                                        value=db["queries_per_second"])
            if db["cache_hit_ratio"] is not None:
                yield GaugeMetricFamily("studioops_db_cache_hit_ratio", "Share of block reads served from cache.",
                                        value=db["cache_hit_ratio"])
        storage = data["storage"]
        yield GaugeMetricFamily("studioops_storage_up", "1 when the S3 endpoint answered the usage listing.",
                                value=0 if storage.get("minio_usage") is None else 1)
        if storage.get("minio_usage") is not None:
            objects = GaugeMetricFamily("studioops_storage_bucket_objects", "Objects per bucket.", labels=["bucket"])
            size = GaugeMetricFamily("studioops_storage_bucket_bytes", "Bytes per bucket.", labels=["bucket"])
            for bucket in storage["minio_usage"]:
                objects.add_metric([bucket["bucket"]], bucket["objects"])
                size.add_metric([bucket["bucket"]], bucket["bytes"])
            yield objects
            yield size
        disk = storage["disk_space"]
        yield GaugeMetricFamily("studioops_disk_free_bytes", "Free bytes on the data directory's file system.",
                                value=disk["free_bytes"])
        yield GaugeMetricFamily("studioops_disk_total_bytes", "Size of the data directory's file system.",
                                value=disk["total_bytes"])
        obs = data["observability"]
        if obs.get("traces_count") is not None:
            yield GaugeMetricFamily("studioops_traces", "LLM traces recorded.", value=obs["traces_count"])
        if obs.get("langfuse_traces_count") is not None:
            yield GaugeMetricFamily("studioops_langfuse_traces", "Traces Langfuse reports holding.",
                                    value=obs["langfuse_traces_count"])
        if obs.get("error_rate") is not None:
            yield GaugeMetricFamily("studioops_trace_error_ratio", "Share of LLM traces that ended in an error.",
                                    value=obs["error_rate"])
        yield from _trace_store_metrics(obs)


def _trace_store_metrics(obs: dict):
    """Observations, unpriced observations, and per model (the most used, capped; the rest as "other")
    observations, tokens and cost."""
    from prometheus_client.core import GaugeMetricFamily

    if obs.get("observations_count") is not None:
        yield GaugeMetricFamily("studioops_observations", "Observations (spans, generations...) recorded.",
                                value=obs["observations_count"])
        yield GaugeMetricFamily("studioops_unpriced_observations",
                                "Observations with a model and usage but no known price (cost left null).",
                                value=obs["unpriced_observations"])
    if obs.get("models") is None:
        return
    count = GaugeMetricFamily("studioops_model_observations", "Observations per model.", labels=["model"])
    tokens = GaugeMetricFamily("studioops_model_tokens", "Tokens per model and direction.",
                               labels=["model", "direction"])
    cost = GaugeMetricFamily("studioops_model_cost_usd", "Cost per model in USD (priced observations).",
                             labels=["model"])
    for m in obs["models"]:
        count.add_metric([m["model"]], m["observations"])
        tokens.add_metric([m["model"], "input"], m["input_tokens"])
        tokens.add_metric([m["model"], "output"], m["output_tokens"])
        if m["cost"] is not None:
            cost.add_metric([m["model"]], m["cost"])
    yield count
    yield tokens
    yield cost
