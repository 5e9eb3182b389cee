"""`studioops up | down | status | logs | db url`, run as a user runs them, against real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psycopg

from studioops.stack.process import is_alive, wait_until
from tests.conftest import LATEST_MIGRATION, port_taken


def postmaster_pid(stack) -> int:
    return int((stack.home / "postgres" / "data" / "postmaster.pid").read_text().splitlines()[0])


def test_up_status_down_lifecycle_is_idempotent(fresh_stack):
    first = fresh_stack.cli("up")
    assert first.returncode == 0, first.stderr
    assert "started postgres, s3" in first.stdout
    assert "001_initial_schema.sql" in first.stdout and LATEST_MIGRATION in first.stdout
    assert "test-password" not in first.stdout  # the URL is shown redacted
    assert "/login?token=" in first.stdout  # the console's one-time login link

    second = fresh_stack.cli("up")
    assert second.returncode == 0
    assert "already running: postgres, s3" in second.stdout

    status = fresh_stack.cli("status", "--json")
    assert status.returncode == 0
    pg, s3, console, s3_console = json.loads(status.stdout)["services"]
    assert console["name"] == "console" and console["state"] == "running"
    assert s3["name"] == "s3" and s3["state"] == "running"
    assert s3_console["name"] == "s3-console"  # running, or off when another stack holds MINIO_CONSOLE_PORT
    assert s3["address"] == "127.0.0.1:" + fresh_stack.env["MINIO_ENDPOINT"].split(":")[1]
    assert pg["state"] == "running"
    assert pg["versions"]["postgresql"].startswith("18.")
    assert pg["versions"]["pgvector"].startswith("0.8")
    assert pg["details"]["migration_head"] == LATEST_MIGRATION
    assert pg["address"].startswith("127.0.0.1:")

    with psycopg.connect(fresh_stack.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 0

    down = fresh_stack.cli("down")
    assert down.returncode == 0 and "stopped postgres, s3" in down.stdout
    again = fresh_stack.cli("down")
    assert again.returncode == 0 and "already stopped" in again.stdout
    for stopped in json.loads(fresh_stack.cli("status", "--json").stdout)["services"]:
        assert stopped["state"] == "stopped" and stopped["pid"] is None


def test_up_seed_loads_sample_data_only_into_a_new_database(fresh_stack):
    first = fresh_stack.cli("up", "--seed")
    assert first.returncode == 0, first.stderr
    assert "seeded the new database with 51 sample rows" in first.stdout
    with psycopg.connect(fresh_stack.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 4
        conn.execute("DELETE FROM projects")
        conn.commit()
    assert fresh_stack.cli("down").returncode == 0
    again = fresh_stack.cli("up", "--seed")
    assert again.returncode == 0 and "seeded" not in again.stdout  # an existing database is left alone
    with psycopg.connect(fresh_stack.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 0


def test_listens_on_loopback_only(running_stack):
    port = running_stack.settings.db.port
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with psycopg.connect(running_stack.url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    assert listen == "127.0.0.1"


def test_port_in_use_is_one_line_naming_the_port(fresh_stack):
    port = fresh_stack.settings.db.port
    with port_taken(port):
        result = fresh_stack.cli("up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("studioops: ")
    assert f"port {port}" in lines[0] and "DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_stale_pid_file_is_recovered(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    assert fresh_stack.cli("down").returncode == 0
    # After a reboot postmaster.pid can name a PID that now belongs to an unrelated live process.
    pid_file = fresh_stack.home / "postgres" / "data" / "postmaster.pid"
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{unrelated.pid}\n{fresh_stack.home}\n0\n{fresh_stack.settings.db.port}\n\n\n0 0\nready\n")
        result = fresh_stack.cli("up")
        assert result.returncode == 0, result.stderr
        assert "started postgres" in result.stdout
    finally:
        unrelated.kill()


def test_kill_9_then_up_keeps_every_committed_row(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    with psycopg.connect(fresh_stack.url) as conn:
        for i in range(100):
            conn.execute("INSERT INTO projects (name, client_name) VALUES (%s, 'Crash Test Ltd')", (f"p{i}",))
            conn.commit()
    pid = postmaster_pid(fresh_stack)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(pid), 5)
    result = fresh_stack.cli("up")
    assert result.returncode == 0, result.stderr
    assert "started postgres" in result.stdout
    with psycopg.connect(fresh_stack.url) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE client_name = 'Crash Test Ltd'").fetchone()[0] == 100


def test_db_url_prints_the_full_url(running_stack):
    result = running_stack.cli("db", "url")
    assert result.returncode == 0
    assert result.stdout.strip() == running_stack.url
    with psycopg.connect(result.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_logs_show_the_postgres_log(running_stack):
    result = running_stack.cli("logs", "-n", "200")
    assert result.returncode == 0
    assert "database system is ready to accept connections" in result.stdout


def test_logs_follow_prints_new_lines(running_stack):
    env = {k: v for k, v in os.environ.items()}
    env.update(running_stack.env)
    follower = subprocess.Popen(
        [sys.executable, "-m", "studioops", "logs", "-f", "-n", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        time.sleep(1.0)
        # A statement that fails is logged by PostgreSQL.
        with psycopg.connect(running_stack.url, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
            conn.execute("SELECT no_such_column_for_follow_test")
        time.sleep(1.0)
    finally:
        follower.send_signal(signal.SIGINT)
        out, _ = follower.communicate(timeout=10)
    assert "no_such_column_for_follow_test" in out


def test_wrong_password_is_one_clear_line(running_stack):
    bad = running_stack.url.replace("test-password-1234", "wrong-password-999")
    result = running_stack.cli("db", "status", env={"DATABASE_URL": bad})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("studioops: ")
    assert "password" in result.stderr and "wrong-password-999" not in result.stderr


def test_unreachable_database_says_what_to_do(fresh_stack):
    result = fresh_stack.cli("db", "migrate")
    assert result.returncode == 1
    assert "studioops up" in result.stderr and "Traceback" not in result.stderr


def test_bad_database_url_is_one_line(fresh_stack):
    result = fresh_stack.cli("status", env={"DATABASE_URL": "mysql://root:topsecret@x/db"})
    assert result.returncode == 1
    assert result.stderr.startswith("studioops: DATABASE_URL must start with postgresql://")
    assert "topsecret" not in result.stderr


def test_debug_shows_the_traceback(fresh_stack):
    result = fresh_stack.cli("--debug", "db", "migrate")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
