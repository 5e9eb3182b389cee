"""Real services for the tests: an embedded stack in a temporary home on free ports (session-scoped).

No database or S3 server is ever faked. Tests that stop or break a stack start their own (`fresh_stack`).
The suite is hermetic: `_hermetic_environment` removes every setting the app (and libpq) reads from the
environment and runs the session in an empty working directory, so neither the caller's exports nor a `.env`
change a result.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from studioops import stack
from studioops.config import Settings, reset_settings
from studioops.stack.process import wait_until

PASSWORD = "test-password-1234"
ROOT = Path(__file__).parent.parent
# Prefixes of every variable family the app, the Compose templates or libpq read. Settings' own fields are
# added from the class itself, so a new setting is covered without touching this list.
SETTING_PREFIXES = ("STUDIOOPS_", "DATABASE_", "MINIO_", "STORAGE_", "LANGFUSE_", "BACKUP_", "OBSERVABILITY_",
                    "API_", "POSTGRES_", "CLICKHOUSE_", "REDIS_", "WEB_", "PG")


@functools.cache
def setting_names() -> frozenset[str]:
    """Every environment variable the app reads: Settings' fields and the env templates' variables."""
    import re

    names = {name.upper() for name in Settings.model_fields}
    for template in (ROOT / "src/studioops/env_templates").iterdir():
        names |= set(re.findall(r"^([A-Z][A-Z0-9_]*)=", template.read_text(), flags=re.M))
    return frozenset(names)


def is_setting(name: str) -> bool:
    return name.upper() in setting_names() or name.upper().startswith(SETTING_PREFIXES)
# The newest migration shipped with the package: what a fully migrated database reports as its head.
LATEST_MIGRATION = max(p.name for p in (Path(__file__).parent.parent / "src/studioops/db/migrations").glob("*.sql"))


@dataclass
class Stack:
    """One embedded stack: its environment (as a user would export it) and Settings."""

    home: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return Settings(_env_file=None, **{k.lower(): v for k, v in self.env.items()})

    @property
    def url(self) -> str:
        return self.env["DATABASE_URL"]

    def connect(self, dbname: str | None = None, **kwargs) -> psycopg.Connection:
        url = self.settings.db.with_database(dbname) if dbname else self.url
        return psycopg.connect(url, **kwargs)

    def storage(self):
        from studioops.storage import Storage

        return Storage.from_settings(self.settings)

    @property
    def s3_url(self) -> str:
        return "http://" + self.env["MINIO_ENDPOINT"]

    def cli(self, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120):
        """Run `studioops ARGS` in a subprocess, exactly as a user would."""
        full_env = {k: v for k, v in os.environ.items() if not is_setting(k)}
        full_env.update(self.env)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "studioops", *args],
            capture_output=True,
            text=True,
            env=full_env,
            input=input,
            timeout=timeout,
            cwd=self.home,
        )


def stack_port() -> int:
    """A free port above Linux's ephemeral range (32768-60999): between choosing it and the server binding it,
    no outgoing connection of the test run can take it."""
    import random

    from studioops.stack.process import port_is_free

    while True:
        port = random.randint(61000, 65000)
        if port_is_free(port):
            return port


def make_stack(root: Path) -> Stack:
    home = root / f"home-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    env = {
        "STUDIOOPS_HOME": str(home),
        "DATABASE_URL": f"postgresql://studioops:{PASSWORD}@localhost:{stack_port()}/studioops",
        "MINIO_ENDPOINT": f"localhost:{stack_port()}",
        "MINIO_ACCESS_KEY": "test-access",
        "MINIO_SECRET_KEY": "test-secret-key-1234",
        "LANGFUSE_HOST": f"http://localhost:{stack_port()}",  # the embedded console's port
        "MINIO_CONSOLE_PORT": str(stack_port()),  # never 9001, which a stack of the user's may hold
    }
    return Stack(home, env)


class ApiServer:
    """`studioops api` in a subprocess, as an operator runs it; `extra` settings on top of the stack's."""

    log_name = "api"

    def __init__(self, stack: Stack, **extra: str) -> None:
        self.port = stack_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Bucket figures listed every second (30 s by default), so tests see their writes soon.
        self.env = {"API_STORAGE_USAGE_REFRESH_SECONDS": "1", **stack.env, **self.own_settings(), **extra}
        env = {k: v for k, v in os.environ.items() if not is_setting(k)}
        self.log = stack.home / f"{self.log_name}-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studioops", "api", "--port", str(self.port)],
                env={**env, **self.env}, stdout=log, stderr=subprocess.STDOUT, cwd=stack.home,
            )
        import httpx

        def up() -> bool:
            try:
                return httpx.get(self.url + "/livez", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, 30, interval=0.1):
            self.stop()
            raise RuntimeError(f"`studioops api` ({self.log_name}) did not start:\n" + self.log.read_text())

    def own_settings(self) -> dict[str, str]:
        """Settings that depend on the server's own port or URL."""
        return {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's chromium, driven by Playwright (tests/support/browser.py has the flags)."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture(scope="session")
def api_server(running_stack: Stack) -> Iterator[ApiServer]:
    server = ApiServer(running_stack)
    yield server
    server.stop()


@contextmanager
def port_taken(port: int) -> Iterator[None]:
    """Another program listening on 127.0.0.1:port for the duration."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        yield
    finally:
        blocker.close()


@pytest.fixture(scope="session", autouse=True)
def _hermetic_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No setting from the caller's environment, and no `.env` from the working directory, reaches a test."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    names = setting_names()
    for name in list(os.environ):
        if name.upper() in names or name.upper().startswith(SETTING_PREFIXES):
            del os.environ[name]
    os.chdir(tmp_path_factory.mktemp("cwd"))  # pydantic-settings reads `.env` from here: an empty directory
    reset_settings()
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture(autouse=True)
def _no_cached_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack, started once: tests use it without stopping it."""
    s = make_stack(tmp_path_factory.mktemp("stack"))
    stack.up(s.settings, timeout=60)
    yield s
    stack.down(s.settings)


@pytest.fixture
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of the test's own, not started; stopped afterwards whatever the test did to it."""
    s = make_stack(tmp_path_factory.mktemp("fresh"))
    yield s
    stack.down(s.settings)


@pytest.fixture
def scratch_db(running_stack: Stack) -> Iterator[str]:
    """A new empty database on the shared server (pgvector not yet enabled); its URL."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with running_stack.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield running_stack.settings.db.with_database(name)
    with running_stack.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
