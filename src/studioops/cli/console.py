"""`studioops console`: print a one-time login link to the console, and open it when a browser is at hand."""

from __future__ import annotations

import os
import sys

import typer

from studioops.cli.output import emit_json, say, settings


def register(app: typer.Typer) -> None:
    app.command("console")(console)


def _can_open_browser() -> bool:
    """Only for a person at a desktop: a terminal, a display, and not CI."""
    if os.environ.get("CI") or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin")


def console(
    as_json: bool = typer.Option(False, "--json", help="Print the link as JSON."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the link."),
) -> None:
    """Print the console's login link (one-time, valid 10 minutes) and open it in a browser if there is one."""
    import httpx

    from studioops.console.auth import TOKEN_TTL, console_url, login_link

    s = settings()
    base = console_url(s)
    link = login_link(s)
    try:
        reachable = httpx.get(base + "/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        reachable = False
    if as_json:
        emit_json({"url": link, "console": base, "expires_in": int(TOKEN_TTL), "reachable": reachable})
        return
    say(f"console: {link}")
    say(f"(the link logs in once, within {int(TOKEN_TTL // 60)} minutes)", stderr=True)
    if not reachable:
        say(f"note: nothing answers at {base} yet; start the stack with `studioops up`", stderr=True)
    if not no_browser and _can_open_browser():
        import webbrowser

        webbrowser.open(link)
