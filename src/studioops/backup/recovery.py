"""The restore journal, and settling a restore that was interrupted (killed, or failed midway).

`restore --force` writes `$STUDIOOPS_HOME/run/restore.json` (atomically, 0600) before it changes anything and
updates its phase as it goes:

- `database`: restoring into a new scratch database; nothing live has changed.
- `objects`: objects are being overwritten and deleted; the database is unchanged.
- `swap`: every object is in place; the new database is being renamed in (one transaction: it commits or not).
- `rollback`: a roll back started and must be completed.

Settling (which `up`, `status` and every `backup` command do first) follows one rule: if the new database was
swapped in, the restore is finished (the old database dropped); otherwise it is rolled back (the new database
dropped, the objects put back from the pre-restore archive, the safety copy taken before anything changed).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.catalog import storage_of
from studioops.backup.files import write_json
from studioops.backup.objects import put_all
from studioops.backup.scratch import clear_leftovers, locked
from studioops.config import Settings
from studioops.errors import BackupError, StudioOpsError, one_line

UNDO = "`studioops backup undo`"


@dataclass
class Journal:
    archive: str
    pre_restore: str
    database: str
    new_db: str
    old_db: str
    buckets: list[str]
    phase: str = "database"
    pid: int = 0
    host: str = ""

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.home / "run" / "restore.json"

    def save(self, settings: Settings, phase: str | None = None) -> None:
        if phase:
            self.phase = phase
        write_json(self.path(settings), asdict(self))

    @classmethod
    def load(cls, settings: Settings) -> Journal | None:
        path = cls.path(settings)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise BackupError(f"the restore journal {path} is unreadable ({exc}). Check the database and "
                              "buckets, then delete the file") from None

    def running(self) -> bool:
        from studioops.stack.process import is_alive

        return self.host == socket.gethostname() and self.pid != os.getpid() and is_alive(self.pid)

    def remove(self, settings: Settings) -> None:
        self.path(settings).unlink(missing_ok=True)


def start_journal(settings: Settings, archive: Path, pre_restore: Path, buckets: list[str]) -> Journal:
    journal = Journal(str(archive), str(pre_restore), settings.db.dbname, dbx.scratch_name(settings.db, "restore"),
                      dbx.scratch_name(settings.db, "old"), buckets, pid=os.getpid(), host=socket.gethostname())
    journal.save(settings)
    return journal


def finish(settings: Settings, journal: Journal) -> str:
    dbx.drop_database(settings.db, journal.old_db)
    journal.remove(settings)
    return (f"finished the interrupted restore of {Path(journal.archive).name}: the restored database and "
            f"objects are live; the state before it is kept in {journal.pre_restore} ({UNDO} brings it back)")


def roll_back(settings: Settings, journal: Journal) -> str:
    """Drop the new database; put the objects back from the pre-restore archive when any had changed."""
    touched = journal.phase != "database"
    journal.save(settings, "rollback" if touched else None)
    dbx.drop_database(settings.db, journal.new_db)
    if touched:
        with arc.ArchiveReader(Path(journal.pre_restore)) as reader:
            reader.check_all()
            put_all(storage_of(settings), reader, sorted(set(journal.buckets) | set(reader.manifest.get(
                "buckets", []))), lambda *a: None)
    journal.remove(settings)
    what = f"objects put back from {journal.pre_restore}" if touched else "nothing had changed yet"
    return (f"rolled back the interrupted restore of {Path(journal.archive).name}: the database and objects are "
            f"as before it ({what})")


def settle_journal(settings: Settings, journal: Journal) -> str:
    """Finish the restore if its database was swapped in, else roll it back; returns which, as a sentence."""
    try:
        swapped = journal.phase == "swap" and not dbx.database_exists(settings.db, journal.new_db)
        return finish(settings, journal) if swapped else roll_back(settings, journal)
    except (StudioOpsError, OSError) as exc:
        raise BackupError(
            f"a restore of {Path(journal.archive).name} was interrupted and settling it failed: {one_line(exc)}. "
            f"Fix that, then run {UNDO} (the state before it is kept in {journal.pre_restore})"
        ) from None


def settle(settings: Settings, leftovers: bool = True) -> list[str]:
    """What `up`, `status` and every `backup` command do first: settle an interrupted restore (finish or roll
    back), then remove leftovers of killed runs. Returns sentences saying what was done."""
    journal = Journal.load(settings)
    if journal is None and not leftovers:
        return []
    notes = []
    with locked(settings):
        journal = Journal.load(settings)
        if journal is not None:
            if journal.running():
                return [f"a restore of {Path(journal.archive).name} is running (pid {journal.pid})"]
            notes.append(settle_journal(settings, journal))
        if leftovers:
            removed = clear_leftovers(settings)
            if removed:
                notes.append("removed leftovers of killed runs: " + ", ".join(removed))
    return notes


def undo(settings: Settings, progress=None) -> tuple[list[str], object | None]:
    """`backup undo`: settle an interrupted restore; with none, restore the newest pre-restore archive
    (bring back what the last restore replaced). Returns the notes and the RestoreResult, if one ran."""
    from studioops.backup.restore import restore_backup

    journal = Journal.load(settings)
    if journal is not None:
        return settle(settings), None
    safety = [a for a in arc.local_archives(settings.backups) if a.kind == arc.PRE_RESTORE]
    if not safety:
        raise BackupError(f"no restore to undo: no pre-restore archive in {settings.backups / arc.PRE_RESTORE}")
    kwargs = {"progress": progress} if progress else {}
    return [], restore_backup(settings, str(safety[0].path), force=True, **kwargs)
