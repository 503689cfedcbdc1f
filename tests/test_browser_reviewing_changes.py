"""Reviewing changes in a real Chromium (issue 17): reject with a reason, revise and resubmit, and a
propose form that previews the next runs and says "non-standard" as soon as the cron does."""

from __future__ import annotations

import pytest

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import propose_change
from governance.models import AuditAction, AuditEvent
from tests.test_browser_review_flow import ARTIFACTS, browser, signed_in  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


def test_a_reviewer_rejects_with_a_reason_and_the_author_revises_and_resubmits(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    change = propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.prod,
        definition=cast.definition(timeout_seconds=60, criticality="critical", rationale="Vendor job, no pings."),
        justification="Reconcile the ledger every five minutes.",
        ticket="FIN-7",
    )
    url = f"{live_server.url}/changes/{change.pk}/"

    approver = signed_in(browser, live_server, cast.approver.username)
    approver.goto(url)
    approver.screenshot(path=str(ARTIFACTS / "change-review-desktop.png"), full_page=True)
    # Reject opens a confirmation step; confirming without a reason records nothing.
    assert not approver.is_visible("[data-testid=confirm-reject]")
    approver.click("[data-testid=reject]")
    approver.wait_for_selector("[data-testid=confirm-reject]", state="visible")
    approver.click("[data-testid=confirm-reject]")
    approver.wait_for_selector("#reject_reason_error")
    assert "its author reads the reason" in approver.inner_text("#reject_reason_error")
    assert approver.inner_text("[data-testid=change-status]") == "Submitted"
    assert not Review.objects.exists()
    approver.fill("#reject_reason", "A 60 s timeout is too short at month end; make it 15 minutes.")
    approver.click("[data-testid=confirm-reject]")
    approver.wait_for_selector("text=You rejected")
    assert approver.inner_text("[data-testid=change-status]") == "Rejected"

    author = signed_in(browser, live_server, cast.author.username)
    author.goto(f"{live_server.url}/")
    decided = author.inner_text("[data-testid=recently-decided]")
    assert f"CR-{change.pk}" in decided and "too short at month end" in decided
    author.goto(url)
    assert "make it 15 minutes" in author.inner_text("[data-testid=rejection-reason]")
    assert "Rejected" in author.inner_text(".reviews")
    author.set_viewport_size({"width": 390, "height": 844})
    author.screenshot(path=str(ARTIFACTS / "change-review-rejected-390.png"), full_page=True)
    author.set_viewport_size({"width": 1360, "height": 900})
    author.click("[data-testid=resubmit]")
    author.wait_for_selector("text=Revise and resubmit CR-")
    author.fill("#id_timeout_seconds", "900")
    author.fill("#id_justification", "Timeout raised to 15 minutes, as asked.")
    assert author.inner_text("[data-testid=submit-proposal]") == "Resubmit as revision 2"
    author.click("[data-testid=submit-proposal]")
    author.wait_for_selector("[data-testid=change-status]")
    assert author.inner_text("[data-testid=change-status]") == "Submitted"
    assert "revision 2" in author.inner_text(".page-head")

    change = ChangeRequest.objects.get()
    assert (change.status, change.revision, change.proposed["timeout_seconds"]) == (ChangeStatus.SUBMITTED, 2, 900)
    assert AuditEvent.objects.filter(action=AuditAction.CHANGE_RESUBMITTED, object_id=str(change.pk)).count() == 1

    # The reviewer decides again from scratch; the rejection stays in the history.
    approver.goto(url)
    approver.wait_for_selector("[data-testid=approve]")
    assert "0 of 2" in approver.inner_text("[data-testid=approval-count]")
    assert "on revision 1 (reset by the resubmission)" in approver.inner_text(".reviews")
    approver.screenshot(path=str(ARTIFACTS / "change-review-resubmitted.png"), full_page=True)
    approver.set_viewport_size({"width": 390, "height": 844})
    approver.screenshot(path=str(ARTIFACTS / "change-review-390.png"), full_page=True)


def test_the_propose_form_previews_next_runs_and_says_non_standard_as_the_cron_is_typed(browser, live_server, tcast):  # noqa: F811
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    author = signed_in(browser, live_server, cast.author.username)
    author.goto(f"{live_server.url}/changes/new/")
    author.select_option("#id_team", str(cast.payments.pk))
    # The team's prefix is shown beside the team and starts the name.
    assert "payments." in author.inner_text("[data-testid=name-prefix]")
    assert author.input_value("#id_name") == "payments."
    author.select_option("#id_environment", str(cast.dev.pk))
    assert author.inner_text("[data-testid=submit-proposal]") == "Create"
    author.select_option("#id_environment", str(cast.prod.pk))
    assert author.inner_text("[data-testid=submit-proposal]") == "Submit for review"

    author.fill("#id_timezone", "Europe/Berlin")
    author.fill("#id_cron", "* * * * *")
    author.wait_for_selector("[data-testid=cron-preview] ol.runs li:nth-child(5)")
    runs = author.locator("[data-testid=cron-preview] ol.runs li").all_inner_texts()
    assert len(runs) == 5 and all(r.endswith(("CET", "CEST")) or "Z" in r for r in runs)
    assert runs[0][:4].isdigit() and "Z" in runs[0]
    author.wait_for_selector("[data-testid=nonstandard-hint]", state="visible")
    hint = author.inner_text("[data-testid=nonstandard-hint]")
    assert "Non-standard: rationale needed" in hint and "more often than every 5 minutes" in hint
    author.screenshot(path=str(ARTIFACTS / "propose-form-nonstandard.png"), full_page=True)

    # A daily schedule is standard: the hint goes away, the preview follows.
    author.fill("#id_cron", "30 4 * * *")
    author.wait_for_selector("[data-testid=nonstandard-hint]", state="hidden")
    author.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=cron-preview] ol.runs li')].every(li => li.textContent.includes('04:30 CE'))"
    )
    # A broken cron says why in the preview.
    author.fill("#id_cron", "61 * * * *")
    author.wait_for_selector("[data-testid=cron-preview] .field-error")

    # Submitting with errors: a summary whose links lead to the fields.
    author.fill("#id_cron", "* * * * *")
    author.click("[data-testid=submit-proposal]")
    author.wait_for_selector("[data-testid=error-summary]")
    author.click("[data-testid=error-summary] a[href='#id_command']")
    assert author.evaluate("document.activeElement.id") == "id_command" or author.url.endswith("#id_command")
    assert author.get_attribute("#id_command", "aria-invalid") == "true"
    author.set_viewport_size({"width": 390, "height": 844})
    author.screenshot(path=str(ARTIFACTS / "propose-form-errors-390.png"), full_page=True)
    assert not ChangeRequest.objects.exists()
