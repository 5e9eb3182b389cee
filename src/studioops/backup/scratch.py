"""Scratch state of verify and restore (a decompressed dump, a scratch database) and the removal of what
killed runs left behind: each is named after its process, and removed once that process is gone."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from studioops.backup import archive as arc
from studioops.backup import database as dbx
from studioops.backup.files import open_private, private_dir
from studioops.backup.testhook import pause_at
from studioops.config import Settings

DUMP = re.compile(r"^\.restore-(\d+)-\w+\.dump(\.toc)?$")  # the dump, and the list pg_restore reads


def scratch_folder(settings: Settings) -> Path:
    """Where decompressed dumps go while pg_restore reads them (next to the archives: that disk has room)."""
    return private_dir(settings.backups / ".scratch")


def lock_path(settings: Settings) -> Path:
    return private_dir(settings.home / "run") / "backup.lock"


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """One process at a time settles an interrupted restore or removes leftovers."""
    with open_private_append(lock_path(settings)) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def open_private_append(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab")


def dump_file(settings: Settings, reader: arc.ArchiveReader) -> Path:
    """The archive's database dump, decompressed into a private scratch file named after this process."""
    fd, name = tempfile.mkstemp(prefix=f".restore-{os.getpid()}-", suffix=".dump", dir=scratch_folder(settings))
    os.close(fd)
    path = Path(name)
    try:
        with open_private(path) as out:
            dbx.decompress_into(reader.open_member(arc.DB_MEMBER), out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def restore_database(settings: Settings, reader: arc.ArchiveReader, name: str, check=None,
                     phase: str = "") -> str:
    """Restore the archive's dump into the new database `name`; check it; the live one is never touched.
    (`phase`: the test hook's name for the moment the scratch database and dump file both exist.)"""
    dump = dump_file(settings, reader)
    try:
        return dbx.restore_into_new(settings.db, dump, name, check, created=lambda: pause_at(phase))
    finally:
        dump.unlink(missing_ok=True)


def _gone(pid: int) -> bool:
    from studioops.stack.process import is_alive

    return not is_alive(pid)


def clear_leftovers(settings: Settings, keep: set[str] = frozenset()) -> list[str]:
    """Remove scratch databases, decompressed dumps and partial archives whose process is gone (killed);
    returns what was removed. `keep` names databases an interrupted restore still needs."""
    removed = []
    folder = settings.backups / ".scratch"
    if folder.is_dir():
        for path in folder.iterdir():
            match = DUMP.match(path.name)
            if match and _gone(int(match[1])):
                path.unlink(missing_ok=True)
                removed.append(str(path))
    for kind in (*arc.KINDS, arc.PRE_RESTORE):
        removed += clear_partials(settings.backups / kind)
    host = socket.gethostname()
    for name, owner, pid in dbx.scratch_databases(settings.db):
        if owner == host and name not in keep and _gone(pid):
            dbx.drop_database(settings.db, name)
            removed.append(f"database {name}")
    return removed


def clear_partials(folder: Path) -> list[str]:
    """`.partial` files of backups whose process is gone (killed mid-way)."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.partial"):
        parts = path.name.split(".")
        pid = int(parts[-2]) if len(parts) > 2 and parts[-2].isdigit() else 0
        if _gone(pid):
            path.unlink(missing_ok=True)
            removed.append(str(path))
    return removed
