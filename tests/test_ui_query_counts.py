"""List pages run the same number of queries for 5 rows as for 30."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.models import ChangeRequest, ChangeStatus, Review
from conftest import PASSWORD
from governance import audit
from governance.models import AuditAction
from jobs.models import Job, Run


def add_jobs(cast, start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        env = [cast.dev, cast.staging, cast.prod][i % 3]
        job = Job.objects.create(
            tenant=cast.acme,
            team=cast.payments,
            environment=env,
            **cast.definition(name=f"payments.bulk.job-{i}"),
            next_fire_at=now,
        )
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


def count_queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    ("url", "params", "builder", "user"),
    [
        ("job_list", {}, add_jobs, "viewer"),
        ("change_list", {"tab": "all"}, add_changes, "approver"),
        ("change_list", {"tab": "review"}, add_changes, "approver"),
        ("audit_list", {}, add_events, "admin"),
        ("dashboard", {}, add_jobs, "approver"),
        ("dashboard", {}, add_changes, "approver"),
        ("run_list", {}, add_jobs, "viewer"),
        ("run_list", {"status": "failed", "trigger": "schedule"}, add_jobs, "viewer"),
        ("now", {}, add_jobs, "viewer"),
        ("now", {}, add_active_runs, "viewer"),
        ("now_panel", {}, add_active_runs, "viewer"),
        ("now_board", {}, add_active_runs, "viewer"),
        ("dashboard", {}, add_active_runs, "viewer"),
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
