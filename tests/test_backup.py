"""Backups against real PostgreSQL and real S3: round trip, damaged archives, refusals, crashes, retention."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from studioops.backup import archive as arc
from studioops.backup import prune_backups
from studioops.backup.database import fingerprints
from studioops.stack.process import wait_until
from tests.conftest import LATEST_MIGRATION


def objects_of(stack) -> dict[tuple[str, str], str]:
    """sha256 of every object outside the backups bucket."""
    storage = stack.storage()
    return {(b, o.key): hashlib.sha256(storage.get_bytes(b, o.key)).hexdigest()
            for b in storage.list_buckets() if b != "backups" for o in storage.iter_objects(b)}


def table_state(stack) -> dict:
    with psycopg.connect(stack.url) as conn:
        return fingerprints(conn)


@pytest.fixture
def seeded(fresh_stack):
    """A running stack of the test's own with seed data and 200 binary objects under unicode keys."""
    assert fresh_stack.cli("up").returncode == 0
    assert fresh_stack.cli("db", "seed").returncode == 0
    storage = fresh_stack.storage()
    for i in range(200):
        bucket = ("documents", "generated", "uploads")[i % 3]
        key = f"projects/{i:03d}/Angebot – Übersicht 報告 {i}.bin" if i % 2 else f"reports/r{i}.pdf"
        storage.put_bytes(bucket, key, os.urandom(100 + i * 37) + bytes(range(256)))
    return fresh_stack


def newest_archive(stack) -> str:
    return str(arc.local_archives(stack.settings.backups)[0].path)


def test_round_trip_after_clean_restores_identical_rows_and_objects(seeded):
    rows_before, objects_before = table_state(seeded), objects_of(seeded)
    created = seeded.cli("backup", "create", "--json")
    assert created.returncode == 0, created.stderr
    result = json.loads(created.stdout)
    assert result["objects"] == len(objects_before)
    assert result["uploaded"].startswith("backups/daily/studioops-backup-")
    assert seeded.cli("backup", "verify", "latest").returncode == 0

    cleaned = seeded.cli("clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(p.name for p in seeded.home.iterdir()) == ["backups"]
    assert seeded.cli("up").returncode == 0
    assert table_state(seeded)["projects"]["rows"] == 0

    restored = seeded.cli("backup", "restore", "latest")
    assert restored.returncode == 0, restored.stderr
    assert table_state(seeded) == rows_before  # every table: same row count and content hash
    assert objects_of(seeded) == objects_before  # every object byte-identical


def test_manifest_describes_the_archive(seeded):
    assert seeded.cli("backup", "create").returncode == 0
    with arc.ArchiveReader(arc.local_archives(seeded.settings.backups)[0].path) as reader:
        m = reader.manifest
    assert m["database"]["postgresql"].startswith("18.") and m["database"]["pgvector"].startswith("0.8")
    assert m["database"]["migration_head"] == LATEST_MIGRATION
    assert m["tables"]["projects"]["rows"] == 4
    assert arc.DB_MEMBER in m["members"] and all(len(v["sha256"]) == 64 for v in m["members"].values())
    assert len(m["objects"]) == len(objects_of(seeded))


def flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("where", ["object", "database", "manifest"])
def test_one_flipped_byte_is_refused_and_nothing_changes(seeded, where):
    assert seeded.cli("backup", "create").returncode == 0
    path = newest_archive(seeded)
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    member = {"object": members["objects/000007"], "database": members[arc.DB_MEMBER],
              "manifest": members[arc.MANIFEST]}[where]
    flip_byte(path, member.offset_data + member.size // 2)
    with psycopg.connect(seeded.url) as conn:
        conn.execute("UPDATE projects SET description = 'changed after the backup'")
        conn.commit()
    before = table_state(seeded)

    verify = seeded.cli("backup", "verify", path)
    assert verify.returncode == 1 and "checksum" in verify.stderr and "Traceback" not in verify.stderr
    restore = seeded.cli("backup", "restore", path, "--force")
    assert restore.returncode == 1 and "checksum" in restore.stderr
    assert table_state(seeded) == before


def test_truncated_archive_is_refused(seeded):
    assert seeded.cli("backup", "create").returncode == 0
    path = newest_archive(seeded)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    before = table_state(seeded)
    for args in (("verify", path), ("restore", path, "--force")):
        result = seeded.cli("backup", *args)
        assert result.returncode == 1, args
        assert result.stderr.startswith("studioops: ") and result.stderr.count("\n") == 1
        assert "damaged or truncated" in result.stderr or "truncated" in result.stderr
    assert table_state(seeded) == before


def test_restore_over_data_needs_force(seeded):
    assert seeded.cli("backup", "create").returncode == 0
    with psycopg.connect(seeded.url) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('made after the backup')")
        conn.commit()
    refused = seeded.cli("backup", "restore", "latest")
    assert refused.returncode == 1 and "--force" in refused.stderr and "holds data" in refused.stderr
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE name = 'made after the backup'").fetchone()[0] == 1
    dry = seeded.cli("backup", "restore", "latest", "--force", "--dry-run")
    assert dry.returncode == 0 and "would restore" in dry.stdout
    forced = seeded.cli("backup", "restore", "latest", "--force")
    assert forced.returncode == 0, forced.stderr
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE name = 'made after the backup'").fetchone()[0] == 0


def test_force_restore_removes_objects_not_in_the_archive(seeded):
    assert seeded.cli("backup", "create").returncode == 0
    seeded.storage().put_bytes("documents", "projects/new-after-backup.txt", b"new")
    assert seeded.cli("backup", "restore", "latest", "--force").returncode == 0
    assert ("documents", "projects/new-after-backup.txt") not in objects_of(seeded)


def test_killed_backup_leaves_no_archive(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    storage = fresh_stack.storage()
    block = os.urandom(1 << 20)
    for i in range(150):
        storage.put_bytes("uploads", f"pending/big-{i}.bin", block)
    env = {**os.environ, **fresh_stack.env}
    proc = subprocess.Popen([sys.executable, "-m", "studioops", "backup", "create"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = fresh_stack.settings.backups / "daily"

    def partial_growing() -> bool:
        return any(p.stat().st_size > (20 << 20) for p in folder.glob(".*.partial")) if folder.exists() else False

    assert wait_until(partial_growing, 60, 0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    listed = json.loads(fresh_stack.cli("backup", "list", "--json").stdout)["backups"]
    assert listed == []
    assert not list(folder.glob("studioops-backup-*.tar"))
    # The next backup clears the dead one's partial files and succeeds.
    assert fresh_stack.cli("backup", "create").returncode == 0
    assert not list(folder.glob(".*.partial"))
    assert len(json.loads(fresh_stack.cli("backup", "list", "--json").stdout)["backups"]) == 1


def _synthetic(settings, storage, days: int, kind: str, start: datetime) -> list[str]:
    names = []
    folder = settings.backups / kind
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(days):
        name = arc.archive_name(start - timedelta(days=i * (7 if kind == "weekly" else 1)))
        (folder / name).write_bytes(b"synthetic")
        storage.put_bytes("backups", f"{kind}/{name}", b"synthetic")
        names.append(name)
    return names


def test_retention_keeps_exactly_7_daily_and_4_weekly(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    settings, storage = fresh_stack.settings, fresh_stack.storage()
    start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    daily = _synthetic(settings, storage, 20, "daily", start)
    weekly = _synthetic(settings, storage, 9, "weekly", start + timedelta(hours=1))
    pruned = prune_backups(settings)
    assert len(pruned) == (20 - 7 + 9 - 4) * 2  # locally and in the bucket
    local = arc.local_archives(settings.backups)
    assert sorted(a.name for a in local if a.kind == "daily") == sorted(daily[:7])
    assert sorted(a.name for a in local if a.kind == "weekly") == sorted(weekly[:4])
    remote = {o.key for o in storage.iter_objects("backups") if o.size}
    assert remote == {f"daily/{n}" for n in daily[:7]} | {f"weekly/{n}" for n in weekly[:4]}


def test_retention_never_deletes_the_newest_verified_archive(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    settings, storage = fresh_stack.settings, fresh_stack.storage()
    start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    daily = _synthetic(settings, storage, 10, "daily", start)
    old = settings.backups / "daily" / daily[-1]
    (old.parent / (old.name + ".verified.json")).write_text(json.dumps({"verified_at": "2026-11-01T00:00:00Z"}))
    prune_backups(settings)
    kept = {a.name for a in arc.local_archives(settings.backups)}
    assert kept == set(daily[:7]) | {daily[-1]}


def test_backup_and_verify_work_on_any_database_url(running_stack, scratch_db, tmp_path):
    """An external DATABASE_URL: the shared server's scratch database, written to a directory of our own."""
    env = {"DATABASE_URL": scratch_db, "BACKUP_DIR": str(tmp_path / "external"), "BACKUP_UPLOAD": "false"}
    assert running_stack.cli("db", "migrate", env=env).returncode == 0
    assert running_stack.cli("db", "seed", env=env).returncode == 0
    created = running_stack.cli("backup", "create", "--json", env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["uploaded"] is None
    verified = running_stack.cli("backup", "verify", "latest", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["tables"]["projects"]["rows"] == 4


def test_clean_asks_and_keeps_backups(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    refused = fresh_stack.cli("clean")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert fresh_stack.cli("backup", "create").returncode == 0
    assert fresh_stack.cli("clean", "--yes").returncode == 0
    assert [p.name for p in fresh_stack.home.iterdir()] == ["backups"]
    assert fresh_stack.cli("clean", "--yes", "--include-backups").returncode == 0
    assert list(fresh_stack.home.iterdir()) == []
