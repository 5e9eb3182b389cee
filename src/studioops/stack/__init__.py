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
    from studioops.stack.postgres import EmbeddedPostgres, ExternalPostgres

    postgres = EmbeddedPostgres(settings) if settings.db.is_local else ExternalPostgres(settings)
    return [postgres]


@dataclass
class UpResult:
    services: list[ServiceState]
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    migrations_applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "services": [s.as_dict() for s in self.services],
            "started": self.started,
            "already_running": self.already_running,
            "migrations_applied": self.migrations_applied,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def up(settings: Settings, timeout: float = 30.0) -> UpResult:
    """Start what is not running, migrate the database, and report what runs where."""
    from studioops.db.migrate import Migrator

    began = time.perf_counter()
    result = UpResult(services=[])
    for service in _services(settings):
        if service.start(timeout=timeout):
            result.started.append(service.name)
        else:
            result.already_running.append(service.name)
        result.notes.extend(getattr(service, "notes", []))
    result.migrations_applied = Migrator(settings.db, settings.studioops_migrations_dir).migrate()
    result.services = status(settings)
    result.seconds = time.perf_counter() - began
    return result


def down(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Stop every running embedded service; returns the names of those that were running."""
    return [s.name for s in reversed(_services(settings)) if s.stop(timeout=timeout)]


def status(settings: Settings) -> list[ServiceState]:
    """Each service's state; for a running PostgreSQL also its versions and migration head."""
    states = [s.state() for s in _services(settings)]
    for state in states:
        if state.name == "postgres" and state.state in {"running", "external"}:
            state.versions, state.details = _database_facts(settings)
    return states


def _database_facts(settings: Settings) -> tuple[dict[str, str], dict[str, object]]:
    from studioops.db.connect import connect
    from studioops.db.migrate import Migrator

    try:
        with connect(settings.db, autocommit=True, timeout=2) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        migrations = Migrator(settings.db, settings.studioops_migrations_dir).status()
    except StudioOpsError as exc:
        return {}, {"error": str(exc)}
    return (
        {"postgresql": pg, "pgvector": vector[0] if vector else "not installed"},
        {"migration_head": migrations.head, "pending_migrations": len(migrations.pending)},
    )


def log_path(settings: Settings, service: str = "postgres") -> Path:
    """The log file of one embedded service."""
    for s in _services(settings):
        if s.name == service:
            return s.log
    names = ", ".join(s.name for s in _services(settings))
    raise StudioOpsError(f"no service named '{service}'. Choose one of: {names}")
