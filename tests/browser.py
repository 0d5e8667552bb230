"""Headless Chromium for the console's tests: Debian's /usr/bin/chromium driven
by Playwright (its own browser download cannot work offline), every console
message and page error of a page collected, screenshots kept as artifacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

# as benchmarks/console.py starts them (tests do not import benchmarks/): as root,
# offline, no GPU
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

ARTIFACTS = Path(os.environ.get("FRAMECHAIN_TEST_ARTIFACTS", REPO / "test-artifacts"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed; run tests/install-system-deps.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose console errors, warnings and uncaught exceptions are kept:
    a console page must finish with none."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text}")

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def new_page(browser: Any, viewport: dict[str, int] = DESKTOP) -> Watched:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return Watched(page)


def keep_screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot under test-artifacts/console/ (or
    $FRAMECHAIN_TEST_ARTIFACTS), kept after the run."""
    path = ARTIFACTS / "console" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
