"""`studioops health | metrics | api`: how the platform is doing, and the HTTP service that tells monitoring."""

from __future__ import annotations

import typer

from studioops.cli.output import duration, emit_json, plural, say, settings, table


def register(app: typer.Typer) -> None:
    app.command("health")(health)
    app.command("metrics")(metrics)
    app.command("api")(api)


def health(
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    timeout: str = typer.Option("2s", "--timeout", help="Per-check timeout."),
) -> None:
    """Check the database, storage and observability; exit 0 healthy, 1 degraded, 2 unhealthy."""
    from studioops.health import EXIT_CODES, check_infrastructure_health

    result = check_infrastructure_health(settings(), timeout=duration(timeout, "--timeout", maximum=3600))
    if as_json:
        emit_json(result)
    else:
        rows = [[name, c["service"], c["status"], f"{c['latency_ms']:.1f}", c.get("error", "")]
                for name, c in result.items() if isinstance(c, dict)]
        table(None, ["check", "service", "status", "ms", "error"], rows)
        say(f"overall: {result['overall']}")
    raise typer.Exit(EXIT_CODES[result["overall"]])


def metrics(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Database, storage, disk and trace metrics (transactions per second over a 0.5 s window)."""
    from studioops.metrics import get_infrastructure_metrics

    data = get_infrastructure_metrics(settings())
    if as_json:
        emit_json(data)
        return
    db, storage, obs = data["database"], data["storage"], data["observability"]
    rows = []
    if "error" in db:
        rows.append(["database", "error", db["error"]])
    else:
        by_state = ", ".join(f"{k} {v}" for k, v in sorted(db["connections"]["by_state"].items()))
        rows += [["database", "connections", f"{db['connections']['total']} ({by_state})"],
                 ["database", "size", f"{db['size']:,} bytes"],
                 ["database", "transactions/s", db["queries_per_second"]],
                 ["database", "cache hit ratio", db["cache_hit_ratio"]]]
    for bucket in storage.get("minio_usage") or []:
        rows.append(["storage", bucket["bucket"], f"{plural(bucket['objects'], 'object')}, {bucket['bytes']:,} bytes"])
    if storage.get("error"):
        rows.append(["storage", "error", storage["error"]])
    disk = storage["disk_space"]
    rows.append(["disk", disk["path"], f"{disk['free_bytes']:,} free of {disk['total_bytes']:,} bytes"])
    rows.append(["observability", "traces", obs["traces_count"] if obs["traces_count"] is not None
                 else f"unavailable ({obs.get('reason', '')})"])
    if "langfuse_traces_count" in obs:
        rows.append(["observability", "traces in Langfuse", obs["langfuse_traces_count"]])
    rows.append(["observability", "error rate", obs["error_rate"] if obs["error_rate"] is not None
                 else "unavailable"])
    if obs.get("observations_count") is not None:
        rows.append(["observability", "observations", f"{obs['observations_count']} "
                     f"({obs['unpriced_observations']} with usage but no known price)"])
    for m in obs.get("models") or []:
        cost = f"${m['cost']:.4f}" if m["cost"] is not None else "no price"
        rows.append(["observability", f"model {m['model']}", f"{m['observations']} observations, "
                     f"{m['input_tokens']:,} in / {m['output_tokens']:,} out tokens, {cost}"])
    table(None, ["area", "metric", "value"], rows)


def api(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on (1-65535)."),
    reload: bool = typer.Option(False, "--reload", help="Restart on code changes (development)."),
) -> None:
    """Serve the HTTP API (health, readiness, metrics) with uvicorn."""
    import errno
    import socket

    import uvicorn

    from studioops.envfile import guard_production
    from studioops.errors import BadUsageError, PortInUseError

    guard_production(settings())  # a bad setting or weak secret fails here, in one line, not inside uvicorn
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise BadUsageError(f"--host {host} is not an IP address or a host name that resolves. "
                            "Give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    with socket.socket(family, kind) as probe:  # what uvicorn will do, so its failure is ours to explain
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} on {host} is already in use. Pick another with --port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadUsageError(f"--host {host} is not an address of this machine. "
                                    "Give one of its addresses, e.g. 127.0.0.1 or 0.0.0.0") from None
            raise BadUsageError(f"cannot listen on {host}:{port} ({exc.strerror}). "
                                "Pick another --host or --port") from None
    uvicorn.run("studioops.api.main:app", host=host, port=port, reload=reload, log_level="info",
                access_log=False)

