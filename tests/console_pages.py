"""The console's pages, each with something on it, for the tests that visit them all (layout at
390 px, axe-core): a tenant with jobs, runs, open and decided changes, a window, a freeze, an
overdue job and audit events, and the URL of every page of the main navigation plus the pages
one click below it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from approvals.models import ChangeRequest
from approvals.services import approve_change, create_freeze_window, propose_change
from conftest import PASSWORD
from jobs.models import Job, Run, RunStatus
from monitoring.incidents import raise_alert
from notifications.models import Channel, DeliveryAttempt, Notification
from tests.incident_support import rotation, signal

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"

# The main navigation (base.html), in its order.
NAVIGATION = [
    ("dashboard", "/"),
    ("jobs", "/jobs/"),
    ("incidents", "/incidents/"),
    ("changes", "/changes/?tab=all"),
    ("windows", "/config/"),
    ("reviews-due", "/overdue/"),
    ("freezes", "/freezes/"),
    ("policies", "/policies/"),
    ("notifications", "/notifications/"),
    ("insights", "/insights/"),
    ("audit", "/audit/"),
]


def populate(cast) -> list[tuple[str, str]]:
    """Fill acme with one of everything the pages show; return (name, path) of every page to visit."""
    now = timezone.now()
    reconcile = cast.make_job(cast.dev)
    close = cast.make_job(
        cast.prod,
        name="payments.ledger.close-books",
        description="Close the books at month end; a long description that must wrap on a phone.",
        criticality="critical",
        rationale="Critical without a heartbeat: the close finishes in minutes.",
    )
    Job.objects.filter(pk=reconcile.pk).update(review_due_on=now.date() - timedelta(days=3))
    succeeded = Run.objects.create(
        job=reconcile,
        tenant=cast.acme,
        scheduled_for=now - timedelta(hours=2),
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=2) + timedelta(seconds=3),
        status=RunStatus.SUCCEEDED,
        exit_code=0,
        job_version=reconcile.version,
        definition=reconcile.definition(),
        output="hello\n",
    )
    failed = Run.objects.create(
        job=close,
        tenant=cast.acme,
        scheduled_for=now - timedelta(hours=1),
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(hours=1) + timedelta(seconds=9),
        status=RunStatus.FAILED,
        exit_code=2,
        job_version=close.version,
        definition=close.definition(),
        output="closing books\n" + "x" * 300 + "\nerror: ledger export missing\n",
    )
    # Open changes: one half approved in prod (the progress bar), one new job waiting in staging.
    update = propose_change(
        actor=cast.author,
        action="update",
        job=close,
        definition={"cron": "30 3 1 * *", "timeout_seconds": 1200},
        justification="Run it after the ledger export, which moved to 03:15.",
        ticket="FIN-2050",
    )
    approve_change(update, actor=cast.approver)
    propose_change(
        actor=cast.author,
        action="create",
        team=cast.data,
        environment=cast.staging,
        definition=cast.definition(name="data.warehouse.load", criticality="medium"),
        justification="Nightly warehouse load.",
    )
    cast.make_window(
        environment=cast.prod, name="db upgrade", starts_at="2030-06-01T22:00:00Z", ends_at="2030-06-02T02:00:00Z"
    )
    create_freeze_window(
        actor=cast.admin,
        tenant=cast.acme,
        environment=cast.prod,
        starts_at=now + timedelta(days=20),
        ends_at=now + timedelta(days=22),
        reason="Year-end release freeze",
    )
    created = ChangeRequest.objects.filter(job=close, action="create").get()
    _notifications(cast, now)
    # An incident of the failed run, on a team with a rotation (the team page's on-call panel).
    rotation(cast.payments, [cast.operator, cast.admin], starts_on=now.date() - timedelta(days=3))
    incident = raise_alert(
        signal(
            close,
            run_id=failed.pk,
            at=now - timedelta(minutes=50),
            summary="payments.ledger.close-books failed: error: ledger export missing",
        )
    )
    return [
        *NAVIGATION,
        ("job", f"/jobs/{close.pk}/"),
        ("run-succeeded", f"/runs/{succeeded.pk}/"),
        ("run-failed", f"/runs/{failed.pk}/"),
        ("change-open", f"/changes/{update.pk}/"),
        ("change-applied", f"/changes/{created.pk}/"),
        ("change-review-queue", "/changes/?tab=review"),
        ("propose-job", "/changes/new/"),
        ("propose-change", f"/jobs/{close.pk}/propose/"),
        ("propose-pause", f"/jobs/{close.pk}/propose-pause/"),
        ("propose-deletion", f"/jobs/{close.pk}/propose-deletion/"),
        ("promote", f"/jobs/{reconcile.pk}/promote/"),
        ("propose-window", "/config/maintenance_window/new/"),
        ("propose-pool", "/config/pool/new/"),
        ("propose-policy", "/policies/propose/"),
        ("post-reviews", "/changes/post-reviews/"),
        # Insights review pages (one click below the Insights index).
        ("insights-rightsizing", "/insights/rightsizing/"),
        ("insights-zombies", "/insights/zombies/"),
        ("insights-overhead", "/insights/overhead/"),
        ("incident", f"/incidents/{incident.pk}/"),
        ("team", f"/teams/{cast.payments.pk}/"),
        ("insights-capacity", "/insights/capacity/?horizon=90"),
        ("insights-herds", "/insights/herds/?threshold=1"),
        ("not-found", "/jobs/999999/"),
    ]


def _notifications(cast, now) -> None:
    """A channel, a notification delivered to it and one that failed for good (the notifications page)."""
    channel = Channel.objects.create(
        tenant=cast.acme, team=cast.payments, name="payments-mail", kind="email", target="payments@acme.test"
    )
    for state, error in (("delivered", ""), ("failed", "SMTP 550: mailbox unavailable for payments@acme.test")):
        row = Notification.objects.create(
            tenant=cast.acme,
            channel=channel,
            subject=f"payments.ledger.close-books failed ({state})",
            body="The run failed.",
            dedupe_key=f"console:{state}",
            state=state,
            attempts=1,
            next_attempt_at=now,
            last_error=error,
            failed_at=now if error else None,
            delivered_at=None if error else now,
        )
        DeliveryAttempt.objects.create(
            notification=row, at=now, ok=not error, error=error, status_code=None, duration_ms=12.5
        )


def sign_in(browser, live_server, username: str, *, width: int = 1360, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page
