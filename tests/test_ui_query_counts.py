"""Every page of the navigation (and the pages one click below) runs the same number of queries
for 5 rows as for 30."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalPolicy, ChangeRequest, ChangeStatus, Comment, FreezeWindow, Review
from conftest import PASSWORD
from governance import audit
from governance.models import AuditAction, Environment
from jobs.models import HolidayCalendar, Job, MaintenanceWindow, Pool, Run


def add_jobs(cast, start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        job = cast.bulk_job(i, next_fire_at=now)
        Run.objects.create(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timezone.timedelta(minutes=i),
            status="failed" if i % 4 == 0 else "succeeded",
            job_version=1,
            definition=job.definition(),
        )


def add_active_runs(cast, start: int, count: int) -> None:
    """Runs running, queued, deferred and late, of as many jobs."""
    add_jobs(cast, start, count)
    now = timezone.now()
    for i, job in enumerate(
        Job.objects.filter(name__in=[f"payments.bulk.job-{i}" for i in range(start, start + count)])
    ):
        Run.objects.create(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timezone.timedelta(seconds=30 + i * 20),
            status=["running", "queued", "deferred"][i % 3],
            reason="Deferred: pool batch is full." if i % 3 == 2 else "",
            job_version=1,
            definition=job.definition(),
        )


def add_changes(cast, start: int, count: int) -> None:
    for i in range(start, start + count):
        change = ChangeRequest.objects.create(
            tenant=cast.acme,
            team=cast.payments,
            environment=cast.prod,
            action="create",
            proposed=cast.definition(name=f"payments.bulk.job-{i}", criticality=["low", "critical"][i % 2]),
            author=cast.author,
            justification=f"bulk {i}",
            status=ChangeStatus.SUBMITTED,
            required_approvals=2,
        )
        if i % 2:
            Review.objects.create(
                change_request=change,
                revision=1,
                reviewer=cast.approver2,
                change_author=cast.author,
                decision="approve",
            )


def add_events(cast, start: int, count: int) -> None:
    for i in range(start, start + count):
        audit.record(AuditAction.RUN_TRIGGERED, actor=cast.operator, tenant=cast.acme, data={"i": i})


def add_overdue_jobs(cast, start: int, count: int) -> None:
    add_jobs(cast, start, count)
    Job.objects.filter(name__startswith="payments.bulk.").update(
        review_due_on=timezone.now().date() - timezone.timedelta(days=3)
    )


def add_config_objects(cast, start: int, count: int) -> None:
    for i in range(start, start + count):
        env = [cast.dev, cast.staging, cast.prod][i % 3]
        MaintenanceWindow.objects.create(
            tenant=cast.acme,
            environment=env if i % 2 else None,
            name=f"window {i}",
            starts_at=timezone.now() + timezone.timedelta(days=i),
            ends_at=timezone.now() + timezone.timedelta(days=i, hours=2),
        )
        HolidayCalendar.objects.create(tenant=cast.acme, name=f"calendar-{i}", dates=["2026-12-25"])
        Pool.objects.create(tenant=cast.acme, environment=env, name=f"pool-{i}", slots=2)
        ChangeRequest.objects.create(
            tenant=cast.acme,
            environment=env,
            action="create",
            target_kind="pool",
            proposed={"name": f"pool-new-{i}", "slots": 1},
            author=cast.admin,
            justification=f"bulk {i}",
            status=ChangeStatus.SUBMITTED,
            required_approvals=2,
        )


def add_freezes(cast, start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        FreezeWindow.objects.create(
            tenant=cast.acme,
            environment=[None, cast.staging, cast.prod][i % 3],
            starts_at=now + timezone.timedelta(days=i - 10),
            ends_at=now + timezone.timedelta(days=i - 10, hours=5),
            reason=f"release {i}",
            created_by=cast.admin,
        )


def add_environments_with_rules(cast, start: int, count: int) -> None:
    for i in range(start, start + count):
        env = Environment.objects.create(
            tenant=cast.acme, slug=f"env-{i}", name=f"Env {i}", order=10 + i, required_approvals=1
        )
        ApprovalPolicy.objects.create(tenant=cast.acme, environment=env, criticality="", required_approvals=1)
        ApprovalPolicy.objects.create(
            tenant=cast.acme, environment=env, criticality="critical", required_approvals=2, separation_of_duties=True
        )
        ChangeRequest.objects.create(
            tenant=cast.acme,
            environment=env,
            action="policy",
            proposed={"criticality": "high", "required_approvals": 2},
            author=cast.admin,
            justification=f"bulk {i}",
            status=ChangeStatus.SUBMITTED,
            required_approvals=1,
        )


def add_incidents(cast, start: int, count: int) -> None:
    """Open incidents of as many jobs of team payments (one acknowledged in three), each with a timeline."""
    from monitoring.incidents import acknowledge, raise_alert
    from tests.incident_support import signal

    add_jobs(cast, start, count)
    for i, job in enumerate(
        Job.objects.filter(name__in=[f"payments.bulk.job-{i}" for i in range(start, start + count)])
    ):
        incident = raise_alert(signal(job, run_id=i + 1, summary=f"incident {start + i}"))
        if i % 3 == 0:
            acknowledge(incident, actor=cast.operator)


def count_queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


# The last row's text, where the page lists every row (the dashboard shows only the first few).
LAST_ROW = {
    add_jobs: "payments.bulk.job-29",
    add_changes: "payments.bulk.job-29",
    add_events: "i:</span> 29",
    add_overdue_jobs: "payments.bulk.job-29",
    add_config_objects: "pool-29",
    add_freezes: "release 29",
    add_environments_with_rules: "Env 29",
    add_incidents: "incident 29",
}


@pytest.mark.parametrize(
    ("url", "params", "builder", "user"),
    [
        ("job_list", {}, add_jobs, "viewer"),
        ("change_list", {"tab": "all"}, add_changes, "approver"),
        ("change_list", {"tab": "review"}, add_changes, "approver"),
        ("audit_list", {}, add_events, "admin"),
        ("dashboard", {}, add_jobs, "approver"),
        ("dashboard", {}, add_changes, "approver"),
        ("dashboard", {}, add_overdue_jobs, "author"),
        ("config_list", {}, add_config_objects, "admin"),
        ("config_list", {}, add_config_objects, "viewer"),
        ("overdue_list", {}, add_overdue_jobs, "author"),
        ("freeze_list", {}, add_freezes, "admin"),
        ("policy_list", {}, add_environments_with_rules, "admin"),
        ("policy_list", {}, add_environments_with_rules, "viewer"),
        ("run_list", {}, add_jobs, "viewer"),
        ("run_list", {"status": "failed", "trigger": "schedule"}, add_jobs, "viewer"),
        ("now", {}, add_jobs, "viewer"),
        ("now", {}, add_active_runs, "viewer"),
        ("now_panel", {}, add_active_runs, "viewer"),
        ("now_board", {}, add_active_runs, "viewer"),
        ("dashboard", {}, add_active_runs, "viewer"),
        ("incident_list", {}, add_incidents, "viewer"),
        ("incident_list", {"state": "open", "severity": "high"}, add_incidents, "operator"),
    ],
)
def test_list_pages_do_not_grow_queries_with_rows(
    client, cast, django_assert_max_num_queries, url, params, builder, user
):
    client.login(username=getattr(cast, user).username, password=PASSWORD)
    builder(cast, 0, 5)
    small = count_queries(client, reverse(url), params)
    builder(cast, 5, 25)
    with django_assert_max_num_queries(small):
        response = client.get(reverse(url), params)
    assert response.status_code == 200
    # The dashboard shows only the first few rows; the run console's pages list runs, not these rows.
    if url not in ("dashboard", "run_list", "now", "now_panel", "now_board"):
        assert LAST_ROW[builder] in response.content.decode()


def test_job_detail_queries_do_not_grow_with_runs_and_versions(client, cast, django_assert_max_num_queries):
    from approvals.services import propose_change

    job = cast.make_job(cast.dev)
    client.login(username=cast.viewer.username, password=PASSWORD)
    small = count_queries(client, reverse("job_detail", args=[job.pk]))
    for i in range(6):
        propose_change(
            actor=cast.author, action="update", job=job, definition={"timeout_seconds": 100 + i}, justification="x"
        )
    add_jobs_runs = [
        Run(
            job=job,
            tenant=cast.acme,
            scheduled_for=timezone.now() - timezone.timedelta(minutes=i),
            status="succeeded",
            job_version=1,
            definition=job.definition(),
        )
        for i in range(25)
    ]
    Run.objects.bulk_create(add_jobs_runs)
    with django_assert_max_num_queries(small):
        client.get(reverse("job_detail", args=[job.pk]))


def test_change_detail_queries_do_not_grow_with_reviews_and_comments(client, cast, django_assert_max_num_queries):
    from approvals.services import propose_change

    job = cast.make_job(cast.prod)
    change = propose_change(
        actor=cast.author, action="update", job=job, definition={"timeout_seconds": 120}, justification="x"
    )
    # Revised many times: the reviews of earlier revisions show as reset.
    ChangeRequest.objects.filter(pk=change.pk).update(revision=30)

    def discuss(start: int, count: int) -> None:
        for i in range(start, start + count):
            Comment.objects.create(change_request=change, revision=1 + i, author=cast.approver, body=f"comment {i}")
            Review.objects.create(
                change_request=change,
                revision=1 + i,
                reviewer=[cast.approver, cast.approver2][i % 2],
                change_author=cast.author,
                decision="approve",
                comment=f"review {i}",
            )

    client.login(username=cast.approver2.username, password=PASSWORD)
    discuss(0, 3)
    small = count_queries(client, reverse("change_detail", args=[change.pk]))
    discuss(3, 20)
    with django_assert_max_num_queries(small):
        response = client.get(reverse("change_detail", args=[change.pk]))
    assert response.status_code == 200


def test_jobs_list_strips_do_not_grow_queries_with_runs_per_job(client, cast, django_assert_max_num_queries):
    """Every strip on the page comes from one query, however many runs each job has."""
    client.login(username=cast.viewer.username, password=PASSWORD)
    add_jobs(cast, 0, 5)
    small = count_queries(client, reverse("job_list"))
    now = timezone.now()
    Run.objects.bulk_create(
        Run(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timezone.timedelta(hours=1, minutes=i),
            status="succeeded",
            job_version=1,
            definition=job.definition(),
        )
        for job in Job.objects.all()
        for i in range(30)
    )
    with django_assert_max_num_queries(small):
        response = client.get(reverse("job_list"))
    assert response.content.decode().count('class="cell st-') == 5 * 20


@pytest.mark.parametrize("page", ["job_detail", "job_live"])
def test_job_page_live_part_queries_do_not_grow_with_runs(client, cast, django_assert_max_num_queries, page):
    job = cast.make_job(cast.dev)
    client.login(username=cast.viewer.username, password=PASSWORD)
    small = count_queries(client, reverse(page, args=[job.pk]))
    now = timezone.now()
    Run.objects.bulk_create(
        Run(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timezone.timedelta(minutes=i),
            status=["succeeded", "failed", "running"][i % 3],
            job_version=1,
            definition=job.definition(),
        )
        for i in range(60)
    )
    with django_assert_max_num_queries(small):
        client.get(reverse(page, args=[job.pk]))


def test_team_page_and_incident_page_queries_do_not_grow(client, cast, django_assert_max_num_queries):
    """The team page with its open incidents, members and rotation; an incident's page with its timeline."""
    from monitoring.incidents import raise_alert
    from monitoring.models import Incident
    from tests.incident_support import rotation, signal

    rotation(cast.payments, [cast.operator, cast.admin])
    client.login(username=cast.viewer.username, password=PASSWORD)
    add_incidents(cast, 0, 3)
    team_small = count_queries(client, reverse("team_detail", args=[cast.payments.pk]))
    incident = Incident.objects.order_by("id").first()
    incident_small = count_queries(client, reverse("incident_detail", args=[incident.pk]))
    add_incidents(cast, 3, 15)
    for i in range(20):
        raise_alert(signal(incident.job, run_id=1000 + i))
    with django_assert_max_num_queries(team_small):
        client.get(reverse("team_detail", args=[cast.payments.pk]))
    with django_assert_max_num_queries(incident_small):
        client.get(reverse("incident_detail", args=[incident.pk]))


# --- the long lists' other pages (issues 17 and 20): keyset pages, keys-first pages, filters ----


def _cursor(url: str) -> str:
    """A position in the middle of the list: the 3rd newest row."""
    from governance.models import AuditEvent
    from governance.paging import cursor_of

    model, field = (AuditEvent, "created_at") if url == "audit_list" else (Run, "scheduled_for")
    return cursor_of(model.objects.order_by(f"-{field}", "-pk")[2], field)


@pytest.mark.parametrize(
    ("url", "params", "builder", "user"),
    [
        ("audit_list", {"action": AuditAction.RUN_TRIGGERED}, add_events, "admin"),
        ("audit_list", {"actor": "acme-operator", "since": "2020-01-01"}, add_events, "admin"),
        ("audit_list", {"before": None}, add_events, "admin"),
        ("audit_list", {"after": None}, add_events, "admin"),
        ("run_list", {"before": None}, add_jobs, "viewer"),
        ("run_list", {"status": "failed", "before": None}, add_jobs, "viewer"),
        ("job_list", {"page": 2}, add_jobs, "viewer"),
        ("job_list", {"q": "bulk", "environment": "dev"}, add_jobs, "viewer"),
    ],
)
def test_long_list_pages_do_not_grow_queries_with_rows(
    client, cast, django_assert_max_num_queries, url, params, builder, user
):
    """Keyset (older/newer) pages, a second page and filtered lists cost what the first page costs."""
    client.login(username=getattr(cast, user).username, password=PASSWORD)
    first = 55 if "page" in params else 5  # page 2 has rows from the start
    builder(cast, 0, first)
    resolved = {key: _cursor(url) if value is None else value for key, value in params.items()}
    small = count_queries(client, reverse(url), resolved)
    builder(cast, first, 30)
    with django_assert_max_num_queries(small):
        response = client.get(reverse(url), resolved)
    assert response.status_code == 200


def test_audit_older_links_walk_the_whole_trail_past_the_numbered_pages(client, cast, monkeypatch):
    """Past the numbered pages, the Older links (keyset cursors) reach every event once, in order,
    and Newer from there comes back."""
    import re

    from governance import paging
    from governance.models import AuditEvent

    # Pages of 5 rows and a count capped at 10: two numbered pages, then keyset pages.
    monkeypatch.setattr(paging, "PER_PAGE", 5)
    monkeypatch.setattr(paging, "CAP", 10)
    client.login(username=cast.admin.username, password=PASSWORD)
    add_events(cast, 0, 23)
    url: str | None = reverse("audit_list") + "?action=run.triggered"
    seen: list[int] = []
    pages: list[str] = []
    while url and len(pages) < 20:
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        pages.append(html)
        seen += [int(i) for i in re.findall(r'data-event="(\d+)"', html)]
        older = re.search(r'href="(\?[^"]*)">Older', html)
        url = reverse("audit_list") + older.group(1).replace("&amp;", "&") if older else None
    expected = list(
        AuditEvent.objects.filter(tenant=cast.acme, action="run.triggered")
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    assert len(expected) == 23 and seen == expected
    assert "Page 1 · more than 10 total" in pages[0]
    assert "more than 10 in all" in pages[-1]
    # The last page's Newer link shows the five events before it.
    newer = re.search(r'href="(\?[^"]*)">← Newer', pages[-1])
    assert newer is not None
    back = client.get(reverse("audit_list") + newer.group(1).replace("&amp;", "&")).content.decode()
    assert [int(i) for i in re.findall(r'data-event="(\d+)"', back)] == expected[15:20]


def test_a_cursor_that_does_not_parse_is_refused_beside_the_list(client, cast):
    client.login(username=cast.admin.username, password=PASSWORD)
    add_events(cast, 0, 3)
    response = client.get(reverse("audit_list"), {"before": "yesterday"})
    assert response.status_code == 400
    assert "Not a list position" in response.content.decode()
    client.login(username=cast.viewer.username, password=PASSWORD)
    response = client.get(reverse("run_list"), {"after": "2026-12-01T00:00:00Z~x"})
    assert response.status_code == 400
    assert "Not a list position" in response.content.decode()


# --- every API list ------------------------------------------------------------------------------


def add_accounts_and_tokens(cast, start: int, count: int) -> None:
    from governance.models import Role
    from governance.tokens import create_service_account, issue_token

    for i in range(start, start + count):
        account = create_service_account(actor=cast.admin, tenant=cast.acme, name=f"bot-{i}", role=Role.VIEWER)
        issue_token(account.user, actor=cast.admin, name=f"token-{i}")


def _bulk_dev_job(cast, i: int) -> Job:
    """Job number ``i`` of a bulk set in dev (written straight to the table, as ``cast.bulk_job``)."""
    return Job.objects.create(
        tenant=cast.acme, team=cast.payments, environment=cast.dev, **cast.definition(name=f"payments.bulk.job-{i}")
    )


def _mail_channel(cast, i: int, team=None):
    from notifications.channels import create_channel

    return create_channel(
        actor=cast.admin, tenant=cast.acme, team=team, name=f"ops-mail-{i}", kind="email", target=f"ops-{i}@acme.test"
    )


def add_silences(cast, start: int, count: int) -> None:
    """Silences of a job, of a team and of a tag in turn, by the tenant admin."""
    from monitoring.oncall_services import create_silence

    now = timezone.now()
    for i in range(start, start + count):
        where = [{"job": cast.bulk_job(i)}, {"team": cast.payments}, {"tag": f"tag-{i}"}][i % 3]
        create_silence(
            actor=cast.admin,
            tenant=cast.acme,
            ends_at=now + timezone.timedelta(hours=1 + i),
            reason=f"silence {i}",
            **where,
        )


def add_escalation_policies(cast, start: int, count: int) -> None:
    """Policies (tenant-wide and team payments' in turn) of two steps: people, a channel, the on-call person."""
    from monitoring.oncall_services import save_policy
    from tests.incident_support import with_email

    with_email(cast.operator, cast.admin)
    for i in range(start, start + count):
        channel = _mail_channel(cast, i)
        steps = [
            {"delay_minutes": 5, "notify_on_call": True, "users": [cast.operator], "channels": [channel]},
            {"delay_minutes": 15, "notify_on_call": False, "users": [cast.operator, cast.admin], "channels": []},
        ]
        team = [None, cast.payments][i % 2]
        save_policy(actor=cast.admin, tenant=cast.acme, team=team, name=f"policy-{i}", steps=steps, repeat=i % 3)


def add_escalation_routes(cast, start: int, count: int) -> None:
    """Routes to one tenant-wide policy, each for another team, criticality and environment."""
    import itertools

    from monitoring.models import EscalationPolicy
    from monitoring.oncall_services import save_policy, save_route

    policy = EscalationPolicy.objects.filter(tenant=cast.acme, name="routes").first() or save_policy(
        actor=cast.admin,
        tenant=cast.acme,
        team=None,
        name="routes",
        steps=[{"delay_minutes": 5, "notify_on_call": True, "users": [], "channels": []}],
    )
    places = list(
        itertools.product(
            [None, cast.payments, cast.data],
            ["", "critical", "high", "medium", "low"],
            [None, cast.dev, cast.staging, cast.prod],
        )
    )
    for team, criticality, environment in places[start : start + count]:
        save_route(
            actor=cast.admin,
            tenant=cast.acme,
            team=team,
            policy=policy,
            criticality=criticality,
            environment=environment,
            page_during_maintenance=environment is None,
        )


def add_rotations(cast, start: int, count: int) -> None:
    """A team each, with its rotation of two layers (the second on weekdays only) and an override."""
    import datetime as dt

    from governance.models import Team
    from monitoring.oncall_services import create_override, save_rotation

    now = timezone.now()
    layer = {"starts_on": dt.date(2026, 11, 30), "handoff_time": dt.time(9, 0), "timezone": "Europe/Berlin"}
    for i in range(start, start + count):
        team = Team.objects.create(tenant=cast.acme, slug=f"team-{i}", name=f"Team {i}")
        layers = [
            {**layer, "name": "primary", "users": [cast.operator, cast.admin], "rotation_days": 1 + i % 7},
            {**layer, "name": "office", "users": [cast.admin], "rotation_days": 7, "weekdays": [0, 1, 2, 3, 4]},
        ]
        made = save_rotation(actor=cast.admin, team=team, name=f"team-{i} on call", layers=layers)
        create_override(
            actor=cast.admin,
            rotation=made,
            user=cast.operator,
            starts_at=now + timezone.timedelta(hours=i - 3),
            ends_at=now + timezone.timedelta(hours=i - 1),
            reason=f"swap {i}",
        )


def add_rotation_overrides(cast, start: int, count: int) -> None:
    """Overrides of team payments' rotation, by the tenant admin."""
    from monitoring.models import Rotation
    from monitoring.oncall_services import create_override
    from tests.incident_support import rotation

    made = Rotation.objects.filter(team=cast.payments).first() or rotation(cast.payments, [cast.operator, cast.admin])
    now = timezone.now()
    for i in range(start, start + count):
        create_override(
            actor=cast.admin,
            rotation=made,
            user=[cast.operator, cast.admin][i % 2],
            starts_at=now + timezone.timedelta(hours=i),
            ends_at=now + timezone.timedelta(hours=i + 1),
            reason=f"override {i}",
        )


def _govern(cast, target_kind: str, environment, /, **definition) -> None:
    """Create a ``target_kind`` rule through change control: proposed by the tenant admin, approved as the policy needs."""
    from approvals.services import approve_change, propose_config_change

    change = propose_config_change(
        actor=cast.admin,
        kind=target_kind,
        action="create",
        environment=environment,
        definition=definition,
        justification="bulk rule",
    )
    for approver in [cast.approver, cast.approver2][: change.required_approvals]:
        change = approve_change(change, actor=approver)
    assert change.status == ChangeStatus.APPLIED, change.failure_reason


def add_alert_rules(cast, start: int, count: int) -> None:
    """Alert rules through change control: a job's (in its environment) and team payments' in dev, in turn."""
    for i in range(start, start + count):
        if i % 2:
            _govern(cast, "alert_rule", cast.dev, name=f"rule-{i}", kind="run_failed", scope="team", team="payments")
        else:
            job = cast.bulk_job(i)
            _govern(
                cast,
                "alert_rule",
                job.environment,
                name=f"rule-{i}",
                kind="run_failed",
                scope="job",
                job=job.name,
                severity="critical",
            )


def add_recovery_rules(cast, start: int, count: int) -> None:
    """Recovery rules through change control: a job's retry, a team's remediation by another job, in turn."""
    for i in range(start, start + count):
        job = _bulk_dev_job(cast, i)
        if i % 2:
            definition = {"team": "payments", "action": "remediate", "remediation_job": job.name}
        else:
            definition = {"job": job.name, "action": "retry", "retry_attempts": 2}
        _govern(cast, "recovery_rule", cast.dev, name=f"recovery-{i}", exit_codes=[3], **definition)


def add_recovery_actions(cast, start: int, count: int) -> None:
    """A failed run of as many jobs in dev, each retried by team payments' recovery rule."""
    from monitoring import recovery
    from monitoring.models import RecoveryRule

    if not RecoveryRule.objects.filter(name="retry-payments").exists():
        _govern(
            cast,
            "recovery_rule",
            cast.dev,
            name="retry-payments",
            team="payments",
            exit_codes=[3],
            action="retry",
            retry_attempts=1,
            retry_delay_seconds=60,
        )
    now = timezone.now()
    for i in range(start, start + count):
        job = _bulk_dev_job(cast, i)
        run = Run.objects.create(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timezone.timedelta(minutes=i),
            status="failed",
            exit_code=3,
            job_version=1,
            definition=job.definition(),
        )
        assert [action.outcome for action in recovery.evaluate(run)] == ["done"]


def add_channels(cast, start: int, count: int) -> None:
    """Email channels, tenant-wide and team payments' in turn, by the tenant admin."""
    for i in range(start, start + count):
        _mail_channel(cast, i, team=[None, cast.payments][i % 2])


def add_notifications(cast, start: int, count: int) -> None:
    """Messages to a person and to a channel through the outbox."""
    from notifications.outbox import enqueue
    from tests.incident_support import with_email

    (operator,) = with_email(cast.operator)
    for i in range(start, start + count):
        enqueue(
            tenant_id=cast.acme.pk,
            subject=f"notification {i}",
            body="A run failed.",
            dedupe_key=f"bulk:{i}",
            users=[operator],
            channels=[_mail_channel(cast, i)],
            source="test",
        )


API_BUILDERS = {
    "jobs": add_jobs,
    "runs": add_jobs,
    "change-requests": add_changes,
    "audit-events": add_events,
    "maintenance-windows": add_config_objects,
    "holiday-calendars": add_config_objects,
    "pools": add_config_objects,
    "tenants": None,  # the cast's tenants: a list that does not grow with a tenant's rows
    "teams": None,
    "environments": add_environments_with_rules,
    "service-accounts": add_accounts_and_tokens,
    "auth/tokens": add_accounts_and_tokens,
    "incidents": add_incidents,
    "silences": add_silences,
    "escalation-policies": add_escalation_policies,
    "escalation-routes": add_escalation_routes,
    "rotations": add_rotations,
    "rotation-overrides": add_rotation_overrides,
    "alert-rules": add_alert_rules,
    "recovery-rules": add_recovery_rules,
    "recovery-actions": add_recovery_actions,
    "notification-channels": add_channels,
    "notifications": add_notifications,
}


def test_every_api_list_has_a_builder():
    from governor.api_urls import router

    assert {prefix for prefix, _viewset, _basename in router.registry} == set(API_BUILDERS)


@pytest.mark.parametrize("resource", sorted(API_BUILDERS))
def test_every_api_list_does_not_grow_queries_with_rows(client, cast, django_assert_max_num_queries, resource):
    builder = API_BUILDERS[resource]
    if builder is None:
        pytest.skip("this list holds the cast's fixed rows")
    client.login(username=cast.admin.username, password=PASSWORD)
    url = f"/api/v1/{resource}/"
    builder(cast, 0, 3)
    small = count_queries(client, url)
    builder(cast, 3, 20)
    with django_assert_max_num_queries(small, info=resource):
        response = client.get(url)
    assert response.status_code == 200
    assert response.json()["count"] >= 20
