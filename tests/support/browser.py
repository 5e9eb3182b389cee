"""Chromium for the browser tests: Debian's package driven by Playwright, nothing downloaded.

`make test` installs the `chromium` package when it is missing; tests skip (naming the package) only when it
could not be installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium retries blocked connections (updates, sync) at every start.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("STUDIOOPS_TEST_ARTIFACTS", Path(__file__).parent.parent.parent / ".artifacts"))


def launch(playwright):
    if not CHROMIUM.exists():
        pytest.skip("the Debian package `chromium` is not installed (as root: apt-get install -y chromium; "
                    "`make test` does it)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (gitignored), for people to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
