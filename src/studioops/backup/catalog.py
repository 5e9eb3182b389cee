"""Finding archives: local ones under BACKUP_DIR, those in the backups bucket, and when each was verified."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studioops.backup import archive as arc
from studioops.backup.files import private_dir
from studioops.config import Settings
from studioops.errors import BackupError, StorageError

BACKUP_BUCKET = "backups"


def storage_of(settings: Settings):
    from studioops.storage import Storage

    return Storage.from_settings(settings, timeout=10)


def verified_file(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verified_names(settings: Settings) -> dict[str, str]:
    out = {}
    for archive in arc.local_archives(settings.backups):
        marker = verified_file(archive.path)
        if marker.exists():
            try:
                out[archive.name] = json.loads(marker.read_text())["verified_at"]
            except (ValueError, KeyError):
                continue
    return out


def remote(settings: Settings) -> list[tuple[str, str, int]]:
    """(kind, name, size) of the archives in the backups bucket; raises StorageError when it cannot be read."""
    storage = storage_of(settings)
    out = []
    for kind in arc.KINDS:
        for obj in storage.iter_objects(BACKUP_BUCKET, f"{kind}/"):
            name = obj.key.split("/", 1)[1]
            if arc.archive_time(name):
                out.append((kind, name, obj.size))
    return out


@dataclass
class BackupList:
    rows: list[dict[str, Any]]
    bucket_error: str | None = None  # why the backups bucket could not be read
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"backups": self.rows, "bucket_error": self.bucket_error, "notes": self.notes}


def list_backups(settings: Settings) -> BackupList:
    """Every archive, local and in the bucket, newest first; an unreadable bucket is reported, not hidden."""
    verified = verified_names(settings)
    rows: dict[str, dict[str, Any]] = {}
    for a in arc.local_archives(settings.backups):
        rows[a.name] = {"name": a.name, "kind": a.kind, "created": a.created.isoformat(), "size": a.size,
                        "local": str(a.path), "bucket": None, "verified_at": verified.get(a.name)}
    error = None
    try:
        found = remote(settings)
    except StorageError as exc:
        found, error = [], str(exc)
    for kind, name, size in found:
        row = rows.setdefault(name, {"name": name, "kind": kind, "created": arc.archive_time(name).isoformat(),
                                     "size": size, "local": None, "verified_at": verified.get(name)})
        row["bucket"] = f"{BACKUP_BUCKET}/{kind}/{name}"
    return BackupList(sorted(rows.values(), key=lambda r: r["created"], reverse=True), error)


def find_archive(settings: Settings, ref: str) -> Path:
    """`latest` (the newest daily or weekly one), a path, or an archive name (local, else downloaded from the
    backups bucket)."""
    if ref == "latest":
        local = [a for a in arc.local_archives(settings.backups) if a.kind in arc.KINDS]
        if local:
            return local[0].path
        newest = sorted(remote(settings), key=lambda r: r[1], reverse=True)
        if not newest:
            raise BackupError(f"no backups in {settings.backups} or the backups bucket. Create one with "
                              "`studioops backup create`")
        ref = newest[0][1]
    path = Path(ref).expanduser()
    if path.is_file():
        return path.absolute()
    for archive in arc.local_archives(settings.backups):
        if archive.name == ref:
            return archive.path
    for kind, name, _ in remote(settings):
        if name == ref:
            dest = private_dir(settings.backups / kind) / name
            storage_of(settings).get_file(BACKUP_BUCKET, f"{kind}/{name}", dest)
            dest.chmod(0o600)
            return dest
    raise BackupError(f"no archive '{ref}'. `studioops backup list` shows the archives")
