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
import pytest

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
    assert s3_console["name"] == "s3-console" and s3_console["state"] == "running"
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


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("studioops: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def services(stack) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(stack.cli("status", "--json").stdout)["services"]}


@pytest.mark.parametrize("busy", ["postgres", "s3"])
def test_a_failed_up_leaves_nothing_running(fresh_stack, busy):
    port = fresh_stack.settings.db.port if busy == "postgres" else int(fresh_stack.env["MINIO_ENDPOINT"].split(":")[1])
    with port_taken(port):
        result = fresh_stack.cli("up")
        one_line_error(result, 1)
        assert f"port {port}" in result.stderr
        state = services(fresh_stack)
        assert all(s["state"] != "running" and s["pid"] is None for s in state.values()), state
        assert fresh_stack.cli("status").returncode == 1
    assert fresh_stack.cli("up").returncode == 0
    assert fresh_stack.cli("status").returncode == 0


def test_status_exits_1_when_a_service_is_down(fresh_stack):
    assert fresh_stack.cli("status").returncode == 1  # nothing runs
    assert fresh_stack.cli("up").returncode == 0
    assert fresh_stack.cli("status").returncode == 0
    pid = json.loads((fresh_stack.home / "run" / "s3.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(pid), 5)
    assert fresh_stack.cli("status").returncode == 1
    assert fresh_stack.cli("status", "--json").returncode == 1


def test_the_suggested_port_is_free_and_no_other_settings_port(fresh_stack):
    from studioops.stack.process import port_is_free
    from tests.conftest import stack_port

    s3_port = stack_port()
    while not port_is_free(s3_port + 1):  # S3 on P, PostgreSQL on P + 1: the naive suggestion for S3
        s3_port = stack_port()
    pg_url = fresh_stack.url.rsplit(":", 1)[0] + f":{s3_port + 1}/studioops"
    env = {"MINIO_ENDPOINT": f"localhost:{s3_port}", "DATABASE_URL": pg_url}
    fresh_stack.env.update(env)
    with port_taken(s3_port):
        error = one_line_error(fresh_stack.cli("up"), 1)
    suggested = int(error.split("MINIO_ENDPOINT=localhost:")[1].split(")")[0])
    assert suggested not in {s3_port, s3_port + 1}
    assert port_is_free(suggested)


def test_up_creates_the_role_and_database_that_database_url_names(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    other_db = fresh_stack.settings.db.with_database("otherdb")
    status = fresh_stack.cli("db", "status", env={"DATABASE_URL": other_db})
    assert status.returncode == 1 and "studioops up" in status.stderr
    up = fresh_stack.cli("up", env={"DATABASE_URL": other_db})
    assert up.returncode == 0, up.stderr
    assert "created the database 'otherdb'" in up.stdout
    assert fresh_stack.cli("db", "status", env={"DATABASE_URL": other_db}).returncode == 0
    # A role the data directory does not have: created, and its database with it.
    new_role = other_db.replace("studioops:", "newrole:").replace("/otherdb", "/newdb")
    up = fresh_stack.cli("up", env={"DATABASE_URL": new_role})
    assert up.returncode == 0, up.stderr
    assert "created the role 'newrole'" in up.stdout
    with psycopg.connect(new_role) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("newrole", "newdb")
    # A new password for the same role (as `env init` writes) is applied by `down && up`.
    new_password = fresh_stack.url.replace("test-password-1234", "another-password-5678")
    assert fresh_stack.cli("down").returncode == 0
    up = fresh_stack.cli("up", env={"DATABASE_URL": new_password})
    assert up.returncode == 0, up.stderr
    with psycopg.connect(new_password) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_a_missing_database_on_a_managed_server_says_to_create_it_there(running_stack):
    from studioops.config import parse_database_url
    from studioops.db.connect import explain_connect_error

    missing = running_stack.settings.db.with_database("nosuchdb")
    with pytest.raises(psycopg.OperationalError) as real:  # the server's own answer
        psycopg.connect(missing)
    managed = parse_database_url(missing.replace("@localhost:", "@db.example.com:"))
    message = str(explain_connect_error(real.value, managed))
    assert "create it on db.example.com" in message and "studioops up" not in message
    local = str(explain_connect_error(real.value, parse_database_url(missing)))
    assert "studioops up" in local and "creates the role and database" in local


@pytest.mark.parametrize("args", [
    ["up", "--timeout", "5x"], ["down", "--timeout", "soon"], ["logs", "bogus"],
    ["health", "--timeout", "99999999999d"], ["health", "--timeout", "0s"],
    ["api", "--host", "256.1.1.1"], ["api", "--host", "192.0.2.1"],
])
def test_bad_usage_exits_2_in_one_line(fresh_stack, args):
    one_line_error(fresh_stack.cli(*args), 2)


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_api_port_out_of_range_is_bad_usage(fresh_stack, port):
    result = fresh_stack.cli("api", "--port", port)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--port" in result.stderr


def test_api_host_that_is_not_ours_is_not_called_a_busy_port(fresh_stack):
    error = one_line_error(fresh_stack.cli("api", "--host", "256.1.1.1"), 2)
    assert "in use" not in error and "256.1.1.1" in error


def test_env_init_warns_when_it_changes_a_running_stacks_credentials(fresh_stack):
    from tests.conftest import is_setting

    # The user's settings live in ./.env (nothing exported), as after a first `env init`.
    (fresh_stack.home / ".env").write_text("".join(f"{k}={v}\n" for k, v in fresh_stack.env.items()))
    bare = {k: v for k, v in os.environ.items() if not is_setting(k)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "studioops", *args], capture_output=True, text=True,
                              env=bare, cwd=fresh_stack.home, timeout=120)

    quiet = cli("env", "init", "--force", "--path", str(fresh_stack.home / "other.env"))
    assert quiet.returncode == 0 and "warning" not in quiet.stderr  # nothing runs yet, and not ./.env
    assert cli("up").returncode == 0
    result = cli("env", "init", "--force")
    assert result.returncode == 0, result.stderr
    assert "warning: the running stack" in result.stderr
    assert "MINIO_SECRET_KEY" in result.stderr and "studioops down && studioops up" in result.stderr
    assert "LANGFUSE" in result.stderr


def test_every_connection_error_names_the_host(fresh_stack):
    from tests.conftest import stack_port

    closed = stack_port()
    env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test",
           "LANGFUSE_HOST": f"http://127.0.0.1:{closed}"}
    result = json.loads(fresh_stack.cli("health", "--json", env=env).stdout)
    assert f"127.0.0.1:{closed}" in result["observability"]["error"]
    assert fresh_stack.env["MINIO_ENDPOINT"] in result["storage"]["error"]
    assert str(fresh_stack.settings.db.port) in result["database"]["error"]
