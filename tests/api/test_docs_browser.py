"""The interactive docs page in a real browser, under the site's Content-Security-Policy."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium, never a downloaded browser; as root it needs --no-sandbox."""
    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
        "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    }


def test_the_docs_page_lists_the_operations_and_breaks_no_policy(page: Page, live_server):
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    assert page.locator(".opblock").count() >= 60
    expect(page.get_by_text("Portico API").first).to_be_visible()
    # The Authorize dialog offers the bearer token scheme.
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_text("tokenAuth").first).to_be_visible()
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
