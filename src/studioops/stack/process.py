"""Process and port helpers for the embedded servers: liveness that sees zombies, port probes, bounded waits.

Written by hand because psutil and friends treat a zombie as alive, which is exactly the case that breaks
restarts in containers with no init process (see FACTS.md).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studioops.errors import ServiceStartError, StudioOpsError


def pid_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces: the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def is_alive(pid: int | None) -> bool:
    """True when `pid` runs and is not a zombie (a zombie postmaster holds no port and no data)."""
    if not pid or pid <= 0:
        return False
    state = pid_state(pid)
    return state is not None and state not in {"Z", "X"}


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether we could listen on host:port now. SO_REUSEADDR so that TIME_WAIT does not look taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def suggest_port(after: int, avoid: set[int], host: str = "127.0.0.1") -> int:
    """A port to suggest instead of a busy one: the next free port above `after` that no other setting names
    (suggesting PostgreSQL's port for S3 sends the user into the next collision)."""
    for port in [*range(after + 1, 65536), *range(1024, after)]:
        if port not in avoid and port_is_free(port, host):
            return port
    return after


def settings_ports(settings) -> set[int]:
    """The ports every setting names: DATABASE_URL, MINIO_ENDPOINT, LANGFUSE_HOST."""
    from urllib.parse import urlsplit

    ports = {settings.db.port}
    for url in (settings.minio_endpoint, settings.langfuse_host):
        try:
            port = urlsplit(url if "://" in url else "//" + url).port
        except ValueError:
            continue
        if port:
            ports.add(port)
    return ports


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_pid(pid: int, sig: int, timeout: float) -> bool:
    """Send `sig` and wait up to `timeout` for the process to go; SIGKILL after that. True if it went cleanly."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    if wait_until(lambda: not is_alive(pid), timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    wait_until(lambda: not is_alive(pid), 5)
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages after a failed start."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def fail_with_log(message: str, log: Path) -> ServiceStartError:
    """A ServiceStartError whose text ends with the tail of the service's log."""
    last = tail(log)
    detail = f"\n--- last lines of {log} ---\n{last}" if last else f" (no log at {log})"
    return ServiceStartError(message + detail)


@dataclass(frozen=True)
class RunAs:
    """Whom the servers run as: ourselves, or (as root) an unprivileged system user."""

    uid: int
    gid: int
    name: str

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict:
        if self.is_self:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        """Make `path` (a directory or file we created) belong to the service user."""
        if not self.is_self:
            os.chown(path, self.uid, self.gid)


def resolve_run_as(username: str) -> RunAs:
    """As an ordinary user: ourselves. As root: `username`, created as a system user if missing.

    PostgreSQL refuses to run as root, so root needs someone else to run it as.
    """
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        useradd = shutil.which("useradd")
        if not useradd:
            raise StudioOpsError(
                f"running as root, the servers need the unprivileged user '{username}', and useradd is missing. "
                f"Create the user yourself, or set STUDIOOPS_RUN_AS to an existing unprivileged user"
            ) from None
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", username],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(username)
    if entry.pw_uid == 0:
        raise StudioOpsError(
            f"STUDIOOPS_RUN_AS={username} is root, and PostgreSQL refuses to run as root. "
            "Set STUDIOOPS_RUN_AS to an unprivileged user"
        )
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def ensure_traversable(path: Path, run_as: RunAs) -> list[Path]:
    """Let the service user reach `path`: add o+x (search, not read) to parents that lack it.

    Returns the directories changed, so the caller can say so. Only root ever needs this.
    """
    if run_as.is_self:
        return []
    changed = []
    for parent in reversed(path.absolute().parents):
        status = parent.stat()
        mode = status.st_mode
        if status.st_uid == run_as.uid and mode & 0o100:
            continue  # its own directories (the 0700 home) it enters as their owner
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            changed.append(parent)
    return changed


def private_dir(path: Path, run_as: RunAs) -> Path:
    """`path` as a directory only the service user can enter (0700, owned by it); created when missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    run_as.own(path)
    return path


def prepare_home(home: Path, run_as: RunAs) -> list[Path]:
    """STUDIOOPS_HOME as 0700, owned by the user the servers run as, and reachable by that user.

    As root the servers run as an unprivileged user, who must enter the home to reach its data: the home belongs
    to that user (root enters any directory anyway). A 0710 home with a shared group would work too, but would
    need a group of its own to keep everyone else out. Returns the parents given o+x (see ensure_traversable).
    """
    private_dir(home, run_as)
    return ensure_traversable(home, run_as)


def read_run_file(path: Path) -> dict | None:
    """A service's run/NAME.json (pid, ports), or None when it is missing or half-written."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
