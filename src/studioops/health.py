"""Infrastructure health: the design document's `check_infrastructure_health` shape, with real checks.

Database by a real connection and `SELECT 1`; storage by a bucket head on the S3 endpoint; observability by
Langfuse's `/api/public/health` when configured (else `disabled`, which does not degrade). Checks run
concurrently, each bounded by a timeout, so a hung dependency never hangs the check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from studioops.config import Settings, redact_url
from studioops.errors import one_line

HEALTHY, DEGRADED, UNHEALTHY, DISABLED = "healthy", "degraded", "unhealthy", "disabled"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
DEFAULT_TIMEOUT = 2.0

# Checks run here; a hung check keeps its thread until its own client timeout ends it, never the caller.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")


def _result(service: str, status: str, started: float, details: dict | None = None,
            error: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": status,
        "service": service,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "details": details or {},
    }
    if error:
        out["error"] = redact_url(error)
    return out


def check_database(settings: Settings, pool=None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """`SELECT 1` over a real connection (from `pool` when the API has one)."""
    from studioops.db.connect import borrow

    started = time.perf_counter()
    try:
        with borrow(settings.db, pool, timeout) as conn:
            value = conn.execute("SELECT 1").fetchone()[0]
    except Exception as exc:
        return _result("postgresql", UNHEALTHY, started, error=one_line(exc, 500))
    details = {"connection": "successful", "address": f"{settings.db.host}:{settings.db.port}"}
    return _result("postgresql", HEALTHY if value == 1 else UNHEALTHY, started, details)


def check_storage(settings: Settings, timeout: float = DEFAULT_TIMEOUT, bucket: str = "documents") -> dict[str, Any]:
    """A HEAD of the documents bucket: proves the endpoint answers and accepts our credentials."""
    from studioops.storage import Storage

    storage = Storage.from_settings(settings, timeout=timeout)  # building a client is not the endpoint's latency
    started = time.perf_counter()
    try:
        storage.head_bucket(bucket)
    except Exception as exc:
        return _result("s3", DEGRADED, started, error=one_line(exc, 500))
    return _result("s3", HEALTHY, started, {"endpoint": settings.minio_endpoint, "bucket": bucket})


def _local_traces(settings: Settings, pool, timeout: float) -> dict[str, Any]:
    """Trace count and error rate from the local store, for the observability check's details."""
    from studioops.db.connect import borrow
    from studioops.observability.store import trace_stats

    try:
        with borrow(settings.db, pool, timeout) as conn:
            stats = trace_stats(conn)
    except Exception:
        return {}
    return {"traces_count": stats["traces_count"], "error_rate": stats["error_rate"]}


def check_observability(settings: Settings, timeout: float = DEFAULT_TIMEOUT, pool=None) -> dict[str, Any]:
    """Langfuse's public health endpoint when keys are configured; `disabled` otherwise. The details carry the
    local trace store's count and error rate either way."""
    local = _local_traces(settings, pool, timeout)
    started = time.perf_counter()
    if not settings.langfuse_enabled:
        return _result("langfuse", DISABLED, started,
                       {"reason": "LANGFUSE_PUBLIC_KEY/SECRET_KEY not set", **local})
    import httpx

    url = settings.langfuse_host.rstrip("/") + "/api/public/health"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return _result("langfuse", DEGRADED, started, {"host": settings.langfuse_host, **local},
                       f"cannot reach Langfuse at {url}: {one_line(exc, 400)}")
    if response.status_code != 200:
        return _result("langfuse", DEGRADED, started, {"host": settings.langfuse_host, **local},
                       f"HTTP {response.status_code} from {url}")
    return _result("langfuse", HEALTHY, started, {"host": settings.langfuse_host, **local})


def overall(checks: dict[str, dict]) -> str:
    """Unhealthy when the database is down; degraded when anything else is not healthy (disabled is fine)."""
    if checks["database"]["status"] != HEALTHY:
        return UNHEALTHY
    if any(c["status"] not in {HEALTHY, DISABLED} for c in checks.values()):
        return DEGRADED
    return HEALTHY


def check_infrastructure_health(settings: Settings, pool=None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """All checks, concurrently; each is cut off after `timeout` seconds (reported, never waited out)."""
    checks: dict[str, Callable[[], dict]] = {
        "database": lambda: check_database(settings, pool, timeout),
        "storage": lambda: check_storage(settings, timeout),
        "observability": lambda: check_observability(settings, timeout, pool),
    }
    services = {"database": "postgresql", "storage": "s3", "observability": "langfuse"}
    failing = {"database": UNHEALTHY, "storage": DEGRADED, "observability": DEGRADED}
    # Every error names what it tried to reach.
    targets = {"database": f"{settings.db.host}:{settings.db.port}", "storage": settings.minio_endpoint,
               "observability": settings.langfuse_host}
    started = time.perf_counter()
    futures = {name: _POOL.submit(fn) for name, fn in checks.items()}
    result: dict[str, Any] = {}
    for name, future in futures.items():
        remaining = max(0.0, timeout + 0.25 - (time.perf_counter() - started))
        try:
            result[name] = future.result(timeout=remaining)
        except FutureTimeout:
            result[name] = _result(services[name], failing[name], started,
                                   error=f"no answer from {targets[name]} within {timeout:g}s")
    result["overall"] = overall(result)
    return result
