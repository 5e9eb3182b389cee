"""The console in a real browser (Debian's Chromium driven by Playwright) against a real stack: objects put
through S3, a real backup, `studioops api` serving the pages, `studioops console` printing the login link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from studioops import stack
from studioops.config import Settings
from tests.conftest import ApiServer, Stack, make_stack
from tests.support.browser import screenshot

PASSWORD = "a-console-password-for-tests"
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
PAGES = ["/", "/database", "/storage", "/backups"]


class ConsoleServer(ApiServer):
    """`studioops api` serving the console, with LANGFUSE_HOST naming it (as the console service does)."""

    log_name = "console"

    def own_settings(self) -> dict[str, str]:
        return {"LANGFUSE_HOST": self.url}


@pytest.fixture(scope="module")
def data_stack(tmp_path_factory) -> Iterator[Stack]:
    """A stack of this module's own, with data to show: a table with 120 rows (one holding markup), objects in
    S3, and a real backup."""
    s = make_stack(tmp_path_factory.mktemp("console"))
    stack.up(s.settings, timeout=60)
    with s.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE console_rows (id int PRIMARY KEY, label text, note text)")
        conn.execute("INSERT INTO console_rows SELECT g, 'row ' || g, NULL FROM generate_series(1, 120) g")
        conn.execute("UPDATE console_rows SET note = %s WHERE id = 7", (XSS,))
        conn.execute("ANALYZE console_rows")
    storage = s.storage()
    for i in range(5):
        storage.put_bytes("documents", f"projects/console/file-{i}.txt", f"content {i}\n".encode() * (i + 1))
    from studioops.backup import create_backup

    create_backup(s.settings)
    yield s
    stack.down(s.settings)


@pytest.fixture(scope="module")
def server(data_stack) -> Iterator[ConsoleServer]:
    srv = ConsoleServer(data_stack, CONSOLE_PASSWORD=PASSWORD)
    yield srv
    srv.stop()


def login_link(s: Stack, srv: ConsoleServer) -> str:
    result = s.cli("console", "--json", env=srv.env)
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["reachable"] is True and data["url"].startswith(srv.url + "/login?token=")
    return data["url"]


@pytest.fixture
def page(browser, data_stack, server):
    """A logged-in browser page (its own context: its own cookies)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1360, "height": 900})
    p = context.new_page()
    p.goto(login_link(data_stack, server))
    assert p.url == server.url + "/"
    yield p
    context.close()


def cookies_of(page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


# -- access -------------------------------------------------------------------------------------------------------
def test_nothing_is_shown_without_a_login(server, browser):
    for path in [*PAGES, "/database/tables/public/console_rows", "/storage/b/documents", "/docs", "/openapi.json",
                 "/partials/overview"]:
        r = httpx.get(server.url + path, headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (path, r.status_code)
    for path in ["/api/console/overview", "/api/console/backups", "/api/console/storage/buckets",
                 "/database/tables/public/console_rows.csv"]:
        r = httpx.get(server.url + path)
        assert r.status_code == 401 and "studioops console" in r.json()["detail"], path
        assert "console_rows" not in r.text and "documents" not in r.text
    r = httpx.post(server.url + "/backups/verify", data={"archive": "latest"})
    assert r.status_code == 401
    for probe in ["/livez", "/health", "/readyz", "/metrics"]:
        assert httpx.get(server.url + probe).status_code == 200, probe
    # A forged or expired cookie is no login.
    forged = {f"studioops_console_{server.port}": "abc.9999999999.deadbeef"}
    assert httpx.get(server.url + "/api/console/overview", cookies=forged).status_code == 401
    context = browser.new_context()
    p = context.new_page()
    p.goto(server.url + "/database")
    assert p.url.startswith(server.url + "/login")
    assert "console_rows" not in p.content()
    screenshot(p, "login")
    context.close()


def test_the_login_link_works_once(data_stack, server, browser):
    link = login_link(data_stack, server)
    first = browser.new_context()
    p = first.new_page()
    p.goto(link)
    assert p.url == server.url + "/" and p.locator("h1").inner_text() == "Overview"
    second = browser.new_context()
    q = second.new_page()
    response = q.goto(link)
    assert response.status == 403 and "already used or has expired" in q.content()
    assert httpx.get(server.url + "/api/console/overview", follow_redirects=False).status_code == 401
    first.close()
    second.close()


def test_password_login(server):
    with httpx.Client(base_url=server.url) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
        wrong = client.post("/login", data={"csrf": token, "password": "nope", "next": "/database"})
        assert wrong.status_code == 403 and client.get("/api/console/overview").status_code == 401
        token = re.search(r'name="csrf" value="([^"]+)"', wrong.text)[1]  # each form has its own token
        ok = client.post("/login", data={"csrf": token, "password": PASSWORD, "next": "/database"})
        assert ok.status_code == 303 and ok.headers["location"] == "/database"
        assert client.get("/api/console/overview").status_code == 200
    # The login form itself needs its CSRF cookie: a cross-site form cannot log a browser in.
    r = httpx.post(server.url + "/login", data={"csrf": "x", "password": PASSWORD})
    assert r.status_code == 403


def test_open_redirects_are_refused(data_stack, server):
    link = login_link(data_stack, server)
    r = httpx.get(link + "&next=//evil.example/x")
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_sessions_expire(tmp_path):
    from studioops.console import auth

    s = Settings(_env_file=None, studioops_home=tmp_path, console_session_ttl="2s")
    cookie = auth.new_session(s)
    assert auth.check_session(s, cookie) is not None
    assert auth.check_session(s, cookie, now=time.time() + 3) is None
    assert (tmp_path / "console").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "console" / "secret").stat().st_mode & 0o777 == 0o600
    (tmp_path / "console" / "secret").unlink()  # a new secret: every session is gone
    assert auth.check_session(s, cookie) is None
    token = auth.issue_token(s)
    assert (tmp_path / "console" / "tokens").stat().st_mode & 0o777 == 0o700
    assert auth.redeem_token(s, token) and not auth.redeem_token(s, token)
    # With a password, the key comes from it: another replica (another home) accepts the session.
    a = Settings(_env_file=None, studioops_home=tmp_path / "a", console_password="p" * 20)
    b = Settings(_env_file=None, studioops_home=tmp_path / "b", console_password="p" * 20)
    c = Settings(_env_file=None, studioops_home=tmp_path / "b", console_password="q" * 20)
    shared = auth.new_session(a)
    assert auth.check_session(b, shared) is not None and auth.check_session(c, shared) is None


def test_a_post_without_its_csrf_token_is_refused(page, server, data_stack):
    cookies = cookies_of(page)
    html = httpx.get(server.url + "/backups", cookies=cookies).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]
    with httpx.Client(base_url=server.url, cookies=cookies) as client:
        assert client.post("/backups/verify", data={"archive": "latest"}).status_code == 403
        assert client.post("/backups/verify", data={"archive": "latest", "csrf": "0" * 64}).status_code == 403
        assert client.post("/api/console/storage/upload-url",
                           data={"bucket": "uploads", "key": "pending/x.txt"}).status_code == 403
        signed = client.post("/api/console/storage/upload-url", data={"bucket": "uploads", "key": "pending/x.txt"},
                             headers={"X-CSRF-Token": csrf})
        assert signed.status_code == 200 and "X-Amz-Signature" in signed.json()["url"]
        assert client.post("/logout").status_code == 403  # even logging out


def test_a_bad_session_ttl_is_one_line(tmp_path):
    env = {"PATH": os.environ["PATH"], "STUDIOOPS_HOME": str(tmp_path), "CONSOLE_SESSION_TTL": "forever"}
    result = subprocess.run([sys.executable, "-m", "studioops", "console", "--json"], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("studioops: CONSOLE_SESSION_TTL") and result.stderr.count("\n") == 1


def test_production_requires_a_strong_console_password():
    from studioops.envfile import guard_production
    from studioops.errors import ConfigError

    strong = "x" * 8 + "-Strong-Secret-1234"
    base = dict(_env_file=None, studioops_env="production", database_url=f"postgresql://u:{strong}@db/x",
                minio_secret_key=strong)
    with pytest.raises(ConfigError, match="CONSOLE_PASSWORD"):
        guard_production(Settings(**base), {})
    with pytest.raises(ConfigError, match="CONSOLE_PASSWORD"):
        guard_production(Settings(**base, console_password="short"), {})
    guard_production(Settings(**base, console_password=strong), {})


# -- pages ------------------------------------------------------------------------------------------------------
def test_every_page_renders_with_data_from_the_stack(page, server, data_stack):
    body = page.locator("main")
    assert "postgres" in body.inner_text() and "running" in body.inner_text()
    assert "healthy" in body.inner_text() and "studioops-backup-" in body.inner_text()
    screenshot(page, "overview")

    page.goto(server.url + "/database")
    text = page.locator("main").inner_text()
    assert "001_initial_schema.sql" in text and "console_rows" in text and "console_rows_pkey" in text
    assert "≈ 120" in text  # the estimate after ANALYZE
    screenshot(page, "database")

    page.goto(server.url + "/storage")
    from playwright.sync_api import expect

    expect(page.locator("#buckets")).not_to_contain_text("counting", timeout=15000)  # htmx refreshes the counts
    row = page.locator("tr", has_text="documents").inner_text()
    usage = {u.bucket: u for u in data_stack.storage().usage()}
    assert f"{usage['documents'].objects:,}" in row
    screenshot(page, "storage")

    page.goto(server.url + "/storage/b/documents?prefix=projects/console/")
    assert page.locator("td", has_text="file-3.txt").count() == 1
    screenshot(page, "bucket")

    page.goto(server.url + "/backups")
    text = page.locator("main").inner_text()
    from studioops.backup import list_backups

    archive = list_backups(data_stack.settings).rows[0]
    from studioops.backup.archive import ArchiveReader

    with ArchiveReader(Path(archive["local"])) as reader:  # the archive's own manifest, read here
        rows = sum(t["rows"] for t in reader.manifest["tables"].values())
        objects = len(reader.manifest["objects"])
    assert archive["name"] in text and f"{rows:,} rows, {objects:,} objects" in text
    screenshot(page, "backups")


def test_every_page_reads_without_javascript(browser, data_stack, server):
    context = browser.new_context(java_script_enabled=False)
    p = context.new_page()
    p.goto(login_link(data_stack, server))
    expected = {"/": "running", "/database": "console_rows", "/storage": "documents", "/backups": "studioops-backup-",
                "/database/tables/public/console_rows": "row 1", "/storage/b/documents?prefix=projects/console/":
                "file-0.txt"}
    for path, text in expected.items():
        p.goto(server.url + path)
        assert text in p.locator("main").inner_text(), path
    context.close()


def test_table_browser_pages_by_key_and_exports_csv(page, server):
    page.goto(server.url + "/database/tables/public/console_rows")
    seen = []
    while True:
        ids = [int(t) for t in page.locator("table.data tbody tr td:first-child").all_inner_texts()]
        assert len(ids) <= 50
        seen += ids
        nxt = page.locator("a[rel=next]")
        if nxt.count() == 0:
            break
        nxt.click()
    assert seen == list(range(1, 121))
    screenshot(page, "table")
    r = httpx.get(server.url + "/database/tables/public/console_rows.csv", cookies=cookies_of(page))
    lines = r.text.strip().splitlines()
    assert r.status_code == 200 and lines[0] == "id,label,note" and len(lines) == 121
    assert httpx.get(server.url + "/database/tables/public/no_such_table", cookies=cookies_of(page)).status_code == 404


def test_markup_in_a_table_value_shows_as_text_and_does_not_run(page, server):
    page.goto(server.url + "/database/tables/public/console_rows")
    cell = page.locator("table.data tbody tr", has_text="row 7").locator("td").nth(2)
    assert cell.inner_text() == XSS
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    raw = httpx.get(server.url + "/database/tables/public/console_rows", cookies=cookies_of(page)).text
    assert "<script>window.__pwned" not in raw and "&lt;script&gt;window.__pwned" in raw


def test_upload_and_download_through_the_storage_page(page, server, data_stack, tmp_path):
    payload = os.urandom(300_000)
    source = tmp_path / "drawing.bin"
    source.write_bytes(payload)
    page.goto(server.url + "/storage/b/uploads?prefix=pending/")
    page.set_input_files("#upload input[type=file]", str(source))
    with page.expect_navigation():  # the page reloads when the upload is done
        page.click("#upload button[type=submit]")
    assert data_stack.storage().get_bytes("uploads", "pending/drawing.bin") == payload
    row = page.locator("tr", has_text="drawing.bin")
    with page.expect_download() as info:
        row.locator("a", has_text="Download").click()
    download = info.value
    assert download.suggested_filename == "drawing.bin"
    assert Path(download.path()).read_bytes() == payload
    screenshot(page, "upload")


def test_verify_now_runs_verify_and_shows_its_progress(page, server, data_stack):
    from studioops.backup import list_backups

    page.goto(server.url + "/backups")
    page.locator("button", has_text="Verify now").first.click()
    page.wait_for_selector("text=tables restored and identical", timeout=60000)
    assert list_backups(data_stack.settings).rows[0]["verified_at"] is not None
    screenshot(page, "backups-verified")
