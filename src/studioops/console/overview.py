"""What the Overview page shows, gathered from the library: services (stack.status), health, disk, database size
and connections, the latest backup and its verification, migrations. Independent parts run concurrently, so the
page costs its slowest part, not their sum.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from studioops import __version__
from studioops.config import Settings
from studioops.errors import one_line

_POOL = ThreadPoolExecutor(max_workers=6, thread_name_prefix="overview")


def process_uptime(pid: int | None) -> float | None:
    """Seconds since process `pid` started (Linux /proc); None when unknown."""
    if not pid:
        return None
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 (a tiny read)
        started_ticks = int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"
        boot_uptime = float(open("/proc/uptime").read().split()[0])  # noqa: SIM115
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, boot_uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


def _safe(fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        return {"error": one_line(exc, 300)}


def _services(settings: Settings, pool) -> list[dict]:
    from studioops import stack

    out = []
    for s in stack.status(settings, pool):
        row = s.as_dict()
        row["uptime"] = process_uptime(s.pid) if s.running else None
        out.append(row)
    return out


def _database(settings: Settings, pool) -> dict:
    from studioops.db.connect import borrow
    from studioops.db.inspect import summary
    from studioops.db.migrate import Migrator

    with borrow(settings.db, pool) as conn:
        facts = summary(conn)
        facts["migrations"] = Migrator(settings.db, settings.studioops_migrations_dir).status(conn).as_dict()
    return facts


def _latest_backup(settings: Settings) -> dict:
    from studioops.backup import list_backups

    listed = list_backups(settings)
    archives = listed.rows
    latest_verified = next((a for a in archives if a["verified_at"]), None)
    return {"latest": archives[0] if archives else None, "count": len(archives),
            "latest_verified": latest_verified, "bucket_error": listed.bucket_error}


def overview(settings: Settings, pool=None, console_address: str = "", health_timeout: float = 2.0) -> dict:
    """Everything the Overview page shows; a part that fails carries {"error": ...} instead of its figures."""
    from studioops.health import check_infrastructure_health
    from studioops.metrics import disk_metrics

    jobs = {
        "services": _POOL.submit(_safe, _services, settings, pool),
        "health": _POOL.submit(_safe, check_infrastructure_health, settings, pool, health_timeout),
        "database": _POOL.submit(_safe, _database, settings, pool),
        "backups": _POOL.submit(_safe, _latest_backup, settings),
        "disk": _POOL.submit(_safe, disk_metrics, settings),
    }
    out = {name: job.result() for name, job in jobs.items()}
    console = {"name": "console", "state": "running", "pid": os.getpid(), "address": console_address,
               "versions": {"studioops": __version__}, "uptime": process_uptime(os.getpid()), "details": {}}
    # The embedded `console` service reports itself through status(); an API run on its own adds its row here.
    if isinstance(out["services"], list) and not any(s.get("name") == "console" and s.get("state") == "running"
                                                     for s in out["services"]):
        out["services"].append(console)
    return out
