"""The Insights review pages in a real Chromium: right-sizing, zombie jobs and overhead render their
charts over a month of history, pass axe-core, fit a phone, and "propose" leads to the draft change
request. Screenshots go to test-artifacts/insights-*.png."""

from __future__ import annotations

import json

import pytest

from approvals.models import ChangeRequest
from tests.console_pages import sign_in
from tests.insights_review_world import build
from tests.test_browser_accessibility import serious_violations
from tests.test_browser_responsive import WIDTHS
from tests.test_browser_review_flow import ARTIFACTS
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser

PAGES = [
    ("rightsizing", "/insights/rightsizing/"),
    ("zombies", "/insights/zombies/"),
    ("overhead", "/insights/overhead/"),
]


def test_the_review_pages_render_their_charts_pass_axe_and_fit_a_phone(browser, live_server, tcast):
    world = build(tcast, healthy=24)
    ARTIFACTS.mkdir(exist_ok=True)
    page = sign_in(browser, live_server, tcast.author.username)
    problems = {}
    for name, path in PAGES:
        page.goto(f"{live_server.url}{path}")
        charts = page.locator("figure.ichart svg[role=img]")
        assert charts.count() >= 1, name
        assert charts.first.is_visible()
        # Every chart is named for assistive technology by its own title and description.
        for index in range(charts.count()):
            labelled = charts.nth(index).get_attribute("aria-labelledby").split()
            for ident in labelled:
                assert page.locator(f"[id='{ident}']").count() == 1, (name, ident)
        page.screenshot(path=str(ARTIFACTS / f"insights-{name}.png"), full_page=True)
        violations = serious_violations(page)
        if violations:
            problems[name] = violations
    assert not problems, json.dumps(problems, indent=1)

    # The zombies: each planted one is listed with its action.
    page.goto(f"{live_server.url}/insights/zombies/")
    never = page.locator("tr[data-job='payments.plant.never']")
    assert never.get_by_role("link", name="Propose deletion payments.plant.never").is_visible()

    # Propose the right size of the oversized job: a draft change request, shown with its diff.
    page.goto(f"{live_server.url}/insights/rightsizing/")
    row = page.locator("tr[data-job='payments.plant.oversized']")
    assert "4096 → 512 MB" in row.inner_text()
    row.get_by_role("button", name="Propose the new limits for payments.plant.oversized").click()
    page.wait_for_url("**/changes/*/")
    change = ChangeRequest.objects.get(job=world.job("payments.plant.oversized"))
    assert change.status == "draft" and change.proposed["limits"]["memory_mb"] == 512
    assert "Draft change request" in page.inner_text(".messages")
    page.screenshot(path=str(ARTIFACTS / "insights-rightsizing-proposed.png"), full_page=True)
    page.context.close()

    phone = sign_in(browser, live_server, tcast.viewer.username, width=390, height=844)
    too_wide = {}
    for name, path in PAGES:
        phone.goto(f"{live_server.url}{path}")
        widths = phone.evaluate(WIDTHS)
        if widths["document"] > widths["viewport"] or widths["sideways"]:
            too_wide[name] = widths
        phone.screenshot(path=str(ARTIFACTS / f"insights-390-{name}.png"), full_page=True)
    phone.context.close()
    assert not too_wide, too_wide
