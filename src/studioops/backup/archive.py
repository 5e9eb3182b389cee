"""The archive: one tar file holding the database dump, every object, and a manifest with their checksums.

Layout: `database.dump.zst` (pg_dump custom format through zstd), `objects/NNNNNN` (object bodies; bucket and key
are in the manifest, so no key ever becomes a path), `manifest.json`, and `manifest.sha256` (the manifest's own
checksum, so a damaged key or hash inside it is caught too). Written under a temporary name, fsynced and renamed:
an interrupted backup never leaves anything that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from studioops.backup.files import fsync_dir, open_private, private_dir
from studioops.errors import CorruptArchiveError

FORMAT_VERSION = 1
PREFIX = "studioops-backup-"
NAME = re.compile(r"^studioops-backup-(\d{8}T\d{6}Z)\.tar$")
DB_MEMBER = "database.dump.zst"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
CHUNK = 1 << 20
KINDS = ("daily", "weekly")  # uploaded to the backups bucket under these prefixes
PRE_RESTORE = "pre-restore"  # the safety copy `restore --force` takes first (local only)


def archive_name(when: datetime) -> str:
    return f"{PREFIX}{when.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar"


def archive_time(name: str) -> datetime | None:
    match = NAME.match(name)
    return datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if match else None


@dataclass(frozen=True)
class LocalArchive:
    path: Path
    kind: str  # daily | weekly | pre-restore
    created: datetime
    size: int

    @property
    def name(self) -> str:
        return self.path.name


def local_archives(root: Path) -> list[LocalArchive]:
    """Complete archives under root/daily and root/weekly (and root itself), newest first. Partial files
    (`.partial`) never match the name pattern, so an interrupted backup is never listed."""
    found = []
    folders = (("daily", root / "daily"), ("weekly", root / "weekly"), (PRE_RESTORE, root / PRE_RESTORE),
               ("daily", root))
    for kind, folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            created = archive_time(path.name)
            if created and path.is_file():
                found.append(LocalArchive(path, kind, created, path.stat().st_size))
    return sorted(found, key=lambda a: a.created, reverse=True)


class HashingReader:
    """Wraps a stream; hashes and counts what is read through it (so each byte is read once)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


class ArchiveWriter:
    """Write members in order to a hidden `.partial` file; `commit()` fsyncs and renames it to `final`."""

    def __init__(self, final: Path) -> None:
        self.final = final
        # Hidden, and named after our pid: a later backup deletes it if this process died mid-way.
        self.partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
        private_dir(final.parent)
        # Both stay open until commit() or abort(); the archive is readable by its owner only.
        self._file = open_private(self.partial)
        self.tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.members: dict[str, dict[str, Any]] = {}

    def add_stream(self, name: str, stream: IO[bytes], size: int) -> dict[str, Any]:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(datetime.now(UTC).timestamp())
        info.mode = 0o600
        reader = HashingReader(stream)
        self.tar.addfile(info, reader)
        if reader.size != size:
            raise CorruptArchiveError(f"{name}: expected {size} bytes, read {reader.size}. The source changed; retry")
        entry = {"sha256": reader.sha.hexdigest(), "size": size}
        self.members[name] = entry
        return entry

    def add_file(self, name: str, path: Path) -> dict[str, Any]:
        with path.open("rb") as f:
            return self.add_stream(name, f, path.stat().st_size)

    def add_bytes(self, name: str, data: bytes) -> None:
        import io

        self.add_stream(name, io.BytesIO(data), len(data))

    def commit(self, manifest: dict[str, Any]) -> Path:
        body = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode()
        self.add_bytes(MANIFEST, body)
        self.add_bytes(MANIFEST_SUM, (hashlib.sha256(body).hexdigest() + "\n").encode())
        self.tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # already broken: the partial file goes anyway
            self.tar.close()
        self._file.close()
        self.partial.unlink(missing_ok=True)


class ArchiveReader:
    """Open an archive and its manifest; every read is checked against the manifest's checksums."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise CorruptArchiveError(f"no such archive: {path}. `studioops backup list` shows the archives")
        try:
            self.tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close() / __exit__
            self._members = {m.name: m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptArchiveError(
                f"{path.name} is damaged or truncated ({exc}). Use another archive (`studioops backup list`)"
            ) from None
        self.manifest = self._read_manifest()

    def _raw(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None:
            raise CorruptArchiveError(f"{self.path.name} has no {name}: it is not a complete StudioOps backup")
        try:
            return self.tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptArchiveError(f"{self.path.name} is truncated ({name}: {exc})") from None

    def _read_manifest(self) -> dict[str, Any]:
        body = self._raw(MANIFEST)
        expected = self._raw(MANIFEST_SUM).decode(errors="replace").strip()
        if hashlib.sha256(body).hexdigest() != expected:
            raise CorruptArchiveError(f"{self.path.name}: the manifest fails its checksum. The archive is damaged")
        try:
            manifest = json.loads(body)
        except ValueError:
            raise CorruptArchiveError(f"{self.path.name}: the manifest is not JSON. The archive is damaged") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise CorruptArchiveError(f"{self.path.name}: unknown archive format {manifest.get('format')!r}")
        return manifest

    def open_member(self, name: str) -> IO[bytes]:
        member = self._members.get(name)
        if member is None:
            raise CorruptArchiveError(f"{self.path.name} lacks {name}, which its manifest lists. It is damaged")
        return self.tar.extractfile(member)

    def check_member(self, name: str) -> None:
        """Stream one member and compare its size and sha256 with the manifest."""
        expected = self.manifest["members"][name]
        sha = hashlib.sha256()
        size = 0
        try:
            stream = self.open_member(name)
            while chunk := stream.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptArchiveError(f"{self.path.name} is truncated ({name}: {exc})") from None
        if size != expected["size"] or sha.hexdigest() != expected["sha256"]:
            raise CorruptArchiveError(
                f"{self.path.name}: {name} fails its checksum (damaged archive). Nothing was changed; use another "
                "archive (`studioops backup list`)"
            )

    def check_all(self) -> int:
        """Every member's checksum; returns how many were checked. Raises on the first damaged one."""
        for name in self.manifest["members"]:
            self.check_member(name)
        return len(self.manifest["members"])

    def objects(self) -> Iterator[dict[str, Any]]:
        yield from self.manifest["objects"]

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
