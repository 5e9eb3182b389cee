"""Backups for the console: each archive with a summary of its contents, and "verify now" as a background job
whose progress the page polls.

A summary reads the archive's manifest (tables, rows, objects); an archive never changes once written, so
summaries are cached by path, size and mtime. Archives only in the bucket are summarised from their size alone:
downloading one to describe it would cost more than the page may take.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studioops.config import Settings
from studioops.errors import one_line

_SUMMARIES: dict[tuple[str, int, int], dict] = {}
_SUMMARIES_LOCK = threading.Lock()


def summarise(path: Path) -> dict:
    """Tables, rows, objects and object bytes recorded in an archive's manifest."""
    from studioops.backup.archive import ArchiveReader

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _SUMMARIES_LOCK:
        if key in _SUMMARIES:
            return _SUMMARIES[key]
    try:
        with ArchiveReader(path) as reader:
            m = reader.manifest
            summary = {"tables": len(m["tables"]), "rows": sum(t["rows"] for t in m["tables"].values()),
                       "objects": len(m["objects"]), "object_bytes": sum(o["size"] for o in m["objects"]),
                       "postgresql": m.get("database", {}).get("server_version")
                       or m.get("database", {}).get("postgresql"),
                       "migration_head": m.get("database", {}).get("migration_head")}
    except Exception as exc:
        summary = {"error": one_line(exc, 200)}
    with _SUMMARIES_LOCK:
        _SUMMARIES[key] = summary
    return summary


def archives(settings: Settings):
    """`backup list` (a BackupList: rows and why the bucket could not be read) with a contents summary for each
    local archive."""
    from studioops.backup import list_backups

    listed = list_backups(settings)
    for row in listed.rows:
        row["summary"] = summarise(Path(row["local"])) if row["local"] else None
    return listed


@dataclass
class VerifyJob:
    id: str
    archive: str
    phase: str = "starting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    ok: bool | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    def as_dict(self) -> dict:
        return {"id": self.id, "archive": self.archive, "phase": self.phase, "started": self.started,
                "finished": self.finished, "ok": self.ok, "result": self.result, "error": self.error,
                "running": self.running}


class VerifyJobs:
    """`backup verify` runs in a thread per request; its phases (checksums, restore) are what the page shows.
    One verification at a time: a second request while one runs gets the running job."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: dict[str, VerifyJob] = {}
        self._lock = threading.Lock()

    def start(self, archive: str) -> VerifyJob:
        with self._lock:
            for job in self._jobs.values():
                if job.running:
                    return job
            job = VerifyJob(uuid.uuid4().hex[:12], archive)
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), daemon=True, name=f"verify-{job.id}").start()
        return job

    def _run(self, job: VerifyJob) -> None:
        from studioops.backup import verify_backup

        def progress(phase: str, done: int, total: int | None) -> None:
            job.phase = phase

        try:
            job.result = verify_backup(self.settings, job.archive, progress).as_dict()
            job.ok, job.phase = True, "verified"
        except Exception as exc:
            job.ok, job.phase, job.error = False, "failed", one_line(exc, 400)
        job.finished = time.time()

    def get(self, job_id: str) -> VerifyJob | None:
        return self._jobs.get(job_id)

    def latest(self) -> VerifyJob | None:
        with self._lock:
            return max(self._jobs.values(), key=lambda j: j.started, default=None)
