"""Backups against real PostgreSQL and real S3: round trip, damaged archives, refusals, crashes, retention."""

from __future__ import annotations

import hashlib
import io
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


def test_prune_aborts_stale_incomplete_uploads(running_stack):
    """Issue 10 item 10: the parts of a killed multipart upload hold space until something aborts them."""
    import time

    storage = running_stack.storage()
    key = f"pending/prune-{os.getpid()}-{time.monotonic_ns()}.bin"
    upload = storage.client.create_multipart_upload(Bucket="uploads", Key=key)["UploadId"]
    try:
        assert f"upload:uploads/{key}" not in prune_backups(running_stack.settings)  # a fresh one may still run
        time.sleep(1.5)
        assert f"upload:uploads/{key}" in prune_backups(running_stack.settings, stale_uploads=1)
        assert key not in {u.key for u in storage.incomplete_uploads("uploads")}
    finally:
        import contextlib

        with contextlib.suppress(Exception):
            storage.client.abort_multipart_upload(Bucket="uploads", Key=key, UploadId=upload)


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


# -- interrupted and undone restores (issue 10 items 3, 4, 10, 11; issue 13 items 7, 8, 12, 14) ----------------
PAUSE = "studioops: test hook: paused at"


def start_paused(stack, phase: str, *args: str) -> subprocess.Popen:
    """`studioops ARGS` in a subprocess that stops at the test hook's `phase`; returns once it is there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "STUDIOOPS_", "MINIO_"))}
    env.update({**stack.env, "STUDIOOPS_TEST_PAUSE_AT": phase})
    proc = subprocess.Popen([sys.executable, "-m", "studioops", *args], env=env, cwd=stack.home,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(PAUSE):
            return proc
    proc.wait()
    raise AssertionError(f"{' '.join(args)} never reached {phase} (exit {proc.returncode}): {''.join(seen)}")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def database_names(stack) -> set[str]:
    with stack.connect(dbname="postgres") as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def changed_after_backup(seeded):
    """A backup of the seeded stack, then changes after it: a new row, an overwritten and a new object."""
    assert seeded.cli("backup", "create").returncode == 0
    backed_up = table_state(seeded), objects_of(seeded)
    with psycopg.connect(seeded.url) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('made after the backup')")
        conn.commit()
    storage = seeded.storage()
    storage.put_bytes("documents", "reports/r0.pdf", b"overwritten after the backup")
    storage.put_bytes("uploads", "pending/new-after-backup.bin", b"new")
    live = table_state(seeded), objects_of(seeded)
    assert live != backed_up
    return seeded, backed_up, live


@pytest.mark.parametrize("phase", ["restore-database", "restore-objects", "restore-swap"])
def test_restore_killed_before_its_swap_is_rolled_back_by_up(changed_after_backup, phase):
    stack, _backed_up, live = changed_after_backup
    kill(start_paused(stack, phase, "backup", "restore", "latest", "--force"))
    up = stack.cli("up")
    assert up.returncode == 0, up.stderr
    assert "rolled back the interrupted restore" in up.stdout + up.stderr
    assert (table_state(stack), objects_of(stack)) == live  # the old rows and objects, not a mix
    leftovers = [n for n in database_names(stack) if "__" in n]
    assert leftovers == []
    assert not list((stack.settings.backups / ".scratch").glob("*.dump"))
    assert not (stack.home / "run" / "restore.json").exists()


def test_restore_killed_after_its_swap_is_finished_by_status(changed_after_backup):
    stack, backed_up, _live = changed_after_backup
    kill(start_paused(stack, "restore-finish", "backup", "restore", "latest", "--force"))
    status = stack.cli("status")
    assert "finished the interrupted restore" in status.stderr
    assert (table_state(stack), objects_of(stack)) == backed_up
    assert [n for n in database_names(stack) if "__" in n] == []


def test_killed_swap_never_hides_the_live_database(changed_after_backup):
    """Killed inside the swap (between the two renames): the database named in DATABASE_URL still holds the
    old rows, and `up` does not replace it with an empty one."""
    stack, _backed_up, live = changed_after_backup
    kill(start_paused(stack, "restore-swap", "backup", "restore", "latest", "--force"))
    assert "studioops" in database_names(stack)
    assert table_state(stack) == live[0]
    assert stack.cli("up").returncode == 0
    assert table_state(stack)["projects"]["rows"] == live[0]["projects"]["rows"] > 0


def test_every_backup_command_settles_an_interrupted_restore(changed_after_backup):
    stack, _backed_up, live = changed_after_backup
    kill(start_paused(stack, "restore-objects", "backup", "restore", "latest", "--force"))
    listed = stack.cli("backup", "list")
    assert listed.returncode == 0 and "rolled back the interrupted restore" in listed.stderr
    assert (table_state(stack), objects_of(stack)) == live


def test_undo_brings_back_what_a_restore_replaced(changed_after_backup):
    stack, backed_up, live = changed_after_backup
    restored = stack.cli("backup", "restore", "latest", "--force")
    assert restored.returncode == 0, restored.stderr
    safety = next(iter((stack.settings.backups / "pre-restore").glob("studioops-backup-*.tar")))
    assert str(safety) in restored.stdout and "backup undo" in restored.stdout
    assert (table_state(stack), objects_of(stack)) == backed_up
    undone = stack.cli("backup", "undo")
    assert undone.returncode == 0, undone.stderr
    assert (table_state(stack), objects_of(stack)) == live


def test_archives_sidecars_and_safety_copies_are_private(changed_after_backup):
    stack = changed_after_backup[0]
    assert stack.cli("backup", "verify", "latest").returncode == 0
    assert stack.cli("backup", "restore", "latest", "--force").returncode == 0
    backups = stack.settings.backups
    files = [p for p in backups.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".tar", ".json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o600" for p in files}
    folders = [backups, *(p for p in backups.rglob("*") if p.is_dir())]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in folders} == {str(p): "0o700" for p in folders}


def test_leftovers_of_killed_verify_runs_are_removed(seeded):
    assert seeded.cli("backup", "create").returncode == 0
    scratch = seeded.settings.backups / ".scratch"
    for cleaner in (("up",), ("backup", "prune")):
        kill(start_paused(seeded, "verify-database", "backup", "verify", "latest"))
        assert [n for n in database_names(seeded) if "__verify_" in n]
        assert list(scratch.glob(".restore-*.dump"))
        cleaned = seeded.cli(*cleaner)
        assert cleaned.returncode == 0, cleaned.stderr
        assert [n for n in database_names(seeded) if "__" in n] == []
        assert not list(scratch.glob(".restore-*.dump"))


def test_backup_holds_no_transaction_open_during_the_object_phase(seeded):
    proc = start_paused(seeded, "backup-objects", "backup", "create")
    try:
        with seeded.connect(dbname="postgres") as conn:
            open_ = conn.execute("SELECT application_name, state FROM pg_stat_activity "
                                 "WHERE application_name = 'studioops-backup' AND xact_start IS NOT NULL").fetchall()
        assert open_ == []
    finally:
        kill(proc)


def test_backup_logs_no_transaction_warning(seeded):
    from studioops.stack import log_path

    assert seeded.cli("backup", "create").returncode == 0
    log = log_path(seeded.settings, "postgres").read_text(errors="replace")
    assert "there is already a transaction in progress" not in log


def test_dry_run_reports_that_force_is_needed_and_exits_0(changed_after_backup):
    stack = changed_after_backup[0]
    dry = stack.cli("backup", "restore", "latest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore" in dry.stdout and "--force" in dry.stdout
    as_json = json.loads(stack.cli("backup", "restore", "latest", "--dry-run", "--json").stdout)
    assert as_json["needs_force"] is True and "rows" in as_json["holds_data"]


def test_list_says_when_the_bucket_cannot_be_read(tmp_path):
    from tests.conftest import make_stack, stack_port

    stack = make_stack(tmp_path)
    folder = stack.home / "backups" / "daily"
    folder.mkdir(parents=True)
    (folder / arc.archive_name(datetime(2026, 11, 1, tzinfo=UTC))).write_bytes(b"x")
    env = {"MINIO_ENDPOINT": f"localhost:{stack_port()}"}  # nothing listens there
    listed = stack.cli("backup", "list", env=env)
    assert listed.returncode == 1
    assert "backups bucket could not be read" in listed.stderr and "Traceback" not in listed.stderr
    as_json = stack.cli("backup", "list", "--json", env=env)
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["bucket_error"] and len(body["backups"]) == 1


def test_object_headers_survive_backup_and_restore(seeded):
    storage = seeded.storage()
    headers = {"ContentType": "application/json", "CacheControl": "max-age=60",
               "ContentDisposition": 'attachment; filename="brief.json"', "Metadata": {"owner": "jane"}}
    storage.client.put_object(Bucket="documents", Key="projects/brief.json", Body=b"{}", **headers)
    assert seeded.cli("backup", "create").returncode == 0
    storage.delete("documents", "projects/brief.json")
    assert seeded.cli("backup", "restore", "latest", "--force").returncode == 0
    got = storage.client.head_object(Bucket="documents", Key="projects/brief.json")
    assert {k: got.get(k) for k in headers} == headers


def test_failed_restore_rolls_back_and_names_its_safety_copy(changed_after_backup, tmp_path):
    """An archive whose checksums are right but whose dump does not match its manifest: the restore fails
    midway, rolls itself back, and its one line names the pre-restore archive."""
    stack, _backed_up, live = changed_after_backup
    source = newest_archive(stack)
    forged = tmp_path / os.path.basename(source)
    with tarfile.open(source) as src, tarfile.open(forged, "w", format=tarfile.PAX_FORMAT) as out:
        manifest = json.loads(src.extractfile(arc.MANIFEST).read())
        manifest["tables"]["projects"]["rows"] += 1
        body = json.dumps(manifest).encode()
        for member in src.getmembers():
            data = {arc.MANIFEST: body, arc.MANIFEST_SUM: (hashlib.sha256(body).hexdigest() + "\n").encode()}
            if member.name in data:
                member.size = len(data[member.name])
                out.addfile(member, io.BytesIO(data[member.name]))
            else:
                out.addfile(member, src.extractfile(member))
    result = stack.cli("backup", "restore", str(forged), "--force")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    safety = next(iter((stack.settings.backups / "pre-restore").glob("studioops-backup-*.tar")))
    assert "rolled back" in result.stderr and str(safety) in result.stderr
    assert (table_state(stack), objects_of(stack)) == live
    assert [n for n in database_names(stack) if "__" in n] == []
    assert not (stack.home / "run" / "restore.json").exists()


def test_restore_needs_no_superuser(running_stack, tmp_path):
    """On CloudNativePG or RDS the app role may create databases but owns no extension: `COMMENT ON EXTENSION`
    in the dump stopped every verify and restore there."""
    from studioops.backup.database import pg_bin, restore_into_new
    from studioops.config import DatabaseURL

    role, password = f"restorer_{os.getpid()}", "restorer-password-1234"
    with running_stack.connect(autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    with running_stack.connect("template1", autocommit=True) as template:
        template.execute("CREATE EXTENSION IF NOT EXISTS vector")  # as CNPG's postInitTemplateSQL does
    dump = tmp_path / "app.dump"
    made = subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", str(dump), running_stack.url], capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    db = running_stack.settings.db
    restorer = DatabaseURL.from_parts(role, password, db.host, db.port, db.dbname)
    name = f"restored_{os.getpid()}"
    try:
        restore_into_new(restorer, dump, name)
        with running_stack.connect(name) as conn:
            assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] >= 0
    finally:
        with running_stack.connect(autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {role}")
