"""`backup restore`: checksums first, a safety copy of what will be replaced, then the database into a new
database, the objects, and an atomic swap. Interrupted at any point, it is settled (finished or rolled back)
by the next `up`, `status` or `backup` command; see recovery.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.catalog import find_archive, storage_of
from studioops.backup.create import Progress, no_progress, write_archive
from studioops.backup.objects import existing_objects, put_all
from studioops.backup.recovery import UNDO, Journal, finish, roll_back, settle, start_journal
from studioops.backup.scratch import restore_database
from studioops.backup.testhook import pause_at
from studioops.backup.verify import compare_tables
from studioops.config import Settings
from studioops.errors import BackupError, RestoreRefusedError, StudioOpsError, one_line


@dataclass
class RestoreResult:
    archive: Path
    dry_run: bool
    tables: dict[str, dict]
    objects: int
    object_bytes: int
    deleted_objects: int
    seconds: float
    holds_data: str | None = None  # what the target holds that a restore replaces (then --force is needed)
    pre_restore: Path | None = None  # the safety copy of the state before the restore
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"archive": str(self.archive), "dry_run": self.dry_run, "tables": self.tables,
                "objects": self.objects, "object_bytes": self.object_bytes,
                "deleted_objects": self.deleted_objects, "seconds": round(self.seconds, 3),
                "needs_force": self.holds_data is not None, "holds_data": self.holds_data,
                "pre_restore": str(self.pre_restore) if self.pre_restore else None, "notes": self.notes}


def _target_holds(settings: Settings, manifest: dict, existing: dict) -> str | None:
    rows = dbx.holds_data(settings.db, [t for t in manifest["tables"] if t != "migrations"])
    what = []
    if rows:
        what.append(", ".join(f"{t} ({n} row{'' if n == 1 else 's'})" for t, n in sorted(rows.items())[:4]))
    if existing:
        buckets = ", ".join(sorted({b for b, _ in existing}))
        what.append(f"{len(existing)} object{'' if len(existing) == 1 else 's'} in {buckets}")
    return "; ".join(what) or None


def restore_backup(settings: Settings, ref: str, force: bool = False, dry_run: bool = False,
                   progress: Progress = no_progress) -> RestoreResult:
    """Checksums first (a damaged archive changes nothing); refuse to overwrite data without `force`; keep a
    pre-restore archive of the current state; restore the database into a new database, put the objects,
    then swap the new database in (atomically)."""
    notes = settle(settings)
    running = Journal.load(settings)
    if running is not None:
        raise BackupError(f"another restore is running (pid {running.pid}). Wait for it to finish")
    began = time.perf_counter()
    path = find_archive(settings, ref)
    storage = storage_of(settings)
    with arc.ArchiveReader(path) as reader:
        progress("checksums", 0, None)
        reader.check_all()
        manifest = reader.manifest
        objects = manifest["objects"]
        buckets = sorted(set(manifest.get("buckets") or []) | {o["bucket"] for o in objects})
        existing = existing_objects(storage, buckets)
        wanted = {(o["bucket"], o["key"]) for o in objects}
        held = _target_holds(settings, manifest, existing)
        result = RestoreResult(path, dry_run, manifest["tables"], len(objects), sum(o["size"] for o in objects),
                               len([k for k in existing if k not in wanted]), 0.0, held, notes=notes)
        if held and not force and not dry_run:
            raise RestoreRefusedError(
                f"the target holds data: {held}. Restoring would replace it (a pre-restore archive of it is kept "
                "first). Add --force"
            )
        if dry_run:
            result.seconds = time.perf_counter() - began
            return result

        progress("safety copy", 0, None)
        safety = write_archive(settings, settings.backups / arc.PRE_RESTORE, arc.PRE_RESTORE)
        result.pre_restore = safety.path
        journal = start_journal(settings, path, safety.path, buckets)
        try:
            progress("database", 0, None)
            restore_database(settings, reader, journal.new_db, compare_tables(manifest["tables"]),
                             phase="restore-database")
            journal.save(settings, "objects")
            result.deleted_objects = put_all(storage, reader, buckets, progress,
                                             after_first=lambda: pause_at("restore-objects"))
            journal.save(settings, "swap")
            dbx.swap_in(settings.db, journal.new_db, journal.old_db, inside=lambda: pause_at("restore-swap"))
        except BaseException as exc:
            _fail(settings, journal, path, exc)
            raise
        pause_at("restore-finish")
        finish(settings, journal)
    result.seconds = time.perf_counter() - began
    return result


def _fail(settings: Settings, journal: Journal, path: Path, exc: BaseException) -> None:
    """Roll back a restore that failed before its swap; raise one line that names the safety copy."""
    why = one_line(exc) if isinstance(exc, StudioOpsError | OSError) else type(exc).__name__
    try:
        roll_back(settings, journal)
    except BaseException as again:
        raise BackupError(
            f"restoring {path.name} failed ({why}) and rolling back failed too ({one_line(again)}). Run {UNDO} "
            f"once that is fixed: it puts back the state before the restore, kept in {journal.pre_restore}"
        ) from None
    if isinstance(exc, StudioOpsError):
        raise type(exc)(
            f"restoring {path.name} failed and was rolled back (database and objects as before; the safety copy "
            f"is {journal.pre_restore}): {exc}"
        ) from None
