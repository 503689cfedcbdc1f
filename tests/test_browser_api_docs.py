"""/api/docs/ works without the internet: Swagger UI comes from drf-spectacular-sidecar's static
files under the page's strict script policy, and renders the operations."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.console_pages import sign_in
from tests.test_browser_review_flow import ARTIFACTS
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser


def test_swagger_ui_renders_the_operations_with_every_other_host_blocked(browser, live_server, tcast):
    page = sign_in(browser, live_server, tcast.viewer.username)
    elsewhere: list[str] = []
    refused: list[str] = []

    def only_this_host(route):
        if urlsplit(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_host)
    page.on("console", lambda message: "Content Security Policy" in message.text and refused.append(message.text))
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock-tag-section", timeout=20_000)
    tags = page.locator(".opblock-tag").all_inner_texts()
    assert any(tag.strip().startswith("jobs") for tag in tags), tags
    assert page.locator(".opblock-summary-path", has_text="/api/v1/change-requests/").count() > 0
    # Expanding an operation works too (the bundle is live, not a static shell).
    page.locator(".opblock-summary", has_text="/api/v1/jobs/").first.click()
    page.wait_for_selector(".opblock-body")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs-offline.png"))
    assert elsewhere == []
    assert refused == []
    page.context.close()
