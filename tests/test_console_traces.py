"""The console's trace pages in a real browser (Debian's Chromium driven by Playwright) against a real stack:
traces sent through the real Langfuse SDK to the `studioops api` that serves the console."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from studioops import stack
from studioops.stack.process import wait_until
from tests.conftest import Stack, make_stack
from tests.support.browser import screenshot
from tests.test_console import XSS, ConsoleServer, login_link

RUN = uuid.uuid4().hex[:8]
MANY = 25  # traces tagged "bulk-<RUN>": enough for three pages of ten


@pytest.fixture(scope="module")
def trace_stack(tmp_path_factory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("console-traces"))
    stack.up(s.settings, timeout=60)
    yield s
    stack.down(s.settings)


@pytest.fixture(scope="module")
def server(trace_stack) -> Iterator[ConsoleServer]:
    srv = ConsoleServer(trace_stack)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sent(trace_stack, server) -> dict:
    """Traces sent through the Langfuse SDK: one with a tree (and markup in its input), MANY small ones."""
    from langfuse import Langfuse, propagate_attributes
    from opentelemetry.sdk.trace import TracerProvider

    from studioops.observability.keys import development_keys

    public, secret = development_keys(trace_stack.settings, create=True)
    client = Langfuse(public_key=public, secret_key=secret, host=server.url, tracer_provider=TracerProvider(),
                      flush_interval=0.2)
    with client.start_as_current_observation(name="handle-request", input={"question": XSS, "lang": "en"}) as root:
        with (propagate_attributes(user_id=f"user-{RUN}", session_id=f"session-{RUN}", tags=["tree", RUN],
                                   trace_name=f"chat-{RUN}"),
              client.start_as_current_observation(name="retrieve", as_type="span") as retrieve):
            retrieve.update(output={"documents": 3})
            with client.start_as_current_observation(
                    name="answer", as_type="generation", model="gpt-4o-mini",
                    usage_details={"input": 1200, "output": 300}, input=[{"role": "user", "content": "budget?"}],
            ) as generation:
                generation.update(output="96,950 USD")
        with client.start_as_current_observation(name="check", as_type="generation", model="gpt-4o",
                                                 usage_details={"input": 10, "output": 1}) as check:
            check.update(level="ERROR", status_message="the checker timed out")
        root.update(output={"answer": "96,950 USD", "marker": f"zebra{RUN}"})
        tree_id = root.trace_id
    bulk = []
    for i in range(MANY):
        with (propagate_attributes(user_id=f"bulk-user-{i % 3}-{RUN}", session_id=f"bulk-session-{i % 5}-{RUN}",
                                   tags=[f"bulk-{RUN}"], trace_name=f"bulk-{i}"),
              client.start_as_current_observation(name=f"bulk-{i}", input=f"question {i}") as span):
            # Tokens and cost grow with i but in another order than start time: sorting must differ from it.
            n = (i * 7) % MANY + 1
            with client.start_as_current_observation(name="call", as_type="generation", model="gpt-4o-mini",
                                                     usage_details={"input": 100 * n, "output": n}):
                pass
            bulk.append(span.trace_id)
    client.flush()
    client.shutdown()

    def stored() -> bool:
        with psycopg.connect(trace_stack.url) as conn:
            return conn.execute("SELECT count(*) FROM traces WHERE id = ANY(%s) AND obs_count > 0",
                                ([tree_id, *bulk],)).fetchone()[0] == MANY + 1
    assert wait_until(stored, 20, 0.2)
    return {"tree": tree_id, "bulk": bulk}


@pytest.fixture
def page(browser, trace_stack, server, sent):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1360, "height": 900})
    p = context.new_page()
    p.goto(login_link(trace_stack, server))
    yield p
    context.close()


def wait_for_url(page, test, seconds: float = 10) -> None:
    """Until the address satisfies `test`: htmx pushes it without a navigation for Playwright to wait on."""
    assert wait_until(lambda: test(page.url), seconds, 0.05), page.url


def cookies_of(page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def listed(page) -> list[str]:
    """Trace ids of the list's rows, in order."""
    hrefs = page.locator("table.traces tbody tr td:first-child a").evaluate_all("as => as.map(a => a.pathname)")
    return [h.rsplit("/", 1)[1] for h in hrefs]


def test_no_trace_page_answers_without_a_login(server, sent):
    for path in ["/traces", f"/traces/{sent['tree']}", "/sessions", "/users", "/usage"]:
        r = httpx.get(server.url + path, headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    for path in ["/traces.csv", "/traces.json", f"/traces/{sent['tree']}.json"]:
        r = httpx.get(server.url + path)
        assert r.status_code == 401 and sent["tree"] not in r.text, path


def test_traces_sent_with_the_sdk_appear_and_filters_work(page, server, sent):
    page.goto(server.url + "/traces")
    assert sent["tree"] in listed(page)
    screenshot(page, "traces")
    # Filtering through the form (htmx swaps the results in and pushes the URL).
    page.fill("input[name=user]", f"user-{RUN}")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**user=user-*")
    assert listed(page) == [sent["tree"]]
    cases = {
        f"tags=bulk-{RUN}": set(sent["bulk"][:]),
        f"tags=bulk-{RUN}&user=bulk-user-1-{RUN}": {t for i, t in enumerate(sent["bulk"]) if i % 3 == 1},
        f"session=bulk-session-2-{RUN}": {t for i, t in enumerate(sent["bulk"]) if i % 5 == 2},
        f"name=chat-{RUN}": {sent["tree"]},
        "model=gpt-4o": {sent["tree"]},
        "level=ERROR": {sent["tree"]},
        f"q=zebra{RUN}": {sent["tree"]},  # a word in the trace's output
        "q=budget%3F&range=1h": set(),  # only in an observation's input, not the trace's
        f"tags=bulk-{RUN}&range=24h": set(sent["bulk"]),
        f"tags=bulk-{RUN}&to=2000-01-01": set(),
    }
    for qs, expected in cases.items():
        page.goto(server.url + f"/traces?{qs}&limit=200")
        assert set(listed(page)) == expected, qs
    page.goto(server.url + f"/traces?tags=bulk-{RUN}&level=ERROR")
    assert "No traces match these filters." in page.locator("main").inner_text()
    r = httpx.get(server.url + "/traces?range=forever", cookies=cookies_of(page), headers={"Accept": "text/html"})
    assert r.status_code == 400 and "range must be one of" in r.text


def expected_order(trace_stack, ids: list[str], sort: str, order: str) -> list[str]:
    column = {"start": "timestamp", "latency": "obs_latency_ms", "tokens": "obs_tokens", "cost": "obs_cost"}[sort]
    with psycopg.connect(trace_stack.url) as conn:
        rows = conn.execute(f"SELECT id FROM traces WHERE id = ANY(%s) ORDER BY {column} {order}, id {order}",
                            (ids,)).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("sort", ["start", "latency", "tokens", "cost"])
def test_pages_follow_each_sort_order_without_gaps_or_repeats(page, server, sent, trace_stack, sort):
    for order in ("desc", "asc"):
        page.goto(server.url + f"/traces?tags=bulk-{RUN}&limit=10&sort={sort}&order={order}")
        seen, pages = [], 0
        while True:
            seen += listed(page)
            pages += 1
            nxt = page.locator("a[rel=next]")
            if nxt.count() == 0:
                break
            before = listed(page)
            nxt.click()  # htmx swaps the rows in
            assert wait_until(lambda before=before: listed(page) != before, 10, 0.05)
        assert pages == 3
        assert seen == expected_order(trace_stack, sent["bulk"], sort, order), (sort, order)
    # The column header sorts: the first click descending, the second ascending.
    page.goto(server.url + f"/traces?tags=bulk-{RUN}&limit=10" + ("&sort=tokens" if sort == "start" else ""))
    page.locator("table.traces thead a", has_text=sort).click()
    page.wait_for_selector(f"th a[aria-sort=descending]:has-text('{sort}')")
    assert listed(page) == expected_order(trace_stack, sent["bulk"], sort, "desc")[:10]
    page.locator("table.traces thead a", has_text=sort).click()
    page.wait_for_selector(f"th a[aria-sort=ascending]:has-text('{sort}')")
    assert listed(page) == expected_order(trace_stack, sent["bulk"], sort, "asc")[:10]
    if sort == "tokens":
        screenshot(page, "traces-sorted")
    # A cursor handed out for another order is refused, not misread.
    first = httpx.get(server.url + f"/traces?tags=bulk-{RUN}&limit=10", cookies=cookies_of(page)).text
    cursor = re.search(r"cursor=([A-Za-z0-9_-]+)", first)[1]
    other = "cost" if sort == "start" else sort
    r = httpx.get(server.url + f"/traces?tags=bulk-{RUN}&limit=10&sort={other}&cursor={cursor}",
                  cookies=cookies_of(page), headers={"Accept": "text/html"})
    assert r.status_code == 400 and "not a cursor from this list in this order" in r.text


def test_exports_hold_the_filtered_list(page, server, sent):
    cookies = cookies_of(page)
    r = httpx.get(server.url + f"/traces.csv?tags=bulk-{RUN}&sort=cost&order=asc", cookies=cookies)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["id"] for row in rows} == set(sent["bulk"])
    costs = [float(row["total_cost"]) for row in rows]
    assert costs == sorted(costs) and costs[0] > 0
    r = httpx.get(server.url + f"/traces.json?user=user-{RUN}", cookies=cookies)
    (only,) = json.loads(r.text)["traces"]
    assert only["id"] == sent["tree"] and only["observation_count"] == 4 and only["level"] == "ERROR"
    # The links on the page carry the filters.
    page.goto(server.url + f"/traces?tags=bulk-{RUN}&user=bulk-user-0-{RUN}")
    with page.expect_download() as info:
        page.locator("a", has_text="CSV").click()
    with open(info.value.path()) as f:
        lines = f.read().strip().splitlines()
    assert len(lines) == 1 + len([i for i in range(MANY) if i % 3 == 0])


def test_the_trace_page_shows_the_tree_timeline_and_escaped_input(page, server, sent):
    page.goto(server.url + "/traces")
    page.locator(f"a[href='/traces/{sent['tree']}']").first.click()
    page.wait_for_url(f"**/traces/{sent['tree']}")
    rows = page.locator("table.tree tbody tr")
    names = [n.strip() for n in rows.locator("td.name a").all_inner_texts()]
    assert names == ["handle-request", "retrieve", "answer", "check"]
    depth = [c.split()[-1] for c in rows.locator("td.name").evaluate_all("cs => cs.map(c => c.className)")]
    assert depth == ["d0", "d1", "d2", "d1"]
    assert rows.locator("svg rect.bar").count() == 4
    widths = [float(w) for w in rows.locator("svg rect.bar").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")]
    assert widths[0] == max(widths)  # the root spans the trace
    answer = rows.nth(2).inner_text()
    assert "gpt-4o-mini" in answer and "1,500" in answer and "$" in answer
    # Input pretty-printed (indented JSON), markup shown as text, nothing run.
    first = page.locator("section.io pre.json").first.inner_text()
    assert json.loads(first) == {"question": XSS, "lang": "en"} and '\n  "question"' in first
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    raw = httpx.get(server.url + f"/traces/{sent['tree']}", cookies=cookies_of(page)).text
    assert "<script>window.__pwned" not in raw and "&lt;script&gt;window.__pwned" in raw
    assert "the checker timed out" in page.locator("main").inner_text()
    screenshot(page, "trace")
    assert httpx.get(server.url + "/traces/no-such-trace", cookies=cookies_of(page)).status_code == 404


def test_sessions_users_and_usage_group_the_traces(page, server, sent):
    page.goto(server.url + "/sessions")
    row = page.locator("tr", has_text=f"bulk-session-2-{RUN}")
    assert row.locator("td").nth(1).inner_text() == "5"
    screenshot(page, "sessions")
    row.locator("a").first.click()
    page.wait_for_url("**/traces?session=*")
    assert set(listed(page)) == {t for i, t in enumerate(sent["bulk"]) if i % 5 == 2}

    page.goto(server.url + "/users")
    row = page.locator("tr", has_text=f"bulk-user-0-{RUN}")
    assert row.locator("td").nth(1).inner_text() == str(len(range(0, MANY, 3)))
    screenshot(page, "users")

    page.goto(server.url + "/usage")
    totals = page.locator("section.card", has_text="By model, whole range")
    mini = totals.locator("tr", has_text="gpt-4o-mini").locator("td")
    calls = 1 + MANY
    tokens = 1500 + sum(101 * ((i * 7) % MANY + 1) for i in range(MANY))
    assert mini.nth(1).inner_text() == f"{calls:,}" and mini.nth(2).inner_text() == f"{tokens:,}"
    errors = totals.locator("tr", has_text="gpt-4o").filter(has_not_text="mini").locator("td")
    assert errors.nth(5).inner_text() == "100.0%"
    assert page.locator("figure.chart svg polyline").count() == 6 * 2
    screenshot(page, "usage")


def test_trace_pages_read_without_javascript(browser, trace_stack, server, sent):
    context = browser.new_context(java_script_enabled=False)
    p = context.new_page()
    p.goto(login_link(trace_stack, server))
    expected = {f"/traces?tags=bulk-{RUN}&limit=10&sort=tokens": "bulk-", f"/traces/{sent['tree']}": "retrieve",
                "/sessions": f"bulk-session-0-{RUN}", "/users": f"user-{RUN}", "/usage": "gpt-4o-mini"}
    for path, text in expected.items():
        p.goto(server.url + path)
        assert text in p.locator("main").inner_text(), path
    p.goto(server.url + f"/traces?tags=bulk-{RUN}&limit=10&sort=tokens")
    p.locator("a[rel=next]").click()  # a plain link
    assert "cursor=" in p.url and len(listed(p)) == 10
    context.close()


def test_migration_005_totals_the_stored_traces_and_keeps_them(trace_stack, tmp_path):
    """Traces stored before 005 get their totals and usage rows when it runs; later writes keep them."""
    import shutil

    from studioops.config import PACKAGE_MIGRATIONS_DIR, parse_database_url
    from studioops.db.migrate import Migrator

    name = f"t_{uuid.uuid4().hex[:10]}"
    with trace_stack.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = trace_stack.settings.db.with_database(name)
    db = parse_database_url(url)
    try:
        old = tmp_path / "migrations"
        old.mkdir()
        for path in sorted(PACKAGE_MIGRATIONS_DIR.glob("*.sql")):
            if path.name < "005":
                shutil.copy(path, old / path.name)
        Migrator(db, old).migrate()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO traces (id, timestamp) VALUES ('a', '2026-01-01T10:00:00Z')")
            conn.execute("""INSERT INTO observations (id, trace_id, start_time, end_time, model, input_tokens,
                                output_tokens, total_cost, level) VALUES
                            ('a1', 'a', '2026-01-01T10:00:00Z', '2026-01-01T10:00:02Z', 'm', 10, 5, 0.5, 'ERROR'),
                            ('a2', 'a', '2026-01-01T10:00:01Z', '2026-01-01T10:00:03Z', 'm', 20, 5, 0.25, 'DEFAULT')""")
        shutil.copy(PACKAGE_MIGRATIONS_DIR / "005_console_indexes.sql", old / "005_console_indexes.sql")
        assert Migrator(db, old).migrate() == ["005_console_indexes.sql"]
        with psycopg.connect(url, autocommit=True) as conn:
            def totals():
                return conn.execute("SELECT obs_count, obs_tokens, obs_cost::float, obs_latency_ms FROM traces "
                                    "WHERE id = 'a'").fetchone()

            def usage():
                return conn.execute("SELECT sum(calls), sum(errors), sum(tokens), sum(cost)::float FROM usage_rollup "
                                    "WHERE model = 'm'").fetchone()

            assert totals() == (2, 40, 0.75, 3000.0) and usage() == (2, 1, 40, 0.75)
            conn.execute("UPDATE observations SET output_tokens = 15, level = 'DEFAULT' WHERE id = 'a1'")
            conn.execute("INSERT INTO observations (id, trace_id, start_time, model, input_tokens) "
                         "VALUES ('a3', 'a', '2026-01-01T10:00:04Z', 'm', 1)")
            assert totals() == (3, 51, 0.75, 4000.0) and usage() == (3, 0, 51, 0.75)
            conn.execute("DELETE FROM observations WHERE id = 'a2'")
            assert totals()[:3] == (2, 26, 0.5) and usage() == (2, 0, 26, 0.5)
    finally:
        with trace_stack.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
