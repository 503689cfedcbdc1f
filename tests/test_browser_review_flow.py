"""The four-eyes review flow driven in a real Chromium, as people would use it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from approvals.models import ChangeRequest, ChangeStatus, Review
from conftest import PASSWORD
from jobs.models import Job

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with scripts/system-deps.sh (apt-get install chromium). "
            "Browser tests never download a browser.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls stay synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def signed_in(browser, live_server, username):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page


def test_prod_job_proposed_in_the_form_goes_live_after_two_approvals(browser, live_server, tcast):
    cast = tcast
    ARTIFACTS.mkdir(exist_ok=True)

    author = signed_in(browser, live_server, cast.author.username)
    author.click("text=Changes")
    author.click("text=Propose a new job")
    author.select_option("#id_team", str(cast.payments.pk))
    author.select_option("#id_environment", str(cast.prod.pk))
    author.fill("#id_name", "payments.ledger.close-books")
    author.fill("#id_description", "Close the books at month end.")
    author.select_option("#id_criticality", "critical")
    author.fill("#id_command", "/bin/echo\nclosing books")
    author.fill("#id_cron", "0 3 1 * *")
    author.fill("#id_timezone", "Europe/Berlin")
    author.fill("#id_timeout_seconds", "900")
    author.fill("#id_runbook", "1. Check the ledger export.\n2. Page **#finance-oncall**.")
    author.fill("#id_justification", "Month-end close must run unattended.")
    author.fill("#id_ticket", "FIN-2048")
    author.fill("#id_rationale", "Critical without a heartbeat: the close finishes in minutes.")
    author.click("[data-testid=submit-proposal]")
    author.wait_for_selector("[data-testid=change-status]")
    change = ChangeRequest.objects.get()
    assert author.url.endswith(f"/changes/{change.pk}/")
    assert author.inner_text("[data-testid=change-status]") == "Submitted"
    # The author's own approve button is absent, with the reason shown instead.
    assert author.locator("[data-testid=approve]").count() == 0
    assert "someone else must review" in author.inner_text("[data-testid=review-note]")
    assert not Job.objects.exists()

    approver = signed_in(browser, live_server, cast.approver.username)
    approver.goto(f"{live_server.url}/changes/?tab=review")
    approver.click(f"text=CR-{change.pk}")
    approver.fill("#id_comment", "Schedule and runbook look right.")
    approver.click("[data-testid=approve]")
    approver.wait_for_selector("text=You approved")
    assert "1 of 2" in approver.inner_text("[data-testid=approval-count]")
    assert approver.locator("[data-testid=approve]").count() == 0

    approver2 = signed_in(browser, live_server, cast.approver2.username)
    approver2.goto(f"{live_server.url}/changes/{change.pk}/")
    approver2.wait_for_selector("[data-testid=approve]")
    approver2.screenshot(path=str(ARTIFACTS / "review-page.png"), full_page=True)
    approver2.click("[data-testid=approve]")
    approver2.wait_for_selector("text=it is now live")
    assert approver2.inner_text("[data-testid=change-status]") == "Applied"

    approver2.click("text=v1 of payments.ledger.close-books")
    approver2.wait_for_selector("[data-testid=live-version]")
    assert approver2.inner_text("[data-testid=live-version]") == "v1 live"
    assert "Local (Europe/Berlin)" in approver2.content()
    approver2.screenshot(path=str(ARTIFACTS / "job-page.png"), full_page=True)

    job = Job.objects.get()
    assert job.version == 1 and job.change_request_id == change.pk
    assert Review.objects.filter(change_request=change).count() == 2
    change.refresh_from_db()
    assert change.status == ChangeStatus.APPLIED

    # Back to the author: still no approve button, and the request shows applied.
    author.reload()
    assert author.locator("[data-testid=approve]").count() == 0
    assert author.inner_text("[data-testid=change-status]") == "Applied"
    for page in (author, approver, approver2):
        page.context.close()
