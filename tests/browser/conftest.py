"""Real headless Chromium (Debian ``chromium``) driven by Playwright, against a bridge on the
simulator. Outside CI the tests skip with how to install what is missing; in CI they fail."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningSim, simulator  # noqa: F401 - the fixture, reused


ARTIFACTS = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS", "test-artifacts")) / "browser"
INSTALL_HINT = "apt install chromium (Debian) and `make venv` (pip installs playwright)"
BROWSER_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(BROWSER_DIR):
            item.add_marker(pytest.mark.browser)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> None:
    problem = None
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        problem = "the playwright Python package is missing"
    if chromium_path() is None:
        problem = "no chromium executable on PATH"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium required in CI but unavailable: {problem}")
    pytest.skip(f"{problem}: {INSTALL_HINT}")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_browser()
    from playwright.async_api import async_playwright  # noqa: PLC0415

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=chromium_path(),
            args=[
                # root in a container: Chromium's sandbox needs user namespaces
                "--no-sandbox",
                "--disable-dev-shm-usage",
                # Playwright's WebSocket routing (the tests' cut switch) trips Chromium's
                # local-network checks on loopback; real pages never go through it.
                "--disable-features=LocalNetworkAccessChecks",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def unexpected(kind: str, text: str) -> list[str]:
    """Console errors that are bugs (a refused reconnect attempt is expected behaviour)."""
    if kind != "error" or "WebSocket connection to" in text:
        return []
    return [text]


@pytest.fixture
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh page; JavaScript errors fail the test; a screenshot is kept as an artifact."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.extend(unexpected(message.type, message.text)))
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        if not page.is_closed():
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
