"""Backup, verify, restore and prune: the database and every object, in one archive that proves it restores.

Each function is what one `studioops backup ...` command calls. They work against the embedded stack and against
any external DATABASE_URL and S3 endpoint alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from studioops import __version__
from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.retention import Entry, to_delete
from studioops.config import Settings
from studioops.errors import BackupError, CorruptArchiveError, RestoreRefusedError

BACKUP_BUCKET = "backups"
Progress = Callable[[str, int, int | None], None]


def _noop(phase: str, done: int, total: int | None) -> None:
    pass


# -- create ---------------------------------------------------------------------------------------------
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

    def as_dict(self) -> dict:
        return {"archive": str(self.path), "size": self.size, "seconds": round(self.seconds, 3),
                "tables": self.tables, "objects": self.objects, "object_bytes": self.object_bytes,
                "uploaded": self.uploaded, "pruned": self.pruned}


def _clear_stale_partials(folder: Path) -> None:
    """`.partial` files of backups whose process is gone (killed mid-way) are deleted."""
    from studioops.stack.process import is_alive

    if not folder.is_dir():
        return
    for path in folder.glob(".*.partial"):
        parts = path.name.split(".")
        pid = int(parts[-2]) if len(parts) > 2 and parts[-2].isdigit() else 0
        if not is_alive(pid):
            path.unlink(missing_ok=True)


def _storage(settings: Settings):
    from studioops.storage import Storage

    return Storage.from_settings(settings, timeout=10)


def create_backup(settings: Settings, to: Path | None = None, weekly: bool = False,
                  progress: Progress = _noop, prune: bool = True) -> BackupResult:
    began = time.perf_counter()
    kind = "weekly" if weekly else "daily"
    folder = (to.expanduser().absolute() if to else settings.backups / kind)
    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_partials(folder)
    final = folder / arc.archive_name(datetime.now(UTC))
    storage = _storage(settings)
    objects = [(b, o) for b in storage.list_buckets() if b != BACKUP_BUCKET for o in storage.iter_objects(b)]
    total_bytes = sum(o.size for _, o in objects)

    writer = arc.ArchiveWriter(final)
    dump_path = folder / f".{final.name}.db.{os.getpid()}.partial"
    dump = None
    try:
        with dump_path.open("wb") as dump_file:
            dump = dbx.SnapshotDump(settings.db, dump_file, settings.backup_zstd_level)
            tables = dump.fingerprints()
            entries, done = [], 0
            progress("objects", 0, total_bytes)
            for index, (bucket, obj) in enumerate(objects):
                member = f"objects/{index:06d}"
                with contextlib.closing(storage.open(bucket, obj.key)) as body:
                    checked = writer.add_stream(member, body, obj.size)
                entries.append({"bucket": bucket, "key": obj.key, "member": member, **checked})
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

    uploaded = None
    if settings.backup_upload:
        progress("upload", 0, path.stat().st_size)
        storage.ensure_bucket(BACKUP_BUCKET)
        uploaded = f"{BACKUP_BUCKET}/{kind}/{path.name}"
        storage.put_file(path, BACKUP_BUCKET, f"{kind}/{path.name}")
    pruned = prune_backups(settings) if prune else []
    return BackupResult(path, path.stat().st_size, time.perf_counter() - began, tables, len(entries),
                        total_bytes, uploaded, pruned)


# -- list, find -----------------------------------------------------------------------------------------
def _verified_file(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified_names(settings: Settings) -> dict[str, str]:
    out = {}
    for archive in arc.local_archives(settings.backups):
        marker = _verified_file(archive.path)
        if marker.exists():
            try:
                out[archive.name] = json.loads(marker.read_text())["verified_at"]
            except (ValueError, KeyError):
                continue
    return out


def _remote(settings: Settings) -> list[tuple[str, str, int]]:
    """(kind, name, size) of the archives in the backups bucket; empty when storage is unreachable."""
    from studioops.errors import StorageError

    try:
        storage = _storage(settings)
        out = []
        for kind in arc.KINDS:
            for obj in storage.iter_objects(BACKUP_BUCKET, f"{kind}/"):
                name = obj.key.split("/", 1)[1]
                if arc.archive_time(name):
                    out.append((kind, name, obj.size))
        return out
    except StorageError:
        return []


def list_backups(settings: Settings) -> list[dict[str, Any]]:
    """Every archive, local and in the bucket, newest first."""
    verified = _verified_names(settings)
    rows: dict[str, dict[str, Any]] = {}
    for a in arc.local_archives(settings.backups):
        rows[a.name] = {"name": a.name, "kind": a.kind, "created": a.created.isoformat(), "size": a.size,
                        "local": str(a.path), "bucket": None, "verified_at": verified.get(a.name)}
    for kind, name, size in _remote(settings):
        row = rows.setdefault(name, {"name": name, "kind": kind, "created": arc.archive_time(name).isoformat(),
                                     "size": size, "local": None, "verified_at": verified.get(name)})
        row["bucket"] = f"{BACKUP_BUCKET}/{kind}/{name}"
    return sorted(rows.values(), key=lambda r: r["created"], reverse=True)


def find_archive(settings: Settings, ref: str) -> Path:
    """`latest`, a path, or an archive name (local, else downloaded from the backups bucket)."""
    if ref == "latest":
        local = arc.local_archives(settings.backups)
        if local:
            return local[0].path
        remote = sorted(_remote(settings), key=lambda r: r[1], reverse=True)
        if not remote:
            raise BackupError(f"no backups in {settings.backups} or the backups bucket. Create one with "
                              "`studioops backup create`")
        ref = remote[0][1]
    path = Path(ref).expanduser()
    if path.is_file():
        return path.absolute()
    for archive in arc.local_archives(settings.backups):
        if archive.name == ref:
            return archive.path
    for kind, name, _ in _remote(settings):
        if name == ref:
            dest = settings.backups / kind / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            _storage(settings).get_file(BACKUP_BUCKET, f"{kind}/{name}", dest)
            return dest
    raise BackupError(f"no archive '{ref}'. `studioops backup list` shows the archives")


# -- verify ---------------------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    archive: Path
    members_checked: int
    tables: dict[str, dict]
    objects: int
    seconds: float
    ok: bool = True

    def as_dict(self) -> dict:
        return {"archive": str(self.archive), "ok": self.ok, "members_checked": self.members_checked,
                "tables": self.tables, "objects": self.objects, "seconds": round(self.seconds, 3)}


def _compare_tables(expected: dict[str, dict]) -> Callable:
    def check(conn) -> None:
        actual = dbx.fingerprints(conn)
        for table, want in expected.items():
            got = actual.get(table)
            if got != want:
                raise CorruptArchiveError(
                    f"table {table} restored with {got and got['rows']} rows / hash {got and got['hash']}, "
                    f"the manifest says {want['rows']} / {want['hash']}. The archive does not restore faithfully"
                )
    return check


def _dump_file(reader: arc.ArchiveReader, folder: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=".restore-", suffix=".dump", dir=folder)
    os.close(fd)
    path = Path(name)
    dbx.decompress_to(reader.open_member(arc.DB_MEMBER), path)
    return path


def _restore_database(settings: Settings, reader: arc.ArchiveReader, purpose: str) -> str:
    """Restore the archive's dump into a new database and check every table against the manifest; returns the
    new database's name (the live one is never touched)."""
    dump = _dump_file(reader, reader.path.parent)
    try:
        return dbx.restore_into_new(settings.db, dump, purpose, _compare_tables(reader.manifest["tables"]))
    finally:
        dump.unlink(missing_ok=True)


def verify_backup(settings: Settings, ref: str, progress: Progress = _noop) -> VerifyResult:
    """Checksums of every member, then a restore into a scratch database compared table by table."""
    began = time.perf_counter()
    path = find_archive(settings, ref)
    with arc.ArchiveReader(path) as reader:
        progress("checksums", 0, None)
        checked = reader.check_all()
        progress("restore", 0, None)
        dbx.drop_database(settings.db, _restore_database(settings, reader, "verify"))
        result = VerifyResult(path, checked, reader.manifest["tables"], len(reader.manifest["objects"]),
                              time.perf_counter() - began)
    _verified_file(path).write_text(json.dumps({"verified_at": datetime.now(UTC).isoformat()}))
    return result


# -- restore --------------------------------------------------------------------------------------------
@dataclass
class RestoreResult:
    archive: Path
    dry_run: bool
    tables: dict[str, dict]
    objects: int
    object_bytes: int
    deleted_objects: int
    seconds: float

    def as_dict(self) -> dict:
        return {"archive": str(self.archive), "dry_run": self.dry_run, "tables": self.tables,
                "objects": self.objects, "object_bytes": self.object_bytes,
                "deleted_objects": self.deleted_objects, "seconds": round(self.seconds, 3)}


def _existing_objects(storage, buckets: list[str]) -> dict[tuple[str, str], int]:
    """Objects now in `buckets` (folder markers of the standard layout excluded)."""
    from studioops.storage.layout import LAYOUT

    present = set(storage.list_buckets())
    out = {}
    for bucket in buckets:
        if bucket not in present:
            continue
        for obj in storage.iter_objects(bucket):
            if obj.size == 0 and obj.key in LAYOUT.get(bucket, []):
                continue
            out[(bucket, obj.key)] = obj.size
    return out


def restore_backup(settings: Settings, ref: str, force: bool = False, dry_run: bool = False,
                   progress: Progress = _noop) -> RestoreResult:
    """Checksums first (a damaged archive changes nothing); refuse to overwrite data without `force`;
    restore the database into a new database, upload the objects, then swap the new database in."""
    began = time.perf_counter()
    path = find_archive(settings, ref)
    storage = _storage(settings)
    with arc.ArchiveReader(path) as reader:
        progress("checksums", 0, None)
        reader.check_all()
        manifest = reader.manifest
        objects = manifest["objects"]
        buckets = sorted({o["bucket"] for o in objects})
        existing_rows = dbx.holds_data(settings.db, [t for t in manifest["tables"] if t != "migrations"])
        wanted = {(o["bucket"], o["key"]) for o in objects}
        existing = _existing_objects(storage, buckets)
        extra = [k for k in existing if k not in wanted]
        if (existing_rows or existing) and not force:
            what = []
            if existing_rows:
                what.append(", ".join(f"{t} ({n} rows)" for t, n in sorted(existing_rows.items())[:4]))
            if existing:
                what.append(f"{len(existing)} objects in {', '.join(sorted({b for b, _ in existing}))}")
            raise RestoreRefusedError(
                f"the target holds data: {'; '.join(what)}. Restoring would replace it. Back it up first "
                "(`studioops backup create`), then add --force"
            )
        result = RestoreResult(path, dry_run, manifest["tables"], len(objects), sum(o["size"] for o in objects),
                               len(extra), 0.0)
        if dry_run:
            result.seconds = time.perf_counter() - began
            return result

        progress("database", 0, None)
        new_db = _restore_database(settings, reader, "restore")
        try:
            done = 0
            total = result.object_bytes
            progress("objects", 0, total)
            for bucket in buckets:
                storage.ensure_bucket(bucket)
            for obj in objects:
                storage.put_stream(reader.open_member(obj["member"]), obj["bucket"], obj["key"])
                done += obj["size"]
                progress("objects", done, total)
            for bucket, key in extra:
                storage.delete(bucket, key)
            dbx.swap_in(settings.db, new_db)
        except BaseException:
            dbx.drop_database(settings.db, new_db)
            raise
    result.seconds = time.perf_counter() - began
    return result


# -- prune ----------------------------------------------------------------------------------------------
def prune_backups(settings: Settings) -> list[str]:
    """Apply retention locally and in the bucket; returns what was deleted (as `local:NAME`/`bucket:KEY`)."""
    verified = _verified_names(settings)
    newest_verified = max(verified, key=lambda n: arc.archive_time(n), default=None)
    deleted = []
    local = arc.local_archives(settings.backups)
    entries = [Entry(a.name, a.kind, a.created) for a in local]
    by_name = {a.name: a for a in local}
    for entry in to_delete(entries, settings.backup_keep_daily, settings.backup_keep_weekly, newest_verified):
        path = by_name[entry.name].path
        path.unlink(missing_ok=True)
        _verified_file(path).unlink(missing_ok=True)
        deleted.append(f"local:{entry.name}")
    remote = _remote(settings)
    remote_entries = [Entry(name, kind, arc.archive_time(name)) for kind, name, _ in remote]
    for entry in to_delete(remote_entries, settings.backup_keep_daily, settings.backup_keep_weekly,
                           newest_verified):
        _storage(settings).delete(BACKUP_BUCKET, f"{entry.kind}/{entry.name}")
        deleted.append(f"bucket:{entry.kind}/{entry.name}")
    return deleted
