"""Headless Chromium for the report's browser tests (Debian's chromium, driven by Playwright).

Playwright's own browser download is not used: the tests point it at the system
``chromium``. Without chromium or playwright the tests skip, unless
``GRAPHTAG_REQUIRE_BROWSER`` is set (``.ci/run`` sets it), where they fail instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_ENV = "GRAPHTAG_REQUIRE_BROWSER"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("GRAPHTAG_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def browser_or_skip():
    """(playwright context manager, chromium path); skips (or fails under CI) without them."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
        sync_playwright = None
    executable = chromium_path()
    if missing is None and executable is None:
        missing = "chromium is not installed (apt-get install chromium)"
    if missing is not None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{missing}, and {REQUIRE_ENV} requires the browser tests to run")
        pytest.skip(missing)
    return sync_playwright, executable


def launch(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


@dataclasses.dataclass
class Watched:
    """A page with every console error, page error and non-file request recorded."""

    page: object
    errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[str] = dataclasses.field(default_factory=list)

    def assert_quiet(self) -> None:
        assert self.errors == [], self.errors
        assert self.requests == [], self.requests


def open_report(browser, path: Path, *, timeout_ms: float = 60_000) -> Watched:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    watched = Watched(page)
    page.on(
        "console",
        lambda m: (
            watched.errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: watched.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: watched.errors.append(f"request failed: {r.url}"))
    target = Path(path).resolve().as_uri()
    page.on("request", lambda r: None if r.url == target else watched.requests.append(r.url))
    page.goto(target)
    page.wait_for_selector('body[data-ready="1"]', timeout=timeout_ms)
    page.wait_for_selector("#chart .main-svg", timeout=timeout_ms)
    return watched
