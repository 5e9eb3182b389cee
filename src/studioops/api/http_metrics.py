"""Request counts and latency histograms per route, as a plain ASGI middleware (no per-request task overhead)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Label values come from a fixed set: any method token a client makes up counts as `other`, or every request
# with a new one would add series (and memory) for good.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class HttpMetrics:
    def __init__(self, app, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("studioops_http_requests", "HTTP requests by route, method and status.",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("studioops_http_request_duration_seconds", "HTTP request latency by route.",
                                 ["method", "route"], buckets=BUCKETS, registry=registry)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The route template (/items/{id}), never the raw path: unknown paths share one label.
            label = getattr(route, "path", None) or "unmatched"
            method = method_label(scope["method"])
            self.requests.labels(method, label, str(status["code"])).inc()
            self.latency.labels(method, label).observe(time.perf_counter() - started)
