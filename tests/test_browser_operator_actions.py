"""Operator actions in a real Chromium: a reason is required before anything is sent, and a job
whose policy puts pausing under change control offers the pause proposal (here an emergency one)."""

from __future__ import annotations

import pytest

from approvals.models import ChangeRequest, ChangeStatus, PostReview
from approvals.services import approve_change, propose_policy_change
from jobs.models import JobStatus, Run
from tests.test_browser_review_flow import ARTIFACTS, browser, signed_in  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser


def test_operator_gives_reasons_and_proposes_an_emergency_pause_when_the_policy_requires_it(
    browser,  # noqa: F811
    live_server,
    tcast,
):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)
    job = cast.make_job(cast.prod)
    page = signed_in(browser, live_server, cast.operator.username)
    page.goto(f"{live_server.url}/jobs/{job.pk}/")

    # An empty reason never leaves the browser: the field is required.
    page.click("[data-testid=trigger]")
    assert page.url.endswith(f"/jobs/{job.pk}/") and not Run.objects.exists()
    page.fill("#id_trigger_reason", "re-run after fixing the input, INC-42")
    page.click("[data-testid=trigger]")
    page.wait_for_selector("text=queued")
    assert Run.objects.get().reason == "re-run after fixing the input, INC-42"

    change = propose_policy_change(
        actor=cast.admin,
        environment=cast.prod,
        rule={"criticality": "", "required_approvals": 2, "pause_requires_change": True},
        justification="settlement jobs must not stop unnoticed",
    )
    approve_change(change, actor=cast.approver)
    assert approve_change(change, actor=cast.approver2).status == ChangeStatus.APPLIED

    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert page.locator("text=Pause this job…").count() == 0
    page.click("text=Propose pausing this job…")
    page.fill("#id_pause_justification", "The job is corrupting the ledger, INC-43")
    page.check("input[name=emergency]")
    page.screenshot(path=str(ARTIFACTS / "job-pause-proposal.png"), full_page=True)
    page.click("text=Propose pause")
    page.wait_for_selector("[data-testid=change-status]")
    assert page.inner_text("[data-testid=change-status]") == "Applied"
    pause = ChangeRequest.objects.get(action="pause")
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    assert PostReview.objects.get(change_request=pause).is_open
