"""Object storage against the real embedded SeaweedFS, which checks signatures, expiries and bucket policies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from studioops.errors import InvalidKeyError
from studioops.stack.process import is_alive, wait_until
from studioops.storage.keys import split_target, validate_key
from studioops.storage.layout import LAYOUT
from tests.conftest import port_taken


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_up_creates_the_documents_buckets_and_folders(running_stack):
    storage = running_stack.storage()
    assert set(LAYOUT) <= set(storage.list_buckets())
    for bucket, prefixes in LAYOUT.items():
        keys = {o.key for o in storage.iter_objects(bucket)}
        assert set(prefixes) <= keys, bucket


def test_binary_round_trip_with_unicode_key_through_the_cli(running_stack, tmp_path):
    data = os.urandom(300_000) + bytes(range(256))
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    key = f"projects/{unique()}/Übersicht – 報告 📄.bin"
    put = running_stack.cli("storage", "put", str(src), f"documents/{key}")
    assert put.returncode == 0, put.stderr
    out = tmp_path / "out.bin"
    got = running_stack.cli("storage", "get", f"documents/{key}", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    listed = json.loads(running_stack.cli("storage", "ls", f"documents/{key.rsplit('/', 1)[0]}/", "--json").stdout)
    assert [o["key"] for o in listed["objects"]] == [key]
    assert listed["objects"][0]["size"] == len(data)
    assert running_stack.cli("storage", "rm", f"documents/{key}").returncode == 0
    assert running_stack.cli("storage", "get", f"documents/{key}", str(out)).returncode == 1


def test_get_to_stdout(running_stack):
    key = f"reports/{unique()}.txt"
    running_stack.storage().put_bytes("generated", key, b"report body\n")
    result = subprocess.run([sys.executable, "-m", "studioops", "storage", "get", f"generated/{key}", "-"],
                            capture_output=True, env={**os.environ, **running_stack.env})
    assert result.returncode == 0 and result.stdout == b"report body\n"


def test_200_mb_file_round_trip_with_bounded_memory(running_stack, tmp_path):
    size = 200 * 1024 * 1024
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(200):
            f.write(block[:-4] + i.to_bytes(4, "big"))
    key = f"pending/{unique()}.bin"
    # Measure the peak RSS of the CLI process alone: a fresh wrapper whose only child is the CLI.
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = {**os.environ, **running_stack.env}
    peaks = []
    for args in (["put", str(src), f"uploads/{key}"], ["get", f"uploads/{key}", str(tmp_path / "back.bin")]):
        result = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "studioops", "storage", *args],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        peaks.append(int(result.stdout.strip().splitlines()[-1]) // 1024)  # MB
    assert (tmp_path / "back.bin").stat().st_size == size
    with src.open("rb") as a, (tmp_path / "back.bin").open("rb") as b:
        while chunk := a.read(1 << 20):
            assert chunk == b.read(1 << 20)
    print(f"peak RSS put {peaks[0]} MB, get {peaks[1]} MB for a 200 MB file")
    assert max(peaks) < 160, peaks  # far below the file's size: it was streamed
    running_stack.storage().delete("uploads", key)


def test_listing_pages_past_1000_keys(running_stack):
    storage = running_stack.storage()
    prefix = f"reports/{unique('many')}/"
    keys = [f"{prefix}{i:05d}.txt" for i in range(1050)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: storage.put_bytes("generated", k, b"x"), keys))
    assert [o.key for o in storage.iter_objects("generated", prefix)] == keys
    listed = running_stack.cli("storage", "ls", f"generated/{prefix}", "--json")
    assert len(json.loads(listed.stdout)["objects"]) == 1050
    usage = {u.bucket: u for u in storage.usage(["generated"])}
    assert usage["generated"].objects >= 1050


def test_presigned_put_then_get_over_plain_http(running_stack):
    key = f"pending/{unique()}.pdf"
    put_url = running_stack.cli("storage", "presign", f"uploads/{key}", "--put", "--expires", "5m").stdout.strip()
    assert put_url.startswith("http://") and "\n" not in put_url
    body = os.urandom(50_000)
    assert httpx.put(put_url, content=body).status_code == 200
    get_url = running_stack.cli("storage", "presign", f"uploads/{key}").stdout.strip()
    response = httpx.get(get_url)
    assert response.status_code == 200 and response.content == body
    # Without the signature the same object is refused.
    assert httpx.get(f"{running_stack.s3_url}/uploads/{key}").status_code == 403


def test_expired_presigned_url_is_refused(running_stack):
    key = f"pending/{unique()}.txt"
    storage = running_stack.storage()
    storage.put_bytes("uploads", key, b"secret")
    url = storage.presign("uploads", key, expires=1)
    time.sleep(2.5)
    assert httpx.get(url).status_code == 403


def test_tampered_presigned_url_is_refused(running_stack):
    key = f"pending/{unique()}.txt"
    storage = running_stack.storage()
    storage.put_bytes("uploads", key, b"secret")
    storage.put_bytes("uploads", key + ".other", b"other secret")
    url = storage.presign("uploads", key, expires=600)
    assert httpx.get(url).status_code == 200
    parts = urlsplit(url)
    other_key = httpx.get(parts._replace(path=parts.path + ".other").geturl())
    assert other_key.status_code == 403
    query = parse_qs(parts.query)
    query["X-Amz-Expires"] = ["604800"]  # try to extend its life
    longer = parts._replace(query=urlencode({k: v[0] for k, v in query.items()})).geturl()
    assert httpx.get(longer).status_code == 403


def test_anonymous_access_follows_the_policies(running_stack):
    storage = running_stack.storage()
    for bucket in LAYOUT:
        storage.put_bytes(bucket, "policy-probe.txt", b"probe")
    try:
        storage.init_layout(public_buckets=["generated"])
        for bucket in LAYOUT:
            put = httpx.put(f"{running_stack.s3_url}/{bucket}/anon-{unique()}.txt", content=b"x")
            assert put.status_code == 403, bucket
            get = httpx.get(f"{running_stack.s3_url}/{bucket}/policy-probe.txt")
            assert get.status_code == (200 if bucket == "generated" else 403), bucket
        shown = json.loads(running_stack.cli("storage", "policy", "--json",
                                             env={"STORAGE_PUBLIC_BUCKETS": "generated"}).stdout)
        access = {b["bucket"]: b["access"] for b in shown["buckets"]}
        assert access["generated"] == "public-read" and access["documents"] == "private"
    finally:
        storage.init_layout(public_buckets=[])
    assert httpx.get(f"{running_stack.s3_url}/generated/policy-probe.txt").status_code == 403


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "a/../../b", "a/./b", "/etc/passwd", "a\\b", "nul\x00byte", "bell\x07", "k" * 2048, "",
     "a//b", "//a", "a/" + "k" * 256 + "/b", "ü" * 128],
)
def test_hostile_keys_are_refused_before_any_request(key):
    with pytest.raises(InvalidKeyError):
        validate_key(key)


def test_hostile_keys_are_refused_by_the_cli(running_stack, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    for target in ["uploads/../../etc/passwd", "uploads/a/../../b", "uploads/" + "k" * 2048]:
        result = running_stack.cli("storage", "put", str(f), target)
        assert result.returncode == 2 and result.stderr.startswith("studioops: the object key"), target
        assert "Traceback" not in result.stderr


def test_valid_keys_and_targets():
    assert split_target("documents/projects/a b/ü.pdf") == ("documents", "projects/a b/ü.pdf")
    assert split_target("documents", key_required=False) == ("documents", "")
    with pytest.raises(InvalidKeyError):
        split_target("Bad_Bucket/x")


def test_wrong_credentials_are_one_clear_line(running_stack):
    result = running_stack.cli("storage", "ls", env={"MINIO_SECRET_KEY": "not-the-secret-key"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "MINIO_ACCESS_KEY and MINIO_SECRET_KEY" in result.stderr
    assert "not-the-secret-key" not in result.stderr and "Traceback" not in result.stderr


def test_unreachable_endpoint_is_one_clear_line(fresh_stack):
    result = fresh_stack.cli("storage", "ls")
    assert result.returncode == 1 and "cannot reach the S3 endpoint" in result.stderr


def test_storage_init_waits_with_a_bound(fresh_stack):
    began = time.monotonic()
    result = fresh_stack.cli("storage", "init", "--timeout", "1s")
    assert result.returncode == 1 and "cannot reach" in result.stderr
    assert time.monotonic() - began < 15


def test_s3_port_in_use_names_the_port(fresh_stack):
    port = int(fresh_stack.env["MINIO_ENDPOINT"].split(":")[1])
    with port_taken(port):
        result = fresh_stack.cli("up")
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "MINIO_ENDPOINT" in result.stderr
    assert result.stderr.count("\n") == 1


def test_objects_survive_down_up_and_kill_9(fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    storage = fresh_stack.storage()
    payloads = {f"projects/{i}.bin": os.urandom(10_000 + i) for i in range(20)}
    for key, data in payloads.items():
        storage.put_bytes("documents", key, data)
    assert fresh_stack.cli("down").returncode == 0
    assert fresh_stack.cli("up").returncode == 0
    assert all(storage.get_bytes("documents", k) == v for k, v in payloads.items())

    more = {f"projects/after-{i}.bin": os.urandom(5_000) for i in range(20)}
    for key, data in more.items():
        storage.put_bytes("documents", key, data)
    pid = json.loads((fresh_stack.home / "run" / "s3.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(pid), 5)
    result = fresh_stack.cli("up")
    assert result.returncode == 0, result.stderr
    assert "started s3" in result.stdout
    assert all(fresh_stack.storage().get_bytes("documents", k) == v for k, v in {**payloads, **more}.items())


def test_two_stacks_side_by_side(running_stack, fresh_stack):
    assert fresh_stack.cli("up").returncode == 0
    key = f"projects/{unique()}.txt"
    fresh_stack.storage().put_bytes("documents", key, b"only in the fresh stack")
    assert fresh_stack.storage().get_bytes("documents", key) == b"only in the fresh stack"
    assert key not in {o.key for o in running_stack.storage().iter_objects("documents", "projects/")}
    status = json.loads(fresh_stack.cli("status", "--json").stdout)["services"]
    assert all(s["state"] == "running" for s in status)  # each stack has its own MINIO_CONSOLE_PORT


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("studioops: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_typo_in_a_bucket_name_creates_no_bucket(running_stack, tmp_path):
    f = tmp_path / "brief.pdf"
    f.write_bytes(b"%PDF-1.4 brief")
    storage = running_stack.storage()
    for args in (["put", str(f), "nobucket/x.pdf"], ["get", "nobucket/x.pdf", str(tmp_path / "out")],
                 ["rm", "nobucket/x.pdf"], ["ls", "nobucket"], ["presign", "nobucket/x.pdf", "--put"],
                 ["get", "nobucket/x.pdf", "-"]):
        error = one_line_error(running_stack.cli("storage", *args), 1)
        assert "no bucket 'nobucket' (buckets: backups, documents, generated, uploads" in error, args
    assert "nobucket" not in storage.list_buckets()
    assert running_stack.cli("storage", "put", str(f), "documents/projects/brief.pdf").returncode == 0


def test_bad_usage_of_storage_commands_exits_2(running_stack, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    for args in (["presign", "documents/x", "--expires", "8d"], ["presign", "documents/x", "--expires", "soon"],
                 ["get", "documents"], ["get", "documents/"], ["put", str(f), "documents/a//b.txt"],
                 ["put", str(f), "documents/" + "k" * 256 + ".txt"], ["put", str(tmp_path / "missing"), "documents/x"],
                 ["put", "/dev/null", "documents/x"], ["put", str(tmp_path), "documents/x"],
                 ["init", "--timeout", "5x"]):
        one_line_error(running_stack.cli("storage", *args), 2)
    assert "not a regular file" in running_stack.cli("storage", "put", "/dev/null", "documents/x").stderr
    assert "a directory" in running_stack.cli("storage", "put", str(tmp_path), "documents/x").stderr


def test_put_refused_by_the_server_is_one_line(running_stack, tmp_path):
    for size in (10, 70 * 1024 * 1024):  # a single PUT, and a multipart upload
        f = tmp_path / f"f{size}.bin"
        with f.open("wb") as out:
            out.truncate(size)
        error = one_line_error(running_stack.cli("storage", "put", str(f), f"uploads/pending/{unique()}.bin",
                                                 env={"MINIO_SECRET_KEY": "not-the-secret-key"}), 1)
        assert "refused the credentials" in error and "not-the-secret-key" not in error


def test_get_into_a_missing_directory_names_the_directory(running_stack, tmp_path):
    key = f"reports/{unique()}.txt"
    running_stack.storage().put_bytes("generated", key, b"x")
    target = tmp_path / "no" / "such" / "dir" / "report.txt"
    error = one_line_error(running_stack.cli("storage", "get", f"generated/{key}", str(target)), 2)
    assert str(target.parent) in error and ".part" not in error


def test_get_to_a_pipe_streams_a_large_object(running_stack):
    """s3transfer's threaded download stalled for ever at 160 MiB when writing to a non-seekable stdout."""
    import hashlib

    size = 200 * 1024 * 1024
    key = f"pending/{unique()}.bin"
    block = os.urandom(1024 * 1024)
    expected = hashlib.sha256()

    class Source:  # 200 MB of data without a 200 MB file: whole reads, as a file gives them
        def __init__(self):
            self.sent = 0

        def read(self, n=-1):
            n = min(size - self.sent, n if n >= 0 else size)
            data = (block * (n // len(block) + 1))[:n] if self.sent % len(block) == 0 else None
            assert data is not None, "reads of whole MiB blocks only"
            self.sent += n
            expected.update(data)
            return data

    storage = running_stack.storage()
    storage.put_stream(Source(), "uploads", key)
    proc = subprocess.Popen([sys.executable, "-m", "studioops", "storage", "get", f"uploads/{key}", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **running_stack.env})
    got, received = hashlib.sha256(), 0
    deadline = time.monotonic() + 120
    try:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.1, deadline - time.monotonic())):
                    continue
                chunk = os.read(proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    break
                got.update(chunk)
                received += len(chunk)
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait()
        storage.delete("uploads", key)
    assert received == size, f"stopped at {received:,} of {size:,} bytes"
    assert got.hexdigest() == expected.hexdigest()
    assert proc.returncode == 0, proc.stderr.read()


def test_usage_counts_folders_apart(running_stack):
    storage = running_stack.storage()
    before = {u.bucket: u for u in storage.usage(["generated"])}["generated"]
    key = f"reports/{unique()}.txt"
    storage.put_bytes("generated", key, b"12345")
    try:
        result = running_stack.cli("storage", "usage", "--json")
        assert result.returncode == 0, result.stderr
        row = {b["bucket"]: b for b in json.loads(result.stdout)["buckets"]}["generated"]
        assert row["folders"] >= len(LAYOUT["generated"])
        assert row["objects"] == before.objects + 1 and row["bytes"] == before.bytes + 5
    finally:
        storage.delete("generated", key)


def test_incomplete_uploads_are_shown_and_stale_ones_aborted(running_stack):
    storage = running_stack.storage()
    key = f"pending/{unique()}.bin"
    upload = storage.client.create_multipart_upload(Bucket="uploads", Key=key)["UploadId"]
    try:
        shown = json.loads(running_stack.cli("storage", "usage", "--json").stdout)
        assert {b["bucket"]: b for b in shown["buckets"]}["uploads"]["incomplete_uploads"] >= 1
        assert "incomplete multipart upload" in running_stack.cli("storage", "usage").stdout
        # A fresh upload may still be running: `storage init` leaves it alone (it aborts those over a day old).
        init = running_stack.cli("storage", "init", "--json")
        assert init.returncode == 0, init.stderr
        assert key not in {u["key"] for u in json.loads(init.stdout)["aborted_uploads"]}
        assert key in {u.key for u in storage.incomplete_uploads("uploads")}
        time.sleep(1.5)
        aborted = storage.abort_stale_uploads(older_than=1, buckets=["uploads"])
        assert key in {u.key for u in aborted}
        assert key not in {u.key for u in storage.incomplete_uploads("uploads")}
    finally:
        with contextlib.suppress(Exception):
            storage.client.abort_multipart_upload(Bucket="uploads", Key=key, UploadId=upload)
