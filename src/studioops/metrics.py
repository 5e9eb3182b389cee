"""Infrastructure metrics, measured: the design document's `get_infrastructure_metrics` shape and Prometheus.

Database figures come from pg_stat_activity / pg_stat_database, storage from listing the buckets, disk from the
data directory's file system. A figure that cannot be measured is None ("unavailable"), never a made-up zero.
The parts are gathered concurrently, each bounded by the health timeout. In the API, bucket usage (a listing of
every object) comes from `StorageUsageCache`, refreshed in the background, so a scrape never lists anything.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
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


def database_metrics(settings: Settings, sampler: TpsSampler, pool=None, first_window: float = 0.5,
                     timeout: float = 2.0) -> dict:
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
        with borrow(settings.db, pool, timeout) as conn:
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


def storage_metrics(settings: Settings, timeout: float = 5.0) -> list[dict]:
    """Objects (folder markers apart) and bytes per bucket, by listing every object: seconds on a big store."""
    from studioops.storage import Storage

    return [{"bucket": u.bucket, "objects": u.objects, "bytes": u.bytes, "folders": u.folders}
            for u in Storage.from_settings(settings, timeout=timeout).usage()]


class StorageUsageCache:
    """Bucket usage listed by a background thread, so that a scrape reads a figure instead of listing every
    object (1-3 s per scrape at 10,000 objects). It refreshes every `interval` seconds, and never spends more
    than a fifth of its time listing. Scrapes see the figures with their age
    (`studioops_storage_usage_age_seconds`)."""

    def __init__(self, settings: Settings, interval: float = 30.0) -> None:
        self.settings = settings
        self.interval = interval
        self._usage: list[dict] | None = None
        self._error: str | None = None
        self._at: float | None = None
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                usage, error = storage_metrics(self.settings), None
            except Exception as exc:
                usage, error = None, one_line(exc)
            took = time.monotonic() - began
            if usage is not None:
                self._usage, self._at = usage, time.monotonic()
            self._error = error
            self._ready.set()
            self._wake.wait(max(self.interval, 4 * took))
            self._wake.clear()

    def refresh(self) -> None:
        """List again now (in the background)."""
        self._wake.set()

    def get(self, wait: float) -> dict:
        """The last listing: {"minio_usage": [...] or None, "age_seconds", "error"}; waits up to `wait` for the
        first one."""
        self._ready.wait(wait)
        out: dict[str, Any] = {"minio_usage": self._usage,
                               "age_seconds": None if self._at is None else round(time.monotonic() - self._at, 3)}
        if self._error:
            out["error"] = self._error
        elif self._usage is None:
            out["error"] = f"no bucket listing yet (the first one takes longer than {wait:g}s)"
        return out

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)


def disk_metrics(settings: Settings) -> dict:
    path = settings.home if settings.home.exists() else settings.home.parent
    usage = shutil.disk_usage(path)
    return {"path": str(settings.home), "total_bytes": usage.total, "free_bytes": usage.free,
            "used_bytes": usage.used}


def observability_metrics(settings: Settings, pool=None, timeout: float = 2.0) -> dict:
    """Trace count and error rate from the local trace store, plus Langfuse's own count when it is configured."""
    from studioops.db.connect import borrow
    from studioops.observability.store import langfuse_trace_count, model_usage, trace_stats

    try:
        with borrow(settings.db, pool, timeout) as conn:
            out = trace_stats(conn)
            if out["traces_count"] is not None:
                out["models"] = model_usage(conn)
    except Exception as exc:
        out = {"traces_count": None, "error_rate": None, "status": "unavailable",
               "reason": one_line(exc, 200)}
    if settings.langfuse_enabled:
        out["langfuse_traces_count"] = langfuse_trace_count(
            settings.langfuse_host, settings.langfuse_public_key, settings.langfuse_secret_key.get_secret_value(),
            timeout=timeout)
    return out


# Parts run here; a hung part keeps its thread until its own client timeout ends it, never the caller.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="metrics")


def get_infrastructure_metrics(settings: Settings, sampler: TpsSampler | None = None, pool=None,
                               timeout: float = 2.0, storage_usage: StorageUsageCache | None = None) -> dict[str, Any]:
    """Every metric; a part that fails, or does not answer within `timeout`, reports its error instead of
    numbers. With `storage_usage` (the API's), bucket figures come from its background listing."""
    sampler = sampler or TpsSampler()
    began = time.monotonic()
    first_window = 0.5 if pool is None else 0
    parts = {
        "database": _POOL.submit(database_metrics, settings, sampler, pool, first_window, timeout),
        "observability": _POOL.submit(observability_metrics, settings, pool, timeout),
    }
    if storage_usage is None:
        parts["storage"] = _POOL.submit(storage_metrics, settings, max(timeout, 5.0))
    results: dict[str, Any] = {}
    for name, future in parts.items():
        # A one-off CLI call also spends the 0.5 s rate window; a listing is given longer than a probe.
        limit = timeout + 0.25 + first_window + (max(timeout, 5.0) if name == "storage" else 0)
        try:
            results[name] = future.result(timeout=max(0.0, limit - (time.monotonic() - began)))
        except FutureTimeout:
            results[name] = {"error": f"no answer within {timeout:g}s"}
        except Exception as exc:
            results[name] = {"error": one_line(exc)}
    storage: dict[str, Any] = {"disk_space": disk_metrics(settings)}
    if storage_usage is not None:
        storage.update(storage_usage.get(wait=timeout))
    elif isinstance(results["storage"], list):
        storage["minio_usage"] = results["storage"]
    else:
        storage["minio_usage"] = None
        storage["error"] = results["storage"]["error"]
    obs = results["observability"]
    if "traces_count" not in obs:
        obs = {"traces_count": None, "error_rate": None, "status": "unavailable", "reason": obs["error"]}
    return {"database": results["database"], "storage": storage, "observability": obs}


class InfrastructureCollector:
    """A prometheus-client collector: measures at scrape time (cached briefly, so scrapes never pile up)."""

    def __init__(self, settings: Settings, pool=None, cache_seconds: float = 1.0, timeout: float = 2.0,
                 storage_refresh_seconds: float = 30.0) -> None:
        self.settings = settings
        self.pool = pool
        self.timeout = timeout
        self.storage_usage = StorageUsageCache(settings, storage_refresh_seconds)
        self.sampler = TpsSampler()
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            data = get_infrastructure_metrics(self.settings, self.sampler, self.pool, self.timeout,
                                              self.storage_usage)
            self._cached = (time.monotonic(), data)
            return data

    def close(self) -> None:
        self.storage_usage.close()

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
        yield GaugeMetricFamily("studioops_storage_up", "1 when the last bucket listing succeeded.",
                                value=0 if storage.get("error") or storage.get("minio_usage") is None else 1)
        if storage.get("minio_usage") is not None:
            objects = GaugeMetricFamily("studioops_storage_bucket_objects", "Objects per bucket (folder markers "
                                        "apart).", labels=["bucket"])
            size = GaugeMetricFamily("studioops_storage_bucket_bytes", "Bytes per bucket.", labels=["bucket"])
            folders = GaugeMetricFamily("studioops_storage_bucket_folders", "Folder markers per bucket.",
                                        labels=["bucket"])
            for bucket in storage["minio_usage"]:
                objects.add_metric([bucket["bucket"]], bucket["objects"])
                size.add_metric([bucket["bucket"]], bucket["bytes"])
                folders.add_metric([bucket["bucket"]], bucket.get("folders", 0))
            yield objects
            yield size
            yield folders
        if storage.get("age_seconds") is not None:
            yield GaugeMetricFamily("studioops_storage_usage_age_seconds", "Age of the bucket figures (listed in "
                                    "the background).", value=storage["age_seconds"])
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
