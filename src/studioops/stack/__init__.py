"""Service lifecycle of the embedded stack: `up`, `down`, `status`, `logs`.

Each function is what one CLI command calls; they take Settings and return plain data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from studioops.config import Settings
from studioops.errors import StudioOpsError
from studioops.stack.service import ServiceState


def _services(settings: Settings) -> list:
    from studioops.stack.console import EmbeddedConsole, ExternalConsole
    from studioops.stack.postgres import EmbeddedPostgres, ExternalPostgres
    from studioops.stack.seaweed import EmbeddedS3, ExternalS3

    postgres = EmbeddedPostgres(settings) if settings.db.is_local else ExternalPostgres(settings)
    s3 = EmbeddedS3(settings)
    console = EmbeddedConsole(settings)
    return [postgres, s3 if s3.is_local else ExternalS3(settings),
            console if console.is_local else ExternalConsole(settings)]


def _each(services: list, action) -> list:
    """Run `action(service)` for every service concurrently (cold start and stop are I/O-bound waits);
    the first failure is raised after all have finished."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = [pool.submit(action, s) for s in services]
    return [f.result() for f in futures]


@dataclass
class UpResult:
    services: list[ServiceState]
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    migrations_applied: list[str] = field(default_factory=list)
    buckets_created: list[str] = field(default_factory=list)
    seeded: int = 0
    notes: list[str] = field(default_factory=list)
    console_link: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "services": [s.as_dict() for s in self.services],
            "started": self.started,
            "already_running": self.already_running,
            "migrations_applied": self.migrations_applied,
            "buckets_created": self.buckets_created,
            "seeded_rows": self.seeded,
            "notes": self.notes,
            "console_link": self.console_link,
            "seconds": round(self.seconds, 3),
        }


def up(settings: Settings, timeout: float = 30.0, seed: bool = False) -> UpResult:
    """Start what is not running, migrate the database, and report what runs where. With `seed`, a database
    that this call migrated from empty also gets the sample data (as `supabase start` seeds a new database)."""
    from studioops.db.migrate import Migrator
    from studioops.envfile import guard_production
    from studioops.storage import Storage
    from studioops.storage.policy import parse_buckets

    guard_production(settings)
    began = time.perf_counter()
    result = UpResult(services=[])
    services = _services(settings)
    for service, started in zip(services, _start_all_or_none(services, timeout), strict=True):
        (result.started if started else result.already_running).append(service.name)
        result.notes.extend(service.notes)
    from studioops.backup import settle  # an interrupted restore is finished or rolled back before migrating

    result.notes.extend(settle(settings))
    migrator = Migrator.from_settings(settings)
    fresh = seed and migrator.status().head is None  # only --seed needs to know
    result.migrations_applied = migrator.migrate()
    if fresh and result.migrations_applied:
        from studioops.db.seed import seed as load_seed

        result.seeded = load_seed(settings.db).total
    created = Storage.from_settings(settings).init_layout(
        parse_buckets(settings.storage_public_buckets), parse_buckets(settings.storage_extra_buckets))
    result.buckets_created = sorted(created)
    result.services = status(settings)
    if any(s.name == "console" and s.state == "running" for s in result.services):
        from studioops.console.auth import login_link

        result.console_link = login_link(settings)  # the same one-time link `studioops console` prints
    result.seconds = time.perf_counter() - began
    return result


def _start_all_or_none(services: list, timeout: float) -> list[bool]:
    """Start every service concurrently. When one fails, stop those this call started and raise its error:
    a failed `up` leaves the stack as it found it, never half of it running."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = [pool.submit(s.start, timeout=timeout) for s in services]
    errors = [f.exception() for f in futures]
    failure = next((e for e in errors if e is not None), None)
    if failure is None:
        return [f.result() for f in futures]
    started = [s for s, f, e in zip(services, futures, errors, strict=True) if e is None and f.result()]
    for service in started:
        service.stop(timeout=timeout)
    if started and isinstance(failure, StudioOpsError):
        # Same type, so the exit code and any handler stay the same; the user learns nothing is left running.
        failure.args = (f"{str(failure).rstrip('.')} ({', '.join(s.name for s in started)}, started by this "
                        "run, stopped again)",)
    raise failure


def down(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Stop every running embedded service; returns the names of those that were running."""
    services = _services(settings)
    stopped = _each(services, lambda s: s.stop(timeout=timeout))
    return [s.name for s, was_running in zip(services, stopped, strict=True) if was_running]


def status(settings: Settings, pool=None) -> list[ServiceState]:
    """Each service's state; for a running PostgreSQL also its versions and migration head. From the CLI (no
    `pool`), an interrupted restore is first finished or rolled back: said on stderr and in the postgres row's
    details. `pool`: the API's connection pool (the console asks every few seconds; a new connection costs more
    than the queries)."""
    services = _services(settings)
    # A service's companions (the S3 console in weed's process) get rows of their own.
    states = [s.state() for s in services] + [c.state() for s in services for c in getattr(s, "companions", [])]
    for state in states:
        if state.name == "postgres" and state.state in {"running", "external"}:
            restore_notes = _settle_restore(settings) if pool is None else []
            state.versions, state.details = _database_facts(settings, pool)
            if restore_notes:
                state.details["restore"] = " ".join(restore_notes)
    return states


def _settle_restore(settings: Settings) -> list[str]:
    import sys

    from studioops.backup import settle

    try:
        notes = settle(settings, leftovers=False)
    except StudioOpsError as exc:
        notes = [str(exc)]
    for note in notes:
        print(f"studioops: {note}", file=sys.stderr)
    return notes


def _database_facts(settings: Settings, pool=None) -> tuple[dict[str, str], dict[str, object]]:
    from studioops.db.connect import borrow
    from studioops.db.migrate import Migrator
    from studioops.stack import tuning

    try:
        with borrow(settings.db, pool, timeout=2) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            migrations = Migrator(settings.db, settings.studioops_migrations_dir).status(conn)
            tuned = tuning.current(conn)
    except Exception as exc:  # a pool timeout or a query error too: status reports, never fails
        from studioops.errors import one_line

        return {}, {"error": one_line(exc) if not isinstance(exc, StudioOpsError) else str(exc)}
    return (
        {"postgresql": pg, "pgvector": vector[0] if vector else "not installed"},
        {"migration_head": migrations.head, "pending_migrations": len(migrations.pending), "settings": tuned},
    )


def log_path(settings: Settings, service: str = "postgres") -> Path:
    """The log file of one embedded service."""
    for s in _services(settings):
        if s.name == service:
            return s.log
    from studioops.errors import BadUsageError

    names = ", ".join(s.name for s in _services(settings))
    raise BadUsageError(f"no service named '{service}'. Choose one of: {names}")


def clean(settings: Settings, include_backups: bool = False) -> list[str]:
    """Stop the services, then delete everything under STUDIOOPS_HOME except the local backups (unless
    `include_backups`). Returns what was deleted. Works whether the stack runs or not."""
    import shutil

    down(settings)
    home = settings.home
    backups = settings.backups
    removed = []
    if home.is_dir():
        for entry in sorted(home.iterdir()):
            if entry == backups and not include_backups:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(str(entry))
    if include_backups and backups.exists() and not backups.is_relative_to(home):
        shutil.rmtree(backups)
        removed.append(str(backups))
    return removed
