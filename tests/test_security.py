"""Security of the embedded stack, tried as a stranger and as a careless operator would (issue #10 items 1, 2, 6-9;
issue #12 item 2: the S3 console).

Strangers are played by `nobody` (runuser), so these tests need root; they skip, naming it, without it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import string
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from studioops import stack
from tests.conftest import ApiServer, Stack, make_stack, stack_port

PROBE = Path(__file__).parent / "support" / "port_probe.py"
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"),
                                reason="needs root and runuser to act as the unprivileged user nobody")


def as_nobody(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/")


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own, with its S3 console on a free port."""
    s = make_stack(tmp_path_factory.mktemp("secure"))
    s.env["MINIO_CONSOLE_PORT"] = str(stack_port())
    stack.up(s.settings, timeout=60)
    yield s
    stack.down(s.settings)


def _run_file(s: Stack) -> dict:
    return json.loads((s.home / "run" / "s3.json").read_text())


# -- item 1: SeaweedFS's internal ports ------------------------------------------------------------------------
@needs_root
def test_no_port_of_the_s3_server_serves_or_takes_objects_without_credentials(secure_stack: Stack) -> None:
    storage = secure_stack.storage()
    secret = f"object-content-{uuid.uuid4().hex}"
    key = f"probe/{uuid.uuid4().hex}.txt"
    storage.client.put_object(Bucket="documents", Key=key, Body=secret.encode())
    info = _run_file(secure_stack)
    ports = sorted({info["s3_port"], *info["ports"].values(), *([info["console_port"]] if info.get("console_port")
                                                                 else [])})
    result = as_nobody(SYSTEM_PYTHON, str(PROBE),
                       json.dumps({"ports": ports, "bucket": "documents", "key": key, "secret": secret}), timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert len(ports) >= 9, ports  # S3, master, volume, filer and admin, each with its gRPC twin

    # Nothing the stranger sent changed the bucket: the object is intact and nothing was added.
    assert storage.client.get_object(Bucket="documents", Key=key)["Body"].read() == secret.encode()
    keys = [o["Key"] for o in storage.client.list_objects_v2(Bucket="documents").get("Contents", [])]
    assert not [k for k in keys if "evil" in k], keys


@needs_root
def test_weed_runs_as_the_service_user_and_ignores_weed_variables(secure_stack: Stack) -> None:
    pid = _run_file(secure_stack)["pid"]
    assert Path(f"/proc/{pid}").stat().st_uid != 0
    # The caller's WEED_* variables never reach weed: they would override security.toml.
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.upper().startswith(b"WEED_")]


def test_security_files_are_private(secure_stack: Stack) -> None:
    s3 = secure_stack.home / "s3"
    for path in [s3 / "security.toml", s3 / "s3.json", *(s3 / "tls").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert not (s3 / "tls" / "ca.key").exists()  # the CA signs once and is forgotten
    text = (s3 / "security.toml").read_text()
    assert "[grpc.master]" in text and "[https.volume]" in text and "[jwt.filer_signing.read]" in text


# -- item 2: files readable by everyone ------------------------------------------------------------------------
@needs_root
def test_nobody_reads_the_home_the_database_or_the_objects(secure_stack: Stack) -> None:
    home = secure_stack.home
    secure_stack.storage().client.put_object(Bucket="documents", Key="private/x.txt", Body=b"private bytes")
    assert home.stat().st_mode & 0o777 == 0o700
    pgdata = home / "postgres" / "data"
    volume_files = [p for p in (home / "s3" / "data").iterdir() if p.suffix in {".dat", ".idx"}]
    assert volume_files
    for path in volume_files:
        assert path.stat().st_mode & 0o077 == 0, path
    for directory in (home / "s3" / "data", pgdata, home / "postgres", home / "s3", home / "run"):
        assert directory.stat().st_mode & 0o077 == 0, directory
    # weed's gRPC Unix sockets in /tmp (seaweedfs-<component>-grpc-<port>.sock) take no stranger either.
    ports = {str(p) for p in _run_file(secure_stack)["ports"].values()}
    sockets = [p for p in Path("/tmp").glob("seaweedfs-*.sock") if p.stem.rsplit("-", 1)[-1] in ports]
    assert sockets
    targets = [home, pgdata, pgdata / "PG_VERSION", *volume_files, home / "s3" / "security.toml", *sockets]
    script = ("import os, socket, sys\nfound = []\nfor p in sys.argv[1:]:\n    try:\n"
              "        if p.endswith('.sock'):\n"
              "            socket.socket(socket.AF_UNIX).connect(p)\n"
              "        else:\n"
              "            os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(1)\n"
              "        found.append(p)\n"
              "    except PermissionError:\n        pass\nprint('\\n'.join(found))\n")
    result = as_nobody(SYSTEM_PYTHON, "-c", script, *map(str, targets))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# -- issue #12 item 2: the S3 console --------------------------------------------------------------------------
def test_the_s3_console_asks_for_the_s3_keys(secure_stack: Stack) -> None:
    info = _run_file(secure_stack)
    port = int(secure_stack.env["MINIO_CONSOLE_PORT"])
    assert info["console_port"] == port
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as anonymous:
        page = anonymous.get("/object-store/buckets")
        assert page.status_code in {302, 303, 307} and "/login" in page.headers["location"]

    def login(password: str) -> httpx.Client:
        client = httpx.Client(base_url=url, timeout=10)
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]*)"', form)
        client.post("/login", data={"csrf_token": token[1] if token else "",
                                    "username": secure_stack.env["MINIO_ACCESS_KEY"], "password": password})
        return client

    wrong = login("not-the-secret-key")
    assert wrong.get("/object-store/buckets").status_code != 200
    wrong.close()
    right = login(secure_stack.env["MINIO_SECRET_KEY"])
    page = right.get("/object-store/buckets")
    right.close()
    assert page.status_code == 200 and "documents" in page.text

    result = secure_stack.cli("status", "--json")
    rows = {s["name"]: s for s in json.loads(result.stdout)["services"]}
    assert rows["s3-console"]["state"] == "running"
    assert rows["s3-console"]["address"] == f"127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in secure_stack.cli("status").stdout


def test_a_taken_console_port_leaves_s3_running_and_says_so(tmp_path: Path) -> None:
    from tests.conftest import port_taken

    s = make_stack(tmp_path)
    port = stack_port()
    s.env["MINIO_CONSOLE_PORT"] = str(port)
    try:
        with port_taken(port):
            result = stack.up(s.settings, timeout=60)
        assert any(f"port {port}" in note and "MINIO_CONSOLE_PORT" in note for note in result.notes), result.notes
        assert _run_file(s)["console_port"] is None
        assert s.storage().list_buckets()
        rows = {st.name: st for st in stack.status(s.settings)}
        assert rows["s3-console"].state == "off"
    finally:
        stack.down(s.settings)


# -- item 6: the production guard ------------------------------------------------------------------------------
GUARDED = [
    ["db", "seed", "--reset", "--yes"],
    ["backup", "restore", "latest", "--force"],
    ["backup", "create"],
    ["backup", "prune"],
    ["clean", "--yes"],
    ["storage", "put", "README.md", "documents/x.txt"],
    ["storage", "rm", "documents/x.txt"],
    ["storage", "ls", "documents"],
    ["db", "migrate"],
    ["traces"],
]


@pytest.mark.parametrize("command", GUARDED, ids=" ".join)
def test_production_with_default_secrets_refuses_every_data_command(tmp_path: Path, command: list[str]) -> None:
    s = make_stack(tmp_path)  # never started: a refused command must not even try to reach it
    (s.home / "README.md").write_text("x")
    s.env.update({"STUDIOOPS_ENV": "production", "MINIO_SECRET_KEY": "studioops123",
                  "DATABASE_URL": s.env["DATABASE_URL"].replace("test-password-1234", "studioops123")})
    before = sorted(p.name for p in s.home.iterdir())
    result = s.cli(*command)
    assert result.returncode != 0
    line = result.stderr.strip()
    assert line.startswith("studioops: STUDIOOPS_ENV=production refuses default or weak secrets"), line
    assert len(line.splitlines()) == 1 and "studioops123" not in line
    assert sorted(p.name for p in s.home.iterdir()) == before  # nothing written, nothing deleted


@pytest.mark.parametrize("command", [["--help"], ["env", "init", "--production", "--force"], ["status"],
                                     ["down"], ["db", "seed", "--help"]], ids=" ".join)
def test_production_guard_lets_commands_without_data_access_run(tmp_path: Path, command: list[str]) -> None:
    s = make_stack(tmp_path)
    s.env.update({"STUDIOOPS_ENV": "production", "MINIO_SECRET_KEY": "studioops123"})
    result = s.cli(*command)
    assert "refuses default or weak secrets" not in result.stderr
    # `status` runs and reports; it exits 1 because this stack's services are not running.
    assert result.returncode == (1 if command == ["status"] else 0), result.stderr
    if command == ["status"]:
        assert "postgres" in result.stdout and "stopped" in result.stdout


# -- item 7: the backups bucket is never public ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["backups", "documents, backups", " Backups "])
def test_backups_bucket_cannot_be_made_public(tmp_path: Path, value: str) -> None:
    s = make_stack(tmp_path)
    s.env["STORAGE_PUBLIC_BUCKETS"] = value
    result = s.cli("storage", "policy")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("studioops: STORAGE_PUBLIC_BUCKETS names the backups bucket")
    assert len(result.stderr.strip().splitlines()) == 1
    from studioops.config import Settings
    from studioops.errors import ConfigError

    with pytest.raises(ConfigError):
        Settings(_env_file=None, storage_public_buckets=value)


# -- item 8: bounded /metrics ----------------------------------------------------------------------------------
def test_made_up_http_methods_do_not_grow_metrics(running_stack: Stack) -> None:
    server = ApiServer(running_stack)
    try:
        def series() -> int:
            text = httpx.get(server.url + "/metrics", timeout=10).text
            return len([line for line in text.splitlines() if line.startswith("studioops_http_")])

        with httpx.Client(base_url=server.url, timeout=10) as client:
            for method in ("GET", "POST", "PUT"):
                client.request(method, "/livez")
            baseline = series()
            rng = random.Random(10)
            for _ in range(1000):
                method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
                client.request(method, "/livez")
                client.request(method, f"/nowhere/{rng.random()}")
        grown = series()
        # `other` for the unknown methods on two routes adds a few series, never one per method.
        assert grown - baseline <= 60, (baseline, grown)
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'method="other"' in text
    finally:
        server.stop()


# -- item 9: DATABASE_URL with special characters --------------------------------------------------------------
BAD_URLS = {
    "percent": ("postgresql://studioops:100%Secret-zq@localhost:5432/studioops", "100%Secret-zq"),
    "space": ("postgresql://studioops:Open Sesame-zq@localhost:5432/studioops", "Open Sesame-zq"),
    "hash": ("postgresql://studioops:Secret#Tail-zq@localhost:5432/studioops", "Secret#Tail-zq"),
    "at": ("postgresql://studioops:Secret1@Tail-zq@localhost:5432/studioops", "Secret1@Tail-zq"),
    "no scheme": ("studioops:PlainSecret-zq@localhost:5432/studioops", "PlainSecret-zq"),
}


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_a_database_url_with_special_characters_says_how_to_encode_and_shows_nothing(tmp_path: Path,
                                                                                    case: str) -> None:
    url, password = BAD_URLS[case]
    s = make_stack(tmp_path)
    s.env["DATABASE_URL"] = url
    result = s.cli("db", "status")
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("studioops: DATABASE_URL"), line
    assert "Traceback" not in result.stderr
    if case == "no scheme":
        assert "postgresql://" in line
    else:
        assert "urllib.parse.quote" in line
    # No piece of the password: neither whole, nor any 4 characters of it.
    for i in range(len(password) - 3):
        assert password[i:i + 4] not in line, (password[i:i + 4], line)


def test_an_encoded_password_with_special_characters_works() -> None:
    from urllib.parse import quote

    from studioops.config import parse_database_url

    password = "p%ss w#rd@/?:x"
    url = f"postgresql://studioops:{quote(password, safe='')}@localhost:5432/studioops"
    assert parse_database_url(url).password == password


def test_every_command_but_the_few_without_data_access_is_guarded(tmp_path: Path, monkeypatch) -> None:
    """Walk the whole command tree, so that a command added later cannot slip past the guard."""
    import typer.main
    from typer.testing import CliRunner

    from studioops.cli import NO_DATA_ACCESS, app
    from studioops.config import reset_settings
    from studioops.errors import ConfigError

    s = make_stack(tmp_path)
    for name, value in {**s.env, "STUDIOOPS_ENV": "production", "MINIO_SECRET_KEY": "studioops123"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def leaves(command, path: list[str]) -> Iterator[tuple[list[str], object]]:
        if hasattr(command, "commands"):  # a group (typer's click may be its own copy: no isinstance)
            for name, sub in command.commands.items():
                yield from leaves(sub, [*path, name])
        else:
            yield path, command

    checked = []
    for path, command in leaves(typer.main.get_command(app), []):
        if " ".join(path) in NO_DATA_ACCESS:
            continue
        # Any value for required arguments: the guard must refuse before the command looks at them.
        arguments = ["documents/x.txt" for p in command.params if p.param_type_name == "argument" and p.required]
        reset_settings()
        result = CliRunner().invoke(app, [*path, *arguments])
        assert isinstance(result.exception, ConfigError), (path, result.output, result.exception)
        assert "refuses default or weak secrets" in str(result.exception)
        checked.append(" ".join(path))
    assert {"db seed", "backup restore", "storage rm", "clean", "up", "api"} <= set(checked)
