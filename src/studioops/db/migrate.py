"""The migration runner: NNN_name.sql files applied once each, in order, with checksums and a lock.

Written by hand because the schema is plain SQL files (no ORM to drive Alembic) and we want what Flyway and
golang-migrate users expect in ~250 lines: sha256 drift detection, `repair`, a session-level advisory lock on its
own autocommit connection (a transaction-scoped one deadlocks CREATE INDEX CONCURRENTLY), and per-file
no-transaction mode.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

from studioops.config import DatabaseURL
from studioops.db.connect import connect
from studioops.errors import ChecksumMismatchError, MigrationError, MigrationLockTimeoutError, StudioOpsError

NO_TRANSACTION_MARKER = "-- studioops:no-transaction"
FILENAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
# pg_advisory_lock key: the bytes of 'StudOpsM' as a signed 64-bit integer; any constant will do,
# as long as every runner uses the same one.
LOCK_KEY = int.from_bytes(b"StudOpsM", "big", signed=True)

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS migrations (
    id          serial PRIMARY KEY,
    filename    varchar(255) NOT NULL UNIQUE,
    executed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE migrations ADD COLUMN IF NOT EXISTS checksum char(64);
ALTER TABLE migrations ADD COLUMN IF NOT EXISTS duration_ms integer;
ALTER TABLE migrations ADD COLUMN IF NOT EXISTS success boolean NOT NULL DEFAULT true;
ALTER TABLE migrations ADD COLUMN IF NOT EXISTS error text;
"""


@dataclass(frozen=True)
class MigrationFile:
    filename: str
    path: Path
    sql: str
    checksum: str

    @property
    def no_transaction(self) -> bool:
        first = self.sql.lstrip("\ufeff").split("\n", 1)[0].strip()
        return first == NO_TRANSACTION_MARKER

    @classmethod
    def load(cls, path: Path) -> MigrationFile:
        raw = path.read_bytes().replace(b"\r\n", b"\n")  # a CRLF checkout is not an edit
        return cls(path.name, path, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class AppliedMigration:
    filename: str
    checksum: str | None
    executed_at: datetime
    duration_ms: int | None
    success: bool
    error: str | None


@dataclass
class MigrationStatus:
    applied: list[AppliedMigration] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing pending, drifted or failed: what `db status` exits 0 on and /readyz waits for."""
        return not (self.pending or self.drifted or self.failed)

    @property
    def head(self) -> str | None:
        done = [m.filename for m in self.applied if m.success]
        return max(done) if done else None

    def as_dict(self) -> dict:
        return {
            "head": self.head,
            "ok": self.ok,
            "applied": [
                {
                    "filename": m.filename,
                    "executed_at": m.executed_at.isoformat(),
                    "duration_ms": m.duration_ms,
                    "checksum": m.checksum,
                    "success": m.success,
                    "error": m.error,
                }
                for m in self.applied
            ],
            "pending": self.pending,
            "drifted": self.drifted,
            "failed": self.failed,
            "missing": self.missing,
        }


@dataclass
class RepairResult:
    rechecksummed: list[str]
    forgotten_failures: list[str]


def discover(directory: Path) -> list[MigrationFile]:
    """The migration files in `directory`, sorted by name; a misnamed .sql file is an error, not ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist. Check STUDIOOPS_MIGRATIONS_DIR")
    files = []
    for path in sorted(directory.glob("*.sql")):
        if not FILENAME.match(path.name):
            raise MigrationError(
                f"{path.name} in {directory} is not named NNN_name.sql (lower case). "
                "Rename it, or create migrations with `studioops db new NAME`"
            )
        files.append(MigrationFile.load(path))
    return files


def _error_line(sql_text: str, exc: psycopg.Error) -> str:
    """' at line N' from the error position PostgreSQL reports, when it reports one."""
    diag = getattr(exc, "diag", None)
    position = getattr(diag, "statement_position", None) if diag else None
    if position and position.isdigit():
        return f" at line {sql_text[: int(position)].count(chr(10)) + 1}"
    return ""


def _leading_comment_lines(statement: str) -> int:
    """How many blank or `--` comment lines open a statement (sqlparse keeps them with it)."""
    count = 0
    for line in statement.split("\n"):
        if line.strip() and not line.strip().startswith("--"):
            break
        count += 1
    return count


def _pg_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    return primary or str(exc).strip().splitlines()[0]


TRANSACTION_CONTROL = re.compile(r"^(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b(?!\s+TO\b)", re.I)


def refuse_transaction_control(files) -> None:
    """A transactional file may not open or end transactions itself: its own COMMIT would make part of it
    permanent while the runner reports the whole file as failed. Checked for every pending file before any runs."""
    for f in files:
        if f.no_transaction:
            continue
        import sqlparse  # only pending files are checked; its import costs ~50 ms

        done_chars = 0
        for statement in sqlparse.split(f.sql):
            offset = f.sql.find(statement, done_chars)
            done_chars = offset + len(statement) if offset >= 0 else done_chars
            body = sqlparse.format(statement, strip_comments=True).strip()
            match = TRANSACTION_CONTROL.match(body)
            if match:
                line = f.sql[: max(offset, 0)].count("\n") + 1 + _leading_comment_lines(statement)
                raise MigrationError(
                    f"migration {f.filename} line {line}: {match[1].upper()} controls the transaction, but the "
                    "runner already runs each file in one transaction (a COMMIT inside would leave part of it "
                    "applied). Nothing was run. Remove the transaction statements, or make the first line "
                    f"`{NO_TRANSACTION_MARKER}` to run the file statement by statement"
                )


class Migrator:
    """Applies the files of one directory to one database."""

    def __init__(self, db: DatabaseURL, directory: Path, lock_timeout: float = 60.0,
                 table_lock_timeout: float | None = None) -> None:
        self.db = db
        self.directory = directory
        self.lock_timeout = lock_timeout  # waiting for another runner (the advisory lock)
        # PostgreSQL's lock_timeout for the migration's own statements: a migration queued behind a long
        # transaction must not queue every reader of that table behind itself. None: the server's setting.
        self.table_lock_timeout = table_lock_timeout

    @classmethod
    def from_settings(cls, settings) -> Migrator:
        return cls(settings.db, settings.studioops_migrations_dir,
                   table_lock_timeout=settings.migration_lock_timeout)

    # -- reading ----------------------------------------------------------------------------------------
    def _applied(self, conn: psycopg.Connection) -> list[AppliedMigration]:
        exists = conn.execute("SELECT to_regclass('migrations') IS NOT NULL").fetchone()[0]
        if not exists:
            return []
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'migrations' AND table_schema = current_schema()"
            )
        }
        if "checksum" not in columns:  # the design document's original table: upgraded by the next migrate
            rows = conn.execute(
                "SELECT filename, NULL, executed_at, NULL, true, NULL FROM migrations ORDER BY filename"
            )
        else:
            rows = conn.execute(
                "SELECT filename, checksum, executed_at, duration_ms, success, error FROM migrations "
                "ORDER BY filename"
            )
        return [AppliedMigration(*row) for row in rows]

    def _compare(self, files: list[MigrationFile], applied: list[AppliedMigration]) -> MigrationStatus:
        by_name = {m.filename: m for m in applied}
        on_disk = {f.filename for f in files}
        status = MigrationStatus(applied=applied)
        for f in files:
            done = by_name.get(f.filename)
            if done is None:
                status.pending.append(f.filename)
            elif not done.success:
                status.failed.append(f.filename)
            elif done.checksum and done.checksum.strip() != f.checksum:
                status.drifted.append(f.filename)
        status.missing = [m.filename for m in applied if m.filename not in on_disk]
        return status

    def status(self, conn: psycopg.Connection | None = None) -> MigrationStatus:
        """Applied, pending, drifted, failed and missing files (on `conn` when given, e.g. from a pool)."""
        files = discover(self.directory)
        if conn is not None:
            return self._compare(files, self._applied(conn))
        with connect(self.db, autocommit=True) as own:
            return self._compare(files, self._applied(own))

    # -- the lock -------------------------------------------------------------------------------------------
    def _acquire_lock(self, lock_conn: psycopg.Connection) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while not lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                holder = lock_conn.execute(
                    "SELECT l.pid, a.application_name, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.objid = (%s::bigint & 4294967295)::oid LIMIT 1",
                    (LOCK_KEY,),
                ).fetchone()
                who = f"backend pid {holder[0]} ({holder[1] or 'unnamed'})" if holder else "another session"
                raise MigrationLockTimeoutError(
                    f"another migration runner ({who}) held the migration lock for {self.lock_timeout:.0f}s. "
                    "Wait for it to finish, or end that session with pg_terminate_backend if it is stuck"
                )
            time.sleep(0.05)

    # -- applying -----------------------------------------------------------------------------------------
    def migrate(
        self, dry_run: bool = False, on_progress: Callable[[str, float], None] | None = None
    ) -> list[str]:
        """Apply pending files in order; return their names. With dry_run, only say which would run."""
        files = discover(self.directory)
        if dry_run:
            status = self.status()
            self._refuse_unsafe(status)
            refuse_transaction_control(f for f in files if f.filename in set(status.pending))
            return status.pending
        applied_now: list[str] = []
        with connect(self.db, autocommit=True, application_name="studioops-migrate-lock") as lock_conn:
            self._acquire_lock(lock_conn)
            try:
                with connect(self.db, autocommit=True, application_name="studioops-migrate") as conn:
                    status = self._compare(files, self._applied(conn))
                    self._refuse_unsafe(status)
                    pending = set(status.pending)
                    refuse_transaction_control(f for f in files if f.filename in pending)
                    conn.execute(TABLE_DDL)  # only once nothing is refused: a refused run changes nothing
                    for f in files:
                        if f.filename not in pending:
                            continue
                        started = time.perf_counter()
                        self._apply(conn, f)
                        applied_now.append(f.filename)
                        if on_progress:
                            on_progress(f.filename, time.perf_counter() - started)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        return applied_now

    @staticmethod
    def _refuse_unsafe(status: MigrationStatus) -> None:
        if status.drifted:
            names = ", ".join(status.drifted)
            raise ChecksumMismatchError(
                f"applied migration {names} was edited after it ran (checksum mismatch). Restore the original "
                "file and add a new migration instead; or, if the edit is deliberate and already matches the "
                "database, accept it with `studioops db repair`"
            )
        if status.failed:
            names = ", ".join(status.failed)
            raise MigrationError(
                f"migration {names} failed earlier and may have left partial changes. Clean them up by hand, "
                "then run `studioops db repair` to forget the failed run and `studioops db migrate` again"
            )

    def _record(self, conn: psycopg.Connection, f: MigrationFile, ms: int, ok: bool, error: str | None) -> None:
        conn.execute(
            "INSERT INTO migrations (filename, checksum, duration_ms, success, error, executed_at) "
            "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (filename) DO UPDATE SET "
            "checksum = EXCLUDED.checksum, duration_ms = EXCLUDED.duration_ms, success = EXCLUDED.success, "
            "error = EXCLUDED.error, executed_at = EXCLUDED.executed_at",
            (f.filename, f.checksum, ms, ok, error),
        )

    def _apply(self, conn: psycopg.Connection, f: MigrationFile) -> None:
        started = time.perf_counter()
        if not f.no_transaction:
            try:
                with conn.transaction():
                    if self.table_lock_timeout is not None:
                        conn.execute(f"SET LOCAL lock_timeout = '{int(self.table_lock_timeout * 1000)}ms'")
                    conn.execute(f.sql)
                    self._record(conn, f, int((time.perf_counter() - started) * 1000), True, None)
            except psycopg.errors.LockNotAvailable as exc:
                raise self._lock_error(f, exc, "Nothing of it was applied") from None
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {f.filename} failed{_error_line(f.sql, exc)}: {_pg_message(exc)}. "
                    "Nothing of it was applied; fix the file and run `studioops db migrate` again"
                ) from None
            return
        # Outside a transaction (CREATE INDEX CONCURRENTLY): one statement at a time, autocommit.
        if self.table_lock_timeout is not None:
            conn.execute(f"SET lock_timeout = '{int(self.table_lock_timeout * 1000)}ms'")
        try:
            self._apply_each(conn, f, started)
        finally:
            if self.table_lock_timeout is not None:
                conn.execute("RESET lock_timeout")

    def _lock_error(self, f: MigrationFile, exc: psycopg.Error, applied: str) -> MigrationError:
        return MigrationError(
            f"migration {f.filename} waited more than {self.table_lock_timeout:g}s for a table lock "
            f"({_pg_message(exc)}{_error_line(f.sql, exc)}) and gave up, so that it does not queue every reader "
            f"of that table behind it. {applied}. Retry when the long transaction holding the lock ends (see "
            "pg_stat_activity), or raise MIGRATION_LOCK_TIMEOUT"
        )

    def _apply_each(self, conn: psycopg.Connection, f: MigrationFile, started: float) -> None:
        import sqlparse  # only these files need splitting; its import costs a no-op run ~50 ms

        done_chars = 0
        for statement in sqlparse.split(f.sql):
            offset = f.sql.find(statement, done_chars)
            done_chars = offset + len(statement) if offset >= 0 else done_chars
            body = sqlparse.format(statement, strip_comments=True).strip()
            if not body or body == ";":
                continue
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                line = f.sql[: max(offset, 0)].count("\n") + 1 + _leading_comment_lines(statement)
                if isinstance(exc, psycopg.errors.LockNotAvailable):
                    self._record(conn, f, int((time.perf_counter() - started) * 1000), False,
                                 f"lock timeout (statement at line {line})")
                    raise self._lock_error(
                        f, exc, f"The statements before line {line} stay applied and it is recorded as failed: "
                        "run `studioops db repair` before retrying") from None
                message = f"{_pg_message(exc)} (statement at line {line})"
                self._record(conn, f, int((time.perf_counter() - started) * 1000), False, message)
                invalid = [
                    r[0]
                    for r in conn.execute(
                        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1"
                    )
                ]
                left = f" It left INVALID index {', '.join(invalid)}: drop it." if invalid else ""
                raise MigrationError(
                    f"migration {f.filename} (no-transaction) failed at line {line}: {_pg_message(exc)}. "
                    f"The statements before it stay applied and it is recorded as failed.{left} "
                    "Then run `studioops db repair` and `studioops db migrate`"
                ) from None
        self._record(conn, f, int((time.perf_counter() - started) * 1000), True, None)

    # -- repair and new -------------------------------------------------------------------------------------
    def repair(self) -> RepairResult:
        """Accept edited files (re-record their checksums) and forget failed runs, under the lock."""
        files = {f.filename: f for f in discover(self.directory)}
        with connect(self.db, autocommit=True) as lock_conn:
            self._acquire_lock(lock_conn)
            try:
                with connect(self.db) as conn:
                    conn.execute(TABLE_DDL)
                    status = self._compare(list(files.values()), self._applied(conn))
                    for name in status.drifted:
                        conn.execute(
                            "UPDATE migrations SET checksum = %s WHERE filename = %s", (files[name].checksum, name)
                        )
                    conn.execute("DELETE FROM migrations WHERE NOT success")
                    conn.commit()
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        return RepairResult(status.drifted, status.failed)


TEMPLATE = """\
-- {filename}: describe what this migration does and why.
-- It runs in one transaction: on any error nothing of it stays applied.
-- For CREATE INDEX CONCURRENTLY, make the first line `-- studioops:no-transaction` instead.

"""


def new_migration(directory: Path, name: str) -> Path:
    """Create the next NNN_name.sql in `directory` from a template."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise StudioOpsError(f"'{name}' gives an empty migration name. Use letters and digits, e.g. add_invoices")
    numbers = [int(m[1]) for p in directory.glob("*.sql") if (m := FILENAME.match(p.name))]
    path = directory / f"{(max(numbers) + 1 if numbers else 1):03d}_{slug}.sql"
    path.write_text(TEMPLATE.format(filename=path.name))
    return path
