"""The database side of backups: a consistent pg_dump, per-table fingerprints, restore into a fresh database.

pg_dump runs with `--snapshot` exported by our own REPEATABLE READ transaction, so the row counts and content
hashes in the manifest describe exactly the rows in the dump, even while the application keeps writing.
The dump is custom format without compression, piped through zstd (the bundled pg_dump has gzip only, which is
several times slower on embeddings).
"""

from __future__ import annotations

import os
import subprocess
import threading
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
    """Start `pg_dump` on an exported snapshot; compress its output with zstd into `out` on a thread."""

    def __init__(self, db: DatabaseURL, out: IO[bytes], level: int = 3) -> None:
        self.db = db
        self.out = out
        self.level = level
        self.conn = connect(db, application_name="studioops-backup")
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        self.facts = server_facts(self.conn)
        self.proc = subprocess.Popen(
            [pg_bin("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-sync",
             "--dbname", db.dbname],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(db),
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        import zstandard

        try:
            compressor = zstandard.ZstdCompressor(level=self.level, threads=-1)
            with compressor.stream_writer(self.out, closefd=False) as writer:
                while chunk := self.proc.stdout.read(CHUNK):
                    writer.write(chunk)
        except BaseException as exc:
            self.error = exc

    def fingerprints(self) -> dict:
        """Counts and hashes in the dump's own snapshot."""
        return fingerprints(self.conn)

    def wait(self) -> None:
        self._thread.join()
        stderr = self.proc.stderr.read().decode(errors="replace")
        code = self.proc.wait()
        self.conn.rollback()
        self.conn.close()
        if code != 0:
            raise BackupError(f"pg_dump failed (exit {code}): {stderr.strip()[-500:]}")
        if self.error:
            raise BackupError(f"compressing the database dump failed: {self.error}")

    def abort(self) -> None:
        self.proc.kill()
        self._thread.join(5)
        self.conn.close()


def decompress_to(src: IO[bytes], dest: Path) -> None:
    import zstandard

    with dest.open("wb") as out:
        zstandard.ZstdDecompressor().copy_stream(src, out, read_size=CHUNK, write_size=CHUNK)


def create_database(db: DatabaseURL, name: str) -> None:
    with connect(db, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(db: DatabaseURL, name: str) -> None:
    with connect(db, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_restore(db: DatabaseURL, dbname: str, dump: Path, jobs: int = 2) -> None:
    """Restore a custom-format dump into an empty database; stop at the first error."""
    result = subprocess.run(
        [pg_bin("pg_restore"), "--exit-on-error", "--no-owner", f"--jobs={jobs}", "--dbname", dbname, str(dump)],
        capture_output=True, text=True, env=_env(db),
    )
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed: {result.stderr.strip()[-500:]}")


def scratch_name(db: DatabaseURL, purpose: str) -> str:
    return f"{db.dbname[:30]}__{purpose}_{uuid.uuid4().hex[:8]}"


def restore_into_new(db: DatabaseURL, dump: Path, purpose: str,
                     check: Callable[[psycopg.Connection], None] | None = None) -> str:
    """Create a new database next to `db`, restore `dump` into it, run `check` on it; returns its name.
    On any failure the new database is dropped and `db` was never touched."""
    name = scratch_name(db, purpose)
    create_database(db, name)
    try:
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


def swap_in(db: DatabaseURL, new_name: str) -> None:
    """Make `new_name` the database named in DATABASE_URL; the old one is dropped only after the swap."""
    old_name = scratch_name(db, "old")
    with connect(db, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.dbname,)).fetchone()
        if exists:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (db.dbname,))
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(db.dbname), sql.Identifier(old_name)))
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(new_name), sql.Identifier(db.dbname)))
        except psycopg.Error:
            if exists:  # put the original back before reporting
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old_name), sql.Identifier(db.dbname)))
            raise
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old_name)))
