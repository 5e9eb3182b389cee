"""PostgreSQL settings for the machine it runs on, computed as pgtune does from its cores and memory.

The memory is the smaller of the machine's (/proc/meminfo) and the container's limit (cgroup v2 `memory.max`,
or cgroup v1 `memory.limit_in_bytes`), so a 2 GB container is not tuned as the 64 GB host it runs on. The
formulas are pgtune's for a mixed workload on SSD storage; `maintenance_work_mem` matters most here: an HNSW index
builds several times faster when its graph fits in it. PG_TUNING=false turns it off, PG_MEMORY tunes for less
memory than the machine has, PG_SETTINGS overrides any setting (`name=value,name=value`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from studioops.errors import ConfigError

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge page-rounded number
MAX_CONNECTIONS = 100  # PostgreSQL's default, which we keep

# What names and values PG_SETTINGS may hold: they end up on pg_ctl's command line, which a shell reads.
_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Machine:
    """What the server may use: CPU cores and memory (bytes), and where the memory figure came from."""

    cores: int
    memory: int
    memory_source: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _meminfo_total(root: Path) -> int:
    text = _read(root / "proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    if match:
        return int(match[1]) * KB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_paths(root: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 memory-controller path, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _limit_along(base: Path, cgroup_path: str, filename: str) -> int | None:
    """The tightest limit in `filename` from our cgroup up to the root of the mount. Inside a container the
    cgroup namespace makes our path '/', so the mount's own file is the container's limit."""
    limits = []
    parts = [p for p in cgroup_path.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        text = _read(base.joinpath(*parts[:depth], filename))
        if text and text != "max" and text.isdigit() and int(text) < UNLIMITED:
            limits.append(int(text))
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path = Path("/")) -> tuple[int, str] | None:
    """The container's memory limit in bytes and the file that set it, or None when there is none."""
    v2, v1 = _cgroup_paths(root)
    mount = root / "sys/fs/cgroup"
    if v2 is not None and (mount / "cgroup.controllers").exists():
        limit = _limit_along(mount, v2, "memory.max")
        if limit:
            return limit, "cgroup v2 memory.max"
    for base in (mount / "memory", mount):
        if v1 is not None and (base / "memory.limit_in_bytes").exists():
            limit = _limit_along(base, v1, "memory.limit_in_bytes")
            if limit:
                return limit, "cgroup v1 memory.limit_in_bytes"
    return None


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """The container's CPU quota in cores (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us)."""
    v2, _ = _cgroup_paths(root)
    mount = root / "sys/fs/cgroup"
    text = _read(mount / (v2 or "/").lstrip("/") / "cpu.max") or _read(mount / "cpu.max")
    if text:
        quota, _, period = text.partition(" ")
        if quota.isdigit() and period.isdigit() and int(period):
            return int(quota) / int(period)
    quota, period = _read(mount / "cpu/cpu.cfs_quota_us"), _read(mount / "cpu/cpu.cfs_period_us")
    if quota and period and quota.lstrip("-").isdigit() and int(quota) > 0 and period.isdigit() and int(period):
        return int(quota) / int(period)
    return None


def detect_machine(root: Path = Path("/")) -> Machine:
    """This machine's cores and memory, container limits applied. `root` lets tests use a directory of real
    /proc and /sys/fs/cgroup files of their own."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit(root)
    if quota:
        cores = max(1, min(cores, math.ceil(quota)))
    memory, source = _meminfo_total(root), "/proc/meminfo"
    limit = cgroup_memory_limit(root)
    if limit and limit[0] < memory:
        memory, source = limit
    return Machine(cores, memory, source)


def _kb(value: int) -> str:
    """A size in PostgreSQL's units: whole MB (or GB) when it is one, else kB."""
    if value >= GB and value % GB == 0:
        return f"{value // GB}GB"
    if value >= MB:
        return f"{value // MB}MB"
    return f"{max(64 * KB, value) // KB}kB"


def compute(machine: Machine) -> dict[str, str]:
    """pgtune's settings (mixed workload, SSD) for `machine`. Memory totals stay below machine.memory:
    shared_buffers 1/4, maintenance_work_mem 1/16 (at most 2 GB), work_mem (memory - shared_buffers) /
    (3 * max_connections) per parallel worker."""
    memory, cores = machine.memory, machine.cores
    shared_buffers = memory // 4
    workers_per_gather = max(1, min(4, math.ceil(cores / 2)))
    work_mem = (memory - shared_buffers) // (MAX_CONNECTIONS * 3) // workers_per_gather // 2  # mixed: / 2
    return {
        "shared_buffers": _kb(shared_buffers),
        "effective_cache_size": _kb(memory * 3 // 4),
        "maintenance_work_mem": _kb(min(2 * GB, memory // 16)),
        "work_mem": _kb(work_mem),
        "wal_buffers": _kb(min(16 * MB, max(32 * KB, shared_buffers * 3 // 100))),
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "default_statistics_target": "100",
        "max_worker_processes": str(max(8, cores)),
        "max_parallel_workers": str(cores),
        "max_parallel_workers_per_gather": str(workers_per_gather),
        "max_parallel_maintenance_workers": str(workers_per_gather),
    }


TUNED = tuple(compute(Machine(1, GB, "")))  # the names `status` shows


def current(conn) -> dict[str, str]:
    """What the running server uses for the tuned settings (and any PG_SETTINGS), as PostgreSQL shows them."""
    rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
                        (list(TUNED),)).fetchall()
    return dict(rows)


def parse_overrides(text: str) -> dict[str, str]:
    """PG_SETTINGS: `name=value,name=value` (e.g. `shared_buffers=512MB,work_mem=16MB`)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not _NAME.match(name.lower()) or not _VALUE.match(value):
            raise ConfigError(f"PG_SETTINGS has a malformed entry '{item}'. Write it as name=value pairs separated "
                              "by commas, e.g. PG_SETTINGS=shared_buffers=512MB,work_mem=16MB")
        out[name.lower()] = value
    return out


def parse_size(text: str) -> int:
    """PG_MEMORY: bytes from `4GB`, `512MB` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*(kB|KB|MB|GB|TB)?\s*", text)
    if not match:
        raise ConfigError(f"PG_MEMORY '{text}' is not a size. Write it as 512MB or 4GB")
    return int(match[1]) * {None: 1, "kB": KB, "KB": KB, "MB": MB, "GB": GB, "TB": GB * 1024}[match[2]]


def planned(enabled: bool = True, memory: str = "", overrides: str = "", root: Path = Path("/")) -> dict[str, str]:
    """The settings `up` starts PostgreSQL with: the computed ones (when enabled), PG_SETTINGS on top.
    PG_MEMORY can only lower the memory tuned for: the machine's own figure is a ceiling."""
    settings: dict[str, str] = {}
    if enabled:
        machine = detect_machine(root)
        if memory.strip():
            machine = Machine(machine.cores, min(machine.memory, parse_size(memory)), "PG_MEMORY")
        settings = compute(machine)
    settings.update(parse_overrides(overrides))
    return settings


def for_settings(settings) -> dict[str, str]:
    """`planned` with a Settings object's PG_TUNING, PG_MEMORY and PG_SETTINGS."""
    return planned(settings.pg_tuning, settings.pg_memory, settings.pg_settings)


def command_line(values: dict[str, str]) -> str:
    """`-c name=value ...` for pg_ctl's -o (names and values are checked: a shell reads that string)."""
    for name, value in values.items():
        if not _NAME.match(name) or not _VALUE.match(value):
            raise ConfigError(f"cannot pass the PostgreSQL setting {name}={value}. Check PG_SETTINGS")
    return "".join(f" -c {name}={value}" for name, value in values.items())
