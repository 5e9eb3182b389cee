"""The embedded PostgreSQL's pgtune-style settings: within the machine's memory, a container's limit obeyed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from studioops import stack
from studioops.errors import ConfigError
from studioops.stack import tuning
from studioops.stack.tuning import GB, MB, Machine, compute, detect_machine, parse_size, planned

AUTOVACUUM_WORKERS = 3  # PostgreSQL's default; each may use maintenance_work_mem


def worst_case_memory(values: dict[str, str]) -> int:
    """What the settings let the server allocate at once: shared buffers and WAL buffers, one index build plus
    every autovacuum worker at maintenance_work_mem, and every connection sorting with all its parallel workers."""
    workers = int(values["max_parallel_workers_per_gather"])
    return (parse_size(values["shared_buffers"]) + parse_size(values["wal_buffers"])
            + parse_size(values["maintenance_work_mem"]) * (1 + AUTOVACUUM_WORKERS)
            + parse_size(values["work_mem"]) * tuning.MAX_CONNECTIONS * (1 + workers))


def fake_root(tmp_path: Path, meminfo_kb: int, cgroup_line: str, files: dict[str, str]) -> Path:
    """A directory holding real proc and sys/fs/cgroup files, as a container or a host has them."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {meminfo_kb} kB\nMemFree:        1000 kB\n")
    (tmp_path / "proc/self/cgroup").write_text(cgroup_line + "\n")
    for rel, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize("memory", [512 * MB, 1 * GB, 2 * GB, 8 * GB, 24 * GB, 256 * GB])
@pytest.mark.parametrize("cores", [1, 2, 8, 64])
def test_the_settings_never_exceed_the_memory_they_were_computed_for(memory, cores):
    values = compute(Machine(cores, memory, "test"))
    assert worst_case_memory(values) <= memory
    assert parse_size(values["shared_buffers"]) == memory // 4 // MB * MB
    assert parse_size(values["maintenance_work_mem"]) <= 2 * GB
    assert 1 <= int(values["max_parallel_maintenance_workers"]) <= max(1, cores)


def test_this_machine_is_read_as_it_is():
    machine = detect_machine()
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < machine.memory <= physical
    assert 1 <= machine.cores <= (os.cpu_count() or 1)
    assert worst_case_memory(planned()) <= physical


def test_a_cgroup_v2_memory_limit_wins_over_the_host_memory(tmp_path):
    root = fake_root(tmp_path, 64 * 1024 * 1024, "0::/kubepods/pod1/app", {
        "cgroup.controllers": "cpu memory",
        "kubepods/memory.max": "max",
        "kubepods/pod1/memory.max": str(2 * GB),
        "kubepods/pod1/app/memory.max": "max",
        "kubepods/pod1/app/cpu.max": "150000 100000",
    })
    machine = detect_machine(root)
    assert (machine.memory, machine.memory_source) == (2 * GB, "cgroup v2 memory.max")
    assert machine.cores == min(2, len(os.sched_getaffinity(0)))
    values = planned(root=root)
    assert values["shared_buffers"] == "512MB"
    assert worst_case_memory(values) <= 2 * GB


def test_a_cgroup_v1_memory_limit_wins_and_no_limit_means_the_host(tmp_path):
    limited = fake_root(tmp_path / "v1", 16 * 1024 * 1024, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc", {
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "memory/docker/abc/memory.limit_in_bytes": str(1 * GB),
    })
    assert detect_machine(limited).memory == 1 * GB
    assert planned(root=limited)["shared_buffers"] == "256MB"
    unlimited = fake_root(tmp_path / "none", 16 * 1024 * 1024, "0::/", {
        "cgroup.controllers": "memory", "memory.max": "max"})
    assert detect_machine(unlimited) == Machine(detect_machine(unlimited).cores, 16 * GB, "/proc/meminfo")


def test_pg_memory_can_only_lower_the_figure_and_pg_settings_override(tmp_path):
    root = fake_root(tmp_path, 4 * 1024 * 1024, "0::/", {"cgroup.controllers": "memory"})
    assert planned(memory="64GB", root=root)["shared_buffers"] == "1GB"  # 4 GB machine: 64 GB is not believed
    assert planned(memory="2GB", root=root)["shared_buffers"] == "512MB"
    values = planned(overrides="shared_buffers=300MB, work_mem=8MB", root=root)
    assert (values["shared_buffers"], values["work_mem"]) == ("300MB", "8MB")
    assert planned(enabled=False, overrides="work_mem=8MB", root=root) == {"work_mem": "8MB"}
    with pytest.raises(ConfigError, match="PG_SETTINGS has a malformed entry 'work_mem=8MB; rm -rf /'"):
        planned(overrides="work_mem=8MB; rm -rf /", root=root)


def test_a_bad_setting_is_one_clear_line(fresh_stack):
    result = fresh_stack.cli("status", env={"PG_SETTINGS": "shared_buffers"})
    assert result.returncode != 0
    assert "PG_SETTINGS" in result.stderr and "Traceback" not in result.stderr


def test_up_starts_postgres_with_the_tuning_and_status_shows_it(fresh_stack):
    fresh_stack.env.update({"PG_MEMORY": "2GB", "PG_SETTINGS": "work_mem=7MB"})
    stack.up(fresh_stack.settings, timeout=60)
    with psycopg.connect(fresh_stack.url) as conn:
        shown = dict(conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                                  "('shared_buffers', 'work_mem', 'maintenance_work_mem')").fetchall())
    assert shown == {"shared_buffers": "512MB", "work_mem": "7MB", "maintenance_work_mem": "128MB"}
    result = fresh_stack.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    postgres = json.loads(result.stdout)["services"][0]
    assert postgres["details"]["settings"]["shared_buffers"] == "512MB"
    assert postgres["details"]["settings"]["max_wal_size"] == "4GB"
    text = fresh_stack.cli("status")
    assert "postgres settings: " in text.stdout and "work_mem 7MB" in text.stdout
