"""The database side of backups: a consistent pg_dump, per-table fingerprints, restore into a fresh database.

pg_dump runs with `--snapshot` exported by our own REPEATABLE READ transaction, so the row counts and content
hashes in the manifest describe exactly the rows in the dump, even while the application keeps writing.
The dump is custom format without compression, piped through zstd (the bundled pg_dump has gzip only, which is
several times slower on embeddings).
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from studioops.config import DatabaseURL
from studioops.db.connect import connect
from studioops.errors import BackupError
from studioops.stack.postgres import pg_bin

CHUNK = 1 << 20


def _env(db: DatabaseURL) -> dict[str, str]:
    """Credentials through the environment, never on a command line that `ps` shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGHOST": db.host, "PGPORT": str(db.port), "PGUSER": db.user, "PGPASSWORD": db.password,
                "PGCONNECT_TIMEOUT": "10"})
    return env


def fingerprints(conn: psycopg.Connection) -> dict[str, dict[str, int | str]]:
    """Row count and an order-independent content hash of every table in the public schema.

    The hash is the sum of PostgreSQL's 64-bit hash of each row's text form: no sort, no memory, one scan.
    """
    conn.execute("SET TimeZone = 'UTC'")  # timestamptz renders by session time zone: pin it
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
    out: dict[str, dict[str, int | str]] = {}
    for table in tables:
        count, total = conn.execute(sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {} AS t"
        ).format(sql.Identifier(table))).fetchone()
        out[table] = {"rows": count, "hash": str(total)}
    return out


def server_facts(conn: psycopg.Connection) -> dict[str, str | None]:
    version = conn.execute("SHOW server_version").fetchone()[0]
    vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    has_migrations = conn.execute("SELECT to_regclass('migrations') IS NOT NULL").fetchone()[0]
    head = None
    if has_migrations:
        head = conn.execute("SELECT max(filename) FROM migrations WHERE success IS NOT FALSE").fetchone()[0]
    return {"postgresql": version, "pgvector": vector[0] if vector else None, "migration_head": head}


class SnapshotDump:
    """Start `pg_dump` on a snapshot we export; compress its output with zstd into `out` on a thread.

    Our transaction holds the snapshot only until pg_dump has imported it and our fingerprints are taken
    (`fingerprints()` then ends it): the rest of the backup runs with no transaction of ours open, so vacuum
    is held back by pg_dump's own transaction alone, for as long as the dump runs.
    """

    def __init__(self, db: DatabaseURL, out: IO[bytes], level: int = 3) -> None:
        self.db = db
        self.out = out
        self.level = level
        # autocommit, then our own BEGIN: psycopg opens no implicit transaction underneath it (which made
        # PostgreSQL log "there is already a transaction in progress" on every backup).
        self.conn = connect(db, autocommit=True, application_name="studioops-backup")
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        self.facts = server_facts(self.conn)
        env = {**_env(db), "LC_ALL": "C", "PGAPPNAME": "studioops-backup-dump"}
        self.proc = subprocess.Popen(
            # --verbose: its first line after the `executing ...` of connection setup ("last built-in OID is")
            # comes once pg_dump has set its transaction to our snapshot.
            [pg_bin("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-sync",
             "--verbose", "--dbname", db.dbname],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.error: BaseException | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.snapshot_taken = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()

    def _pump(self) -> None:
        import zstandard

        try:
            compressor = zstandard.ZstdCompressor(level=self.level, threads=-1)
            with compressor.stream_writer(self.out, closefd=False) as writer:
                while chunk := self.proc.stdout.read(CHUNK):
                    writer.write(chunk)
        except BaseException as exc:
            self.error = exc

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr.append(line)
            if not line.startswith("pg_dump: executing "):
                self.snapshot_taken.set()
        self.snapshot_taken.set()  # pg_dump ended (an error is reported by wait())

    def fingerprints(self) -> dict:
        """Counts and hashes in the dump's own snapshot; then our transaction ends."""
        try:
            return fingerprints(self.conn)
        finally:
            self.release()

    def release(self, timeout: float = 60.0) -> None:
        """End our snapshot transaction once pg_dump holds the snapshot itself (bounded wait)."""
        if self.conn.closed:
            return
        self.snapshot_taken.wait(timeout)
        self.conn.execute("COMMIT")
        self.conn.close()

    def wait(self) -> None:
        self.release()
        self._thread.join()
        code = self.proc.wait()
        self._stderr_thread.join(10)
        if code != 0:
            errors = [line for line in self.stderr if "error" in line.lower()] or list(self.stderr)[-3:]
            raise BackupError(f"pg_dump failed (exit {code}): {' '.join(errors)[-500:]}")
        if self.error:
            raise BackupError(f"compressing the database dump failed: {self.error}")

    def abort(self) -> None:
        self.proc.kill()
        self._thread.join(5)
        self.conn.close()


def decompress_into(src: IO[bytes], out: IO[bytes]) -> None:
    import zstandard

    zstandard.ZstdDecompressor().copy_stream(src, out, read_size=CHUNK, write_size=CHUNK)


SCRATCH_COMMENT = "studioops scratch database of host {host} pid {pid}"
SCRATCH_COMMENT_RE = re.compile(r"^studioops scratch database of host (?P<host>\S+) pid (?P<pid>\d+)$")


def scratch_comment() -> str:
    """What marks a database as ours to drop once the process that made it is gone."""
    return SCRATCH_COMMENT.format(host=socket.gethostname(), pid=os.getpid())


def create_database(db: DatabaseURL, name: str) -> None:
    """A new database, commented with our host and pid so a later run can remove it if we are killed."""
    with connect(db, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(scratch_comment())))


def drop_database(db: DatabaseURL, name: str) -> None:
    with connect(db, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(db: DatabaseURL, name: str) -> bool:
    with connect(db, dbname="postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def scratch_databases(db: DatabaseURL) -> list[tuple[str, str, int]]:
    """(name, host, pid) of every scratch database next to `db` (verify, restore, or a swapped-out old one)."""
    with connect(db, dbname="postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE starts_with(datname, %s)", (db.dbname[:30] + "__",)).fetchall()
    out = []
    for name, comment in rows:
        match = SCRATCH_COMMENT_RE.match(comment or "")
        if match:
            out.append((name, match["host"], int(match["pid"])))
    return out


def pg_restore(db: DatabaseURL, dbname: str, dump: Path, jobs: int = 2) -> None:
    """Restore a custom-format dump into an empty database; stop at the first error.

    Extension comments are left out: only an extension's owner may set them, and on managed servers (CloudNativePG,
    RDS) the app role that restores owns no extension, so `COMMENT ON EXTENSION vector` would stop the restore."""
    listed = subprocess.run([pg_bin("pg_restore"), "--list", str(dump)], capture_output=True, text=True)
    if listed.returncode != 0:
        raise BackupError(f"pg_restore could not read the dump: {listed.stderr.strip()[-500:]}")
    toc = dump.with_name(dump.name + ".toc")
    fd = os.open(toc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(line + "\n" for line in listed.stdout.splitlines() if " COMMENT - EXTENSION " not in line)
    try:
        result = subprocess.run(
            [pg_bin("pg_restore"), "--exit-on-error", "--no-owner", f"--jobs={jobs}", "--use-list", str(toc),
             "--dbname", dbname, str(dump)],
            capture_output=True, text=True, env=_env(db),
        )
    finally:
        toc.unlink(missing_ok=True)
    if result.returncode != 0:
        # The error line, not the tail: pg_restore ends with the whole failed statement ("Command was: ...").
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        raise BackupError(f"pg_restore failed: {(' '.join(errors) or result.stderr.strip())[:500]}")


def scratch_name(db: DatabaseURL, purpose: str) -> str:
    return f"{db.dbname[:30]}__{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def restore_into_new(db: DatabaseURL, dump: Path, name: str,
                     check: Callable[[psycopg.Connection], None] | None = None,
                     created: Callable[[], None] | None = None) -> str:
    """Create database `name` next to `db`, restore `dump` into it, run `check` on it; returns its name.
    On any failure the new database is dropped and `db` was never touched. `created` runs once it exists."""
    create_database(db, name)
    try:
        if created:
            created()
        pg_restore(db, name, dump)
        if check:
            with connect(db, dbname=name, autocommit=True) as conn:
                check(conn)
    except BaseException:
        drop_database(db, name)
        raise
    return name


def holds_data(db: DatabaseURL, tables: list[str]) -> dict[str, int]:
    """Rows per app table that has any (an empty, migrated database holds none)."""
    with connect(db, autocommit=True) as conn:
        present = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        out = {}
        for table in tables:
            if table in present:
                has = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) s").format(
                    sql.Identifier(table))).fetchone()[0]
                if has:
                    out[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier(table))).fetchone()[0]
        return out


def swap_in(db: DatabaseURL, new_name: str, old_name: str, inside: Callable[[], None] | None = None) -> None:
    """Make `new_name` the database named in DATABASE_URL, in one transaction: both renames commit together
    or neither does (a kill in between leaves the live database as it was). The old database is renamed to
    `old_name` and marked as scratch; the caller drops it. `inside` runs between the renames (a test hook)."""
    for attempt in range(5):
        with connect(db, dbname="postgres", autocommit=True) as conn:
            try:
                with conn.transaction():
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                          (db.dbname,)).fetchone()
                    if exists:
                        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (db.dbname,))
                        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(db.dbname), sql.Identifier(old_name)))
                        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(old_name), sql.Literal(scratch_comment())))
                    if inside:
                        inside()
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(new_name), sql.Identifier(db.dbname)))
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(db.dbname)))
                return
            except psycopg.errors.ObjectInUse:
                # A client reconnected between the terminate and the rename: try again.
                if attempt == 4:
                    raise BackupError(
                        f"clients keep connecting to {db.dbname}, so it could not be swapped. Stop the API and "
                        "workers, then retry"
                    ) from None
                time.sleep(0.2)
