"""`backup prune`: retention locally and in the bucket."""

from __future__ import annotations

from studioops.backup import archive as arc
from studioops.backup.catalog import BACKUP_BUCKET, remote, storage_of, verified_file, verified_names
from studioops.backup.retention import Entry, to_delete
from studioops.config import Settings
from studioops.errors import StorageError

KEEP_PRE_RESTORE = 3  # safety copies of the newest restores (`backup undo` uses the newest)


def prune_backups(settings: Settings, settled: bool = False, stale_uploads: float | None = None) -> list[str]:
    """Apply retention locally and in the bucket, and abort incomplete multipart uploads over a day old (the
    leftovers of killed uploads); returns what was deleted (as `local:NAME`, `bucket:KEY`, `upload:BUCKET/KEY`)."""
    if not settled:
        from studioops.backup.recovery import settle

        settle(settings)
    verified = verified_names(settings)
    newest_verified = max(verified, key=lambda n: arc.archive_time(n), default=None)
    deleted = []
    local = arc.local_archives(settings.backups)
    entries = [Entry(a.name, a.kind, a.created) for a in local]
    by_key = {(a.kind, a.name): a for a in local}
    keep = {"daily": settings.backup_keep_daily, "weekly": settings.backup_keep_weekly,
            arc.PRE_RESTORE: KEEP_PRE_RESTORE}
    for entry in to_delete(entries, keep, newest_verified):
        path = by_key[(entry.kind, entry.name)].path
        path.unlink(missing_ok=True)
        verified_file(path).unlink(missing_ok=True)
        deleted.append(f"local:{entry.name}")
    try:
        found = remote(settings)
    except StorageError:
        return deleted  # the bucket is pruned by the next run that reaches it
    remote_entries = [Entry(name, kind, arc.archive_time(name)) for kind, name, _ in found]
    for entry in to_delete(remote_entries, keep, newest_verified):
        storage_of(settings).delete(BACKUP_BUCKET, f"{entry.kind}/{entry.name}")
        deleted.append(f"bucket:{entry.kind}/{entry.name}")
    from studioops.storage.client import STALE_UPLOAD_SECONDS

    aborted = storage_of(settings).abort_stale_uploads(older_than=stale_uploads or STALE_UPLOAD_SECONDS)
    deleted.extend(f"upload:{u.bucket}/{u.key}" for u in aborted)
    return deleted
