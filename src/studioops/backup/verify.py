"""`backup verify`: every checksum, then a restore into a scratch database compared table by table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.catalog import find_archive, verified_file
from studioops.backup.create import Progress, no_progress
from studioops.backup.files import write_json
from studioops.backup.scratch import restore_database
from studioops.config import Settings
from studioops.errors import CorruptArchiveError


@dataclass
class VerifyResult:
    archive: Path
    members_checked: int
    tables: dict[str, dict]
    objects: int
    seconds: float
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"archive": str(self.archive), "ok": self.ok, "members_checked": self.members_checked,
                "tables": self.tables, "objects": self.objects, "seconds": round(self.seconds, 3),
                "notes": self.notes}


def compare_tables(expected: dict[str, dict]) -> Callable:
    """A check for restore_database: every table's row count and content hash as the manifest says."""
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


def verify_backup(settings: Settings, ref: str, progress: Progress = no_progress) -> VerifyResult:
    """Checksums of every member, then a restore into a scratch database compared table by table."""
    from studioops.backup.recovery import settle

    notes = settle(settings)
    began = time.perf_counter()
    path = find_archive(settings, ref)
    with arc.ArchiveReader(path) as reader:
        progress("checksums", 0, None)
        checked = reader.check_all()
        progress("restore", 0, None)
        scratch = dbx.scratch_name(settings.db, "verify")
        try:
            restore_database(settings, reader, scratch, compare_tables(reader.manifest["tables"]),
                             phase="verify-database")
        finally:
            dbx.drop_database(settings.db, scratch)
        result = VerifyResult(path, checked, reader.manifest["tables"], len(reader.manifest["objects"]),
                              time.perf_counter() - began, notes=notes)
    write_json(verified_file(path), {"verified_at": datetime.now(UTC).isoformat()})
    return result
