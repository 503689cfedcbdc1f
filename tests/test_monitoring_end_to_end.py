"""Monitoring end to end, with real servers: alert rules approved through change requests, a real
failed run in the sandbox, incidents, the team's rotation and escalation policy, and the outbox
delivered to an SMTP server (aiosmtpd) and a webhook receiver that verifies the HMAC signature with
the secret kept in OpenBao. The monitor steps run with an explicit clock (``monitoring.loop.run_once(now)``:
rules, then escalation, then delivery), anchored on the instant the failed run was reported."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from approvals.services import approve_change, propose_config_change
from jobs.executor import execute_run
from jobs.models import EnvironmentExecutionPolicy, Run, RunStatus
from jobs.services import trigger_run
from monitoring import oncall_services
from monitoring.incidents import acknowledge
from monitoring.loop import run_once
from monitoring.models import DurationSamples, Incident, IncidentState
from notifications.channels import create_channel
from notifications.models import Notification
from tests.incident_support import policy, rotation, with_email
from tests.notify_servers import Receiver, SmtpSink
from tests.vault import put_secret

SECRET = "whsec-end-to-end-0123456789abcdef"
REF = "vault:secret/governor/acme/prod/hooks#signing"
MIN = timedelta(minutes=1)
FAILING = ["/bin/sh", "-c", "echo 'ledger out of balance'; exit 2"]


@pytest.fixture
def smtp(settings):
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.GOVERNOR_NOTIFY_TIMEOUT_SECONDS = 2
    yield sink
    sink.stop()


@pytest.fixture
def receiver():
    server = Receiver(SECRET).start()
    yield server
    server.stop()


def govern_rule(cast, **definition):
    """An alert rule of prod, proposed by the tenant admin and approved by both approvers."""
    change = propose_config_change(
        actor=cast.admin,
        kind="alert_rule",
        action="create",
        environment=cast.prod,
        definition={"severity": "high", "for_seconds": 0, **definition},
        justification="Page the payments on-call person.",
    )
    for approver in (cast.approver, cast.approver2):
        change = approve_change(change, actor=approver)
    assert change.status == "applied", change.failure_reason
    return change.changed_object()


def execute(capture, job, actor) -> Run:
    """A manual run of ``job``, executed in the sandbox; its end is committed, so jobs.hooks.run_finished fires."""
    with capture(execute=True):
        run = trigger_run(job, actor=actor, reason="end-to-end test")
    with capture(execute=True):
        execute_run(run.pk)
    run.refresh_from_db()
    return run


def mail(smtp) -> list[tuple[str, str]]:
    """(envelope recipient, subject) of every message the SMTP server accepted, in order."""
    return [(m["X-Envelope-To"], m["Subject"]) for m in smtp.messages]


def hooks(receiver) -> list[tuple[str, str]]:
    """(idempotency key, subject) of every signed webhook the receiver accepted, in order."""
    return [(item["key"], item["body"]["subject"]) for item in receiver.accepted]


def subject(incident: Incident) -> str:
    incident.refresh_from_db()
    return f"[{incident.severity}] INC-{incident.pk}: {incident.summary}"


def key(incident: Incident, step: int, channel) -> str:
    """The idempotency key of the notification of ``channel`` at ``step`` of the incident."""
    return str(
        Notification.objects.get(
            source=f"incident:{incident.pk}", channel=channel, dedupe_key__contains=f":step:{step}:"
        ).key
    )


@pytest.fixture
def world(tcast, vault, smtp, receiver, django_capture_on_commit_callbacks):
    """payments in prod: operator on call (email), a policy of step 1 (on call, 15 min) then step 2
    (approver by email and the signed webhook ``pager``); four jobs and the rules that watch them.
    Transactional: ``run_once`` closes stale connections between steps, as the monitor process does."""
    cast = tcast
    EnvironmentExecutionPolicy.objects.create(
        environment=cast.prod, http_allowed_hosts=["127.0.0.1"], allow_private_addresses=True
    )
    put_secret(vault, "governor/acme/prod/hooks", {"signing": SECRET})
    pager = create_channel(
        actor=cast.admin,
        tenant=cast.acme,
        team=cast.payments,
        name="pager",
        kind="webhook",
        target=f"{receiver.url}/hook",
        secret=REF,
    )
    now = timezone.now()
    rotation(cast.payments, [cast.operator], starts_on=(now - timedelta(days=7)).date())
    policy(
        cast.acme,
        cast.payments,
        [
            {"delay_minutes": 15, "notify_on_call": True},
            {"delay_minutes": 30, "users": [cast.approver], "channels": [pager]},
        ],
    )
    medium = {"criticality": "medium"}
    jobs = {
        "failing": cast.make_job(cast.prod, name="payments.ledger.reconcile", command=FAILING, **medium),
        "silenced": cast.make_job(cast.prod, name="payments.ledger.archive", command=FAILING, **medium),
        "late": cast.make_job(cast.prod, name="payments.fx.import", **medium),
        "report": cast.make_job(cast.prod, name="payments.report.daily", **medium),
    }
    deadline = (now + timedelta(hours=2)).astimezone(UTC)
    rules = {
        "failed": govern_rule(cast, name="payments-failed", kind="run_failed", scope="team", team="payments"),
        "late": govern_rule(
            cast, name="fx-late", kind="late_start", scope="job", job="payments.fx.import", grace_seconds=300
        ),
        "predicted": govern_rule(
            cast,
            name="report-by-deadline",
            kind="deadline_predicted",
            scope="job",
            job="payments.report.daily",
            severity="critical",
            time=f"{deadline:%H:%M}",
            timezone="UTC",
            days="daily",
            samples=5,
            min_samples=3,
        ),
    }
    # The report usually takes three hours; today's run started a minute ago: it will miss the deadline.
    DurationSamples.objects.create(job=jobs["report"], seconds=[10800.0] * 5)
    Run.objects.create(
        job=jobs["report"],
        tenant_id=cast.acme.pk,
        status=RunStatus.RUNNING,
        scheduled_for=now - MIN,
        started_at=now - MIN,
        job_version=jobs["report"].version,
        definition=jobs["report"].definition(),
    )
    oncall_services.create_silence(
        actor=cast.admin,
        tenant=cast.acme,
        job=jobs["silenced"],
        ends_at=now + timedelta(hours=6),
        reason="archive migration",
    )
    # Addresses only now: the change requests above notified reviewers who had none (nothing queued).
    with_email(cast.operator, cast.approver)
    assert Notification.objects.count() == 0
    return {"jobs": jobs, "rules": rules, "pager": pager}


def test_the_right_people_and_channels_receive_each_notification_exactly_once(
    tcast, world, smtp, receiver, django_capture_on_commit_callbacks
):
    cast, jobs = tcast, world["jobs"]
    operator, approver = "acme-operator@example.com", "acme-approver@example.com"

    # A real failed run: the run-finished listener opens the incident at once and queues step 1.
    failed = execute(django_capture_on_commit_callbacks, jobs["failing"], cast.operator)
    assert (failed.status, failed.exit_code) == (RunStatus.FAILED, 2)
    silenced = execute(django_capture_on_commit_callbacks, jobs["silenced"], cast.operator)
    assert silenced.status == RunStatus.FAILED
    t0 = timezone.now()
    failing = Incident.objects.get(job=jobs["failing"])
    quiet = Incident.objects.get(job=jobs["silenced"])
    assert failing.fingerprint == f"rule:{world['rules']['failed'].pk}:job:{jobs['failing'].pk}"
    assert failing.summary == f"payments.ledger.reconcile: run #{failed.pk} failed (after retries)."
    assert mail(smtp) == [] and hooks(receiver) == []  # queued, not yet sent: the monitor delivers

    # Cycle at t0: the predicted deadline miss fires; both step-1 notifications reach the on-call person.
    run_once(t0)
    predicted = Incident.objects.get(job=jobs["report"])
    assert predicted.severity == "critical"
    assert predicted.summary.startswith(f"payments.report.daily: run #{Run.objects.get(job=jobs['report']).pk} is ")
    assert "predicted to finish" in predicted.summary
    expected_mail = [(operator, subject(failing)), (operator, subject(predicted))]
    assert sorted(mail(smtp)) == sorted(expected_mail)
    assert hooks(receiver) == []
    # The silenced job's incident exists, silenced on its timeline, and reached nobody.
    quiet.refresh_from_db()
    assert quiet.state == IncidentState.TRIGGERED and "archive migration" in quiet.silence_reason
    assert [e.kind for e in quiet.events.all()] == ["opened", "silenced"]
    assert not Notification.objects.filter(source=f"incident:{quiet.pk}").exists()

    # The late job: its 5-minute slot was never started; the rule fires 300 s after it, not before.
    late_at = jobs["late"].next_fire_at + timedelta(seconds=300)
    assert t0 < late_at < t0 + 14 * MIN
    run_once(late_at - timedelta(seconds=1))
    assert not Incident.objects.filter(job=jobs["late"]).exists()
    run_once(late_at)
    late = Incident.objects.get(job=jobs["late"])
    assert late.summary.startswith("payments.fx.import: the run due at ")
    expected_mail.append((operator, subject(late)))
    assert sorted(mail(smtp)) == sorted(expected_mail)
    # The operator acknowledges the late job: its escalation stops there.
    acknowledge(late, actor=cast.operator, now=late_at + MIN)

    # Nothing more before step 1's delay is over.
    run_once(t0 + 14 * MIN)
    assert sorted(mail(smtp)) == sorted(expected_mail) and hooks(receiver) == []

    # The receiver goes down; 15 minutes without acknowledgement: step 2 (approver by email, the webhook).
    receiver.stop()
    step2 = t0 + 15 * MIN
    run_once(step2)
    expected_mail += [(approver, subject(failing)), (approver, subject(predicted))]
    assert sorted(mail(smtp)) == sorted(expected_mail)
    hook_rows = Notification.objects.filter(channel=world["pager"])
    assert hook_rows.count() == 2 and {r.state for r in hook_rows} == {"pending"}
    # Retries while it is down: each attempt fails and backs off; nothing is lost, nothing arrives.
    for seconds in (31, 91, 211):
        run_once(step2 + timedelta(seconds=seconds))
    assert {(r.state, r.attempts) for r in Notification.objects.filter(channel=world["pager"])} == {("pending", 4)}
    assert hooks(receiver) == []

    # Back up (same port): past the backoff each notification arrives exactly once, signed.
    receiver.start()
    run_once(step2 + 30 * MIN - timedelta(seconds=1))
    run_once(step2 + 2 * 60 * MIN)
    expected_hooks = [
        (key(failing, 2, world["pager"]), subject(failing)),
        (key(predicted, 2, world["pager"]), subject(predicted)),
    ]
    assert sorted(hooks(receiver)) == sorted(expected_hooks)
    assert receiver.by_key == {k: 1 for k, _ in expected_hooks}
    assert receiver.refused == []
    assert sorted((b["body"]["event"]["incident"], b["body"]["event"]["step"]) for b in receiver.accepted) == sorted(
        [(failing.pk, 2), (predicted.pk, 2)]
    )
    assert {r.state for r in Notification.objects.all()} == {"delivered"}
    # Escalation ended after the last step (no repeat): later cycles send nothing, to anyone.
    run_once(step2 + 3 * 60 * MIN)
    assert sorted(mail(smtp)) == sorted(expected_mail)
    assert receiver.by_key == {k: 1 for k, _ in expected_hooks}
    # Email copies are keyed too: each message's Message-ID is its notification's key.
    assert len({m["Message-ID"] for m in smtp.messages}) == len(expected_mail)
    # The timelines: step 2 reached the unacknowledged incidents; the failure's escalation then ended;
    # the prediction cleared once its deadline had passed (a deadline_missed rule pages for the miss
    # itself); the acknowledged incident stopped at step 1.
    assert [e.kind for e in failing.events.all()] == ["opened", "notified", "notified", "exhausted"]
    assert [e.kind for e in predicted.events.all()] == ["opened", "notified", "notified", "resolved"]
    assert [e.kind for e in late.events.all()] == ["opened", "notified", "acknowledged"]
    # The silenced job notified nobody, at any step.
    assert not Notification.objects.filter(source=f"incident:{quiet.pk}").exists()
