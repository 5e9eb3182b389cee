"""The third embedded service, `console`: our FastAPI app under uvicorn at LANGFUSE_HOST's port.

It serves Langfuse's ingestion API (so an app using the Langfuse SDK works unchanged against the embedded stack)
and the trace store's API. It runs only when LANGFUSE_HOST is an http URL on this machine, listens on 127.0.0.1,
and gets the parent's settings through its environment (the parent's may come from .env or from code).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from studioops import __version__
from studioops.config import LOCAL_HOSTS, Settings
from studioops.errors import ConfigError, PortInUseError
from studioops.stack import process
from studioops.stack.service import ExternalService, ServiceState

APP = "studioops.api.main:app"


def console_port(settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of LANGFUSE_HOST."""
    parts = urlsplit(settings.langfuse_host)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"LANGFUSE_HOST '{settings.langfuse_host}' has an invalid port. "
                          "Use a URL such as http://localhost:3100") from None
    return parts.scheme, parts.hostname or "", port


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as environment variables: the child process sees exactly the parent's settings."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = value.expanduser().absolute()  # the child runs in another directory
        env[name.upper()] = "" if value is None else (json.dumps(value) if isinstance(value, list | dict)
                                                      else str(value))
    return env


class EmbeddedConsole:
    """Log at $STUDIOOPS_HOME/console/console.log, pid and port at run/console.json."""

    name = "console"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "console"
        self.log = self.root / "console.log"
        self.run_dir = settings.home / "run"
        self.run_file = self.run_dir / "console.json"
        self.scheme, self.host, self.port = console_port(settings)
        self.notes: list[str] = []

    @property
    def is_local(self) -> bool:
        return self.scheme == "http" and self.host in LOCAL_HOSTS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- state ------------------------------------------------------------------------------------------
    def _run_info(self) -> dict | None:
        return process.read_run_file(self.run_file)

    def pid(self) -> int | None:
        """The PID in the run file when it is a live uvicorn serving our app (not a reused PID)."""
        info = self._run_info()
        pid = info.get("pid") if info else None
        if not pid or not process.is_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if APP.encode() in cmdline else None

    def state(self) -> ServiceState:
        pid = self.pid()
        return ServiceState(
            name=self.name,
            state="running" if pid else ("stopped" if self.root.exists() else "not initialized"),
            pid=pid,
            address=f"127.0.0.1:{self.port}",
            data_dir=str(self.root),
            log=str(self.log),
            versions={"studioops": __version__} if pid else {},
            details={"langfuse_host": self.settings.langfuse_host,
                     "otlp_endpoint": f"{self.settings.langfuse_host.rstrip('/')}/api/public/otel/v1/traces"}
            if pid else {},
        )

    def _key_note(self) -> None:
        from studioops.observability.keys import development_keys

        if self.settings.langfuse_enabled:
            return
        public, secret = development_keys(self.settings)  # type: ignore[misc]
        self.notes.append(
            f"console development keys (LANGFUSE_PUBLIC_KEY/SECRET_KEY are unset): LANGFUSE_HOST="
            f"{self.settings.langfuse_host} LANGFUSE_PUBLIC_KEY={public} LANGFUSE_SECRET_KEY={secret}")

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> bool:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        self._key_note()
        if self.pid():
            return False
        self.run_file.unlink(missing_ok=True)  # stale after a crash or reboot
        if not process.port_is_free(self.port):
            raise PortInUseError(
                f"port {self.port} on 127.0.0.1 (LANGFUSE_HOST) is already in use by another program. Stop that "
                f"program, or pick a free port in LANGFUSE_HOST (e.g. LANGFUSE_HOST=http://localhost:{self.port + 1})"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # whichever service makes it first
        ours = ("DATABASE_", "STUDIOOPS_", "MINIO_", "STORAGE_", "LANGFUSE_", "OBSERVABILITY_", "BACKUP_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
        env.update(settings_environment(self.settings))
        args = [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--log-level", "info", "--timeout-graceful-shutdown", "5"]
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.root, env=env, start_new_session=True)
        self.run_file.write_text(json.dumps({"pid": proc.pid, "port": self.port, "started_at": time.time()}))
        self._wait_ready(proc, timeout)
        return True

    def _ready(self) -> bool:
        import httpx

        try:
            response = httpx.get(self.url + "/api/public/health", timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (process.port_accepts(self.port) and self._ready()):
            if proc.poll() is not None:
                self.run_file.unlink(missing_ok=True)
                raise process.fail_with_log(f"the console exited with code {proc.returncode} while starting",
                                            self.log)
            if time.monotonic() > deadline:
                self.stop()
                raise process.fail_with_log(f"the console did not answer within {timeout:.0f}s", self.log)
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM: uvicorn finishes the requests in flight (5 s at most), then exits."""
        pid = self.pid()
        if not pid:
            self.run_file.unlink(missing_ok=True)
            return False
        process.stop_pid(pid, signal.SIGTERM, timeout)
        self.run_file.unlink(missing_ok=True)
        return True


class ExternalConsole(ExternalService):
    """LANGFUSE_HOST names a Langfuse elsewhere (Compose, cloud): we neither start nor stop it."""

    name = "console"
    log_name = "console/console.log"

    def address(self) -> str:
        return self.settings.langfuse_host
