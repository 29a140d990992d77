"""A real browser in the tests: headless Chromium driven by Playwright (a dev dependency).

Playwright's own browser download is not used: the system's Chromium is (Debian's `chromium`,
which `make ops-deps` installs), found as `CHROMIUM_PATH`, else `chromium`, `chromium-browser` or
Google Chrome (the GitHub runner image's) on PATH. A missing browser is an error that names the
fix, never a skipped test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIX = (
    "install Chromium: `make ops-deps` (Debian/Ubuntu: apt-get install chromium) "
    "or set CHROMIUM_PATH"
)


def chromium_path() -> str:
    """The Chromium executable: `CHROMIUM_PATH`, else the first of NAMES on PATH."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            pytest.fail(
                f"CHROMIUM_PATH={configured} is not an executable file: {FIX}", pytrace=False
            )
        return configured
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no Chromium on PATH ({', '.join(NAMES)}): {FIX}", pytrace=False)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (a launch costs about a second)."""
    with sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root (CI containers), where Chromium's sandbox
        # refuses to start; the pages are the service's own.
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(chromium: Browser) -> Iterator[BrowserContext]:
    """A fresh profile for each test: no cookie of an earlier test."""
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()
