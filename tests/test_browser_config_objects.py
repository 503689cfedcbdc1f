"""A prod maintenance window proposed in the browser goes live only after two other people approve it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from approvals.models import ChangeRequest, ChangeStatus
from jobs.models import MaintenanceWindow
from tests.test_browser_review_flow import ARTIFACTS, signed_in
from tests.test_browser_review_flow import browser as browser  # noqa: PLC0414 (the shared Chromium fixture)

pytestmark = pytest.mark.browser


def test_a_prod_window_proposed_in_the_form_goes_live_after_two_approvals(browser, live_server, tcast):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)

    admin = signed_in(browser, live_server, cast.admin.username)
    admin.click("text=Windows")
    admin.click("[data-testid=propose-window]")
    admin.select_option("#id_place", f"e{cast.prod.pk}")
    admin.fill("#id_name", "san migration")
    admin.fill("#id_starts_at", "2026-06-01T22:00")
    admin.fill("#id_ends_at", "2026-06-02T04:00")
    admin.select_option("#id_policy", "skip")
    admin.fill("#id_justification", "Storage array replacement; jobs must not start meanwhile.")
    admin.fill("#id_ticket", "OPS-4711")
    admin.click("[data-testid=submit-proposal]")
    admin.wait_for_selector("[data-testid=change-status]")
    change = ChangeRequest.objects.get()
    assert admin.url.endswith(f"/changes/{change.pk}/")
    assert admin.inner_text("[data-testid=change-status]") == "Submitted"
    assert admin.locator("[data-testid=approve]").count() == 0
    assert not MaintenanceWindow.objects.exists()

    approver = signed_in(browser, live_server, cast.approver.username)
    approver.goto(f"{live_server.url}/changes/?tab=review")
    approver.click(f"text=CR-{change.pk}")
    assert "Create maintenance window" in approver.content()
    approver.click("[data-testid=approve]")
    approver.wait_for_selector("text=You approved")
    assert "1 of 2" in approver.inner_text("[data-testid=approval-count]")

    approver2 = signed_in(browser, live_server, cast.approver2.username)
    approver2.goto(f"{live_server.url}/changes/{change.pk}/")
    approver2.wait_for_selector("[data-testid=approve]")
    approver2.screenshot(path=str(ARTIFACTS / "window-review-page.png"), full_page=True)
    approver2.click("[data-testid=approve]")
    approver2.wait_for_selector("text=it is now live")
    assert approver2.inner_text("[data-testid=change-status]") == "Applied"

    approver2.click("text=windows, calendars and pools")
    approver2.wait_for_selector("[data-testid=window-row]")
    row = approver2.inner_text("[data-testid=window-row]")
    assert "san migration" in row and f"CR-{change.pk}" in row
    window = MaintenanceWindow.objects.get()
    assert window.starts_at == datetime(2026, 6, 1, 22, 0, tzinfo=UTC) and window.policy == "skip"
    change.refresh_from_db()
    assert change.status == ChangeStatus.APPLIED and window.change_request_id == change.pk
    for page in (admin, approver, approver2):
        page.context.close()
