"""Rollback, promotion and recertification driven in a real Chromium, as people would use them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ChangeAction, ChangeRequest, ChangeStatus
from approvals.services import approve_change, propose_change
from jobs.models import Job
from tests.test_browser_review_flow import ARTIFACTS, browser, signed_in  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "enum": ["eu", "us"]},
        "batch": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    "required": ["region", "batch"],
}


def test_author_proposes_an_earlier_version_again_and_approval_makes_it_live(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    job = cast.make_job(cast.staging, timeout_seconds=60)
    change = propose_change(
        actor=cast.author, action="update", job=job, definition={"timeout_seconds": 600}, justification="slow bank"
    )
    approve_change(change, actor=cast.approver)

    author = signed_in(browser, live_server, cast.author.username)
    author.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert author.inner_text("[data-testid=live-version]") == "v2 live"
    author.click("[data-testid=rollback-v1]")
    author.wait_for_selector("[data-testid=rollback-diff]")
    diff = author.inner_text("[data-testid=rollback-diff]")
    assert "600" in diff and "60" in diff
    author.click("[data-testid=submit-rollback]")
    # Refused without a justification; nothing proposed.
    author.wait_for_selector(".field-error")
    assert "justification is required" in author.inner_text(".field-error")
    assert not ChangeRequest.objects.filter(status=ChangeStatus.SUBMITTED).exists()
    author.fill("#id_justification", "600 s hides hanging transfers")
    author.click("[data-testid=submit-rollback]")
    author.wait_for_selector("[data-testid=change-status]")
    rollback = ChangeRequest.objects.get(status=ChangeStatus.SUBMITTED)
    assert author.url.endswith(f"/changes/{rollback.pk}/")
    page = author.content()
    assert "Roll back to v1: 600 s hides hanging transfers" in page and "Live (v2)" in page
    assert author.locator("[data-testid=approve]").count() == 0

    approver = signed_in(browser, live_server, cast.approver.username)
    approver.goto(f"{live_server.url}/changes/{rollback.pk}/")
    approver.click("[data-testid=approve]")
    approver.wait_for_selector("text=it is now live")
    approver.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert approver.inner_text("[data-testid=live-version]") == "v3 live"
    job.refresh_from_db()
    assert job.timeout_seconds == 60
    for p in (author, approver):
        p.context.close()


def test_author_promotes_a_job_with_the_target_values_checked_per_field(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    job = cast.make_job(cast.dev, parameters={"schema": SCHEMA, "values": {"dev": {"region": "eu", "batch": 5}}})
    author = signed_in(browser, live_server, cast.author.username)
    author.goto(f"{live_server.url}/jobs/{job.pk}/")
    author.click("[data-testid=promote]")
    author.wait_for_selector("[data-testid=promote-form]")
    author.select_option("#id_param_region", "us")
    author.fill("#id_param_batch", "900")
    author.fill("#id_justification", "tested in dev for a week")
    author.click("[data-testid=submit-promotion]")
    author.wait_for_selector(".has-error")
    error = author.inner_text(".has-error .field-error")
    assert "900" in error and "500" in error
    assert not ChangeRequest.objects.filter(environment=cast.staging).exists()
    author.fill("#id_param_batch", "50")
    author.click("[data-testid=submit-promotion]")
    author.wait_for_selector("[data-testid=change-status]")
    change = ChangeRequest.objects.get(environment=cast.staging)
    assert change.action == ChangeAction.CREATE and change.status == ChangeStatus.SUBMITTED
    assert change.proposed["parameters"]["values"]["staging"] == {"region": "us", "batch": 50}
    assert "Promote from dev v1" in author.content()
    author.context.close()


def test_owner_recertifies_an_overdue_job_from_the_list(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    job = cast.make_job(cast.dev)
    Job.objects.filter(pk=job.pk).update(review_due_on=timezone.now().date() - timedelta(days=4))
    author = signed_in(browser, live_server, cast.author.username)
    author.wait_for_selector("[data-testid=overdue-banner]")
    author.click("nav.mainnav >> text=Reviews due")
    author.wait_for_selector(f"[data-testid='due-{job.name}']")
    row = author.locator(f"[data-testid='due-{job.name}']")
    assert "4 days overdue" in row.inner_text()
    author.screenshot(path=str(ARTIFACTS / "reviews-due-page.png"), full_page=True)
    row.locator("input[name=note]").fill("Owner, runbook and schedule checked with the ledger team.")
    row.locator("[data-testid=recertify]").click()
    author.wait_for_selector("text=recertified; next review due")
    assert author.locator(f"[data-testid='due-{job.name}']").count() == 0
    job.refresh_from_db()
    assert job.review_due_on > timezone.now().date()
    author.context.close()
