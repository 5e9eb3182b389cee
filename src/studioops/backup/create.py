"""`backup create`: the database (pg_dump on an exported snapshot) and every object, in one archive."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from studioops import __version__
from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.catalog import BACKUP_BUCKET, storage_of
from studioops.backup.files import open_private, private_dir
from studioops.backup.objects import open_with_headers
from studioops.backup.scratch import clear_partials
from studioops.backup.testhook import pause_at
from studioops.config import Settings

Progress = Callable[[str, int, int | None], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    pass


@dataclass
class BackupResult:
    path: Path
    size: int
    seconds: float
    tables: dict[str, dict]
    objects: int
    object_bytes: int
    uploaded: str | None
    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"archive": str(self.path), "size": self.size, "seconds": round(self.seconds, 3),
                "tables": self.tables, "objects": self.objects, "object_bytes": self.object_bytes,
                "uploaded": self.uploaded, "pruned": self.pruned, "notes": self.notes}


def write_archive(settings: Settings, folder: Path, kind: str, progress: Progress = no_progress) -> BackupResult:
    """Write one archive of the database and every object (except the backups bucket) into `folder`."""
    began = time.perf_counter()
    private_dir(folder)
    clear_partials(folder)
    final = folder / arc.archive_name(datetime.now(UTC))
    storage = storage_of(settings)
    buckets = [b for b in storage.list_buckets() if b != BACKUP_BUCKET]
    objects = [(b, o) for b in buckets for o in storage.iter_objects(b)]
    total_bytes = sum(o.size for _, o in objects)

    writer = arc.ArchiveWriter(final)
    dump_path = folder / f".{final.name}.db.{os.getpid()}.partial"
    dump = None
    try:
        with open_private(dump_path) as dump_file:
            dump = dbx.SnapshotDump(settings.db, dump_file, settings.backup_zstd_level)
            tables = dump.fingerprints()  # in the dump's snapshot; our snapshot transaction ends here
            entries, done = [], 0
            progress("objects", 0, total_bytes)
            pause_at("backup-objects")
            for index, (bucket, obj) in enumerate(objects):
                member = f"objects/{index:06d}"
                body, headers = open_with_headers(storage, bucket, obj.key)
                with contextlib.closing(body):
                    checked = writer.add_stream(member, body, obj.size)
                entry = {"bucket": bucket, "key": obj.key, "member": member, **checked}
                if headers:
                    entry["headers"] = headers
                entries.append(entry)
                done += obj.size
                progress("objects", done, total_bytes)
            progress("database", 0, None)
            dump.wait()
        writer.add_file(arc.DB_MEMBER, dump_path)
        manifest = {
            "format": arc.FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "kind": kind,
            "studioops_version": __version__,
            "database": {**dump.facts, "name": settings.db.dbname},
            "tables": tables,
            "buckets": buckets,
            "objects": entries,
            "members": writer.members,
        }
        path = writer.commit(manifest)
    except BaseException:
        if dump is not None and dump.proc.poll() is None:
            dump.abort()
        writer.abort()
        raise
    finally:
        dump_path.unlink(missing_ok=True)
    return BackupResult(path, path.stat().st_size, time.perf_counter() - began, tables, len(entries),
                        total_bytes, None)


def create_backup(settings: Settings, to: Path | None = None, weekly: bool = False,
                  progress: Progress = no_progress, prune: bool = True) -> BackupResult:
    """`backup create`: write the archive, upload it to the backups bucket (BACKUP_UPLOAD), then prune."""
    from studioops.backup.prune import prune_backups
    from studioops.backup.recovery import settle

    notes = settle(settings)
    began = time.perf_counter()
    kind = "weekly" if weekly else "daily"
    folder = to.expanduser().absolute() if to else settings.backups / kind
    result = write_archive(settings, folder, kind, progress)
    result.notes = notes
    if settings.backup_upload:
        storage = storage_of(settings)
        progress("upload", 0, result.size)
        storage.ensure_bucket(BACKUP_BUCKET)
        result.uploaded = f"{BACKUP_BUCKET}/{kind}/{result.path.name}"
        storage.put_file(result.path, BACKUP_BUCKET, f"{kind}/{result.path.name}")
    result.pruned = prune_backups(settings, settled=True) if prune else []
    result.seconds = time.perf_counter() - began
    return result
