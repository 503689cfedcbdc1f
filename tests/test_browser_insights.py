"""The Insights pages in Chromium (issue 21): the overview, the capacity forecast and the herds
render their charts over the planted tenant (tests/insights_fixture.py); an author proposes a
stagger from the herds page. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

from approvals.models import ChangeRequest
from tests.console_pages import sign_in
from tests.insights_fixture import plant
from tests.test_browser_review_flow import ARTIFACTS
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser


def test_the_insights_pages_render_and_an_author_proposes_a_stagger(browser, live_server, tcast):
    planted = plant(tcast)
    ARTIFACTS.mkdir(exist_ok=True)
    page = sign_in(browser, live_server, tcast.author.username)
    page.click("nav.mainnav >> text=Insights")
    page.wait_for_selector("[data-testid=insights-pages]")
    assert page.locator("nav.tabs a", has_text="Capacity forecast").count() == 1
    page.screenshot(path=str(ARTIFACTS / "insights-index.png"), full_page=True)

    page.goto(f"{live_server.url}/insights/capacity/?horizon=90&pool=batch&environment=prod")
    chart = page.locator("[data-testid=capacity-chart] svg")
    chart.wait_for()
    assert chart.get_attribute("role") == "img"
    assert page.locator("[data-testid=overflows] tbody tr[data-pool=batch]").count() >= 2
    assert page.locator("[data-testid=capacity-chart] .band-label", has_text="ME").count() >= 2
    page.screenshot(path=str(ARTIFACTS / "insights-capacity.png"), full_page=True)

    page.goto(f"{live_server.url}/insights/capacity/?horizon=400")
    assert "between 1 and 366; got '400'" in page.locator("#f-horizon-error").inner_text()

    page.goto(f"{live_server.url}/insights/herds/")
    page.wait_for_selector("[data-testid=herd-heatmap] svg")
    spots = page.locator("[data-testid=hotspots] h3").all_inner_texts()
    assert len(spots) == 1 and spots[0].startswith("02:00 UTC: 120"), spots
    page.screenshot(path=str(ARTIFACTS / "insights-herds.png"), full_page=True)
    chosen = planted["herd"][:2]
    for job in chosen:
        page.check(f"input[name=job][value='{job.pk}']")
    page.fill("#f-justification", "Spread the 02:00 herd.")
    page.click("text=Propose stagger")
    page.wait_for_selector(".flash-success")
    assert "2 change requests opened for review" in page.locator(".flash-success").inner_text()
    assert ChangeRequest.objects.filter(job__in=chosen, proposed__cron="H 2 * * *").count() == 2
    page.screenshot(path=str(ARTIFACTS / "insights-herds-proposed.png"), full_page=True)
    page.context.close()
