"""List endpoints: filters, ordering, pagination, UTC datetimes, and query counts that do not grow with rows."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import approve_change
from governance import audit
from governance.models import AuditAction
from jobs.models import Job, JobStatus, Run, RunStatus, TriggerKind
from tests.api_support import client_for


def add_rows(cast, start: int, stop: int) -> None:
    """Jobs, runs, change requests (with a review) and audit events, numbered start..stop-1."""
    now = timezone.now()
    teams = [cast.payments, cast.data]
    envs = [cast.dev, cast.staging, cast.prod]
    for i in range(start, stop):
        team, env = teams[i % 2], envs[i % 3]
        job = Job.objects.create(
            tenant=cast.acme,
            team=team,
            environment=env,
            name=f"{team.slug}.bulk.job-{i}",
            command=["/bin/true"],
            cron="*/5 * * * *",
            timezone="UTC",
        )
        Run.objects.create(
            job=job,
            tenant=cast.acme,
            scheduled_for=now - timedelta(minutes=i),
            job_version=1,
            definition=job.definition(),
            trigger=TriggerKind.MANUAL,
            triggered_by=cast.operator,
            status=RunStatus.SUCCEEDED,
            output="x" * 100,
        )
        change = ChangeRequest.objects.create(
            tenant=cast.acme,
            team=team,
            environment=env,
            job=job,
            action="update",
            author=cast.author,
            justification="bulk",
            status=ChangeStatus.SUBMITTED,
            required_approvals=2,
            proposed=job.definition(),
            base_definition=job.definition(),
            base_version=1,
        )
        Review.objects.create(
            change_request=change, revision=1, reviewer=cast.approver, change_author=cast.author, decision="approve"
        )
        audit.record(AuditAction.JOB_UPDATED, actor=cast.author, obj=job)


ENDPOINTS = ["jobs", "runs", "change-requests", "audit-events", "teams", "environments"]


@pytest.mark.parametrize("user", ["viewer", "superuser"])
def test_list_query_count_does_not_grow_with_rows(cast, django_assert_max_num_queries, user):
    client = client_for(getattr(cast, user))
    add_rows(cast, 0, 5)
    few = {}
    for resource in ENDPOINTS:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"/api/v1/{resource}/").status_code == 200
        few[resource] = len(captured)
        # Change requests count only the approvals that still hold: +3 queries per page (the current
        # reviews, their reviewers' grants, the identities behind them), whatever the number of rows.
        # Runs and audit events load a page's keys first (one query): the same on page 1 as on page 10,000.
        bound = 8 if resource == "change-requests" else 7 if resource in ("runs", "audit-events") else 6
        assert len(captured) <= bound, (resource, [q["sql"] for q in captured.captured_queries])
    add_rows(cast, 5, 50)
    for resource in ENDPOINTS:
        with django_assert_max_num_queries(few[resource], info=resource):
            response = client.get(f"/api/v1/{resource}/")
        assert response.status_code == 200
        if resource not in ("teams", "environments"):
            assert response.json()["count"] >= 50, resource


def test_change_request_detail_queries_do_not_grow_with_reviews(cast, django_assert_max_num_queries):
    change = cast.propose_job(justification="x")
    client = client_for(cast.viewer)
    approve_change(change, actor=cast.approver)
    with CaptureQueriesContext(connection) as one:
        client.get(f"/api/v1/change-requests/{change.pk}/")
    approve_change(change, actor=cast.approver2)
    with django_assert_max_num_queries(len(one)):
        data = client.get(f"/api/v1/change-requests/{change.pk}/").json()
    assert data["approvals"] == 2 and len(data["reviews"]) == 2 and data["status"] == "applied"


def test_jobs_filter_search_and_order(cast):
    add_rows(cast, 0, 6)
    Job.objects.filter(name="data.bulk.job-1").update(status=JobStatus.PAUSED, criticality="critical")
    client = client_for(cast.viewer)

    def names(query):
        response = client.get(f"/api/v1/jobs/{query}")
        assert response.status_code == 200, response.content
        return [row["name"] for row in response.json()["results"]]

    assert names("?team=data") == ["data.bulk.job-1", "data.bulk.job-3", "data.bulk.job-5"]
    assert names(f"?team={cast.data.pk}&environment=prod") == ["data.bulk.job-5"]
    assert names("?environment=dev&ordering=-name") == ["payments.bulk.job-0", "data.bulk.job-3"]
    assert names("?status=paused") == ["data.bulk.job-1"]
    assert names("?criticality=critical&criticality=high") == ["data.bulk.job-1"]
    assert names("?search=job-4") == ["payments.bulk.job-4"]
    assert names(f"?tenant={cast.acme.pk}&search=BULK.JOB-2") == ["payments.bulk.job-2"]


def test_runs_and_change_requests_filters(cast):
    add_rows(cast, 0, 3)
    job = Job.objects.get(name="payments.bulk.job-0")
    client = client_for(cast.viewer)
    runs = client.get(f"/api/v1/runs/?job={job.pk}&status=succeeded&trigger=manual").json()
    assert [row["job"]["name"] for row in runs["results"]] == ["payments.bulk.job-0"]
    assert runs["results"][0]["scheduled_for"].endswith("Z")
    assert "output" not in runs["results"][0]
    assert client.get("/api/v1/runs/?status=failed").json()["count"] == 0
    detail = client.get(runs["results"][0]["url"]).json()
    assert detail["output"] == "x" * 100 and detail["definition"]["name"] == "payments.bulk.job-0"

    changes = client.get(f"/api/v1/change-requests/?environment={cast.prod.pk}&status=submitted").json()
    assert [row["job"]["name"] for row in changes["results"]] == ["payments.bulk.job-2"]
    assert changes["results"][0]["approvals"] == 1


def test_mine_and_awaiting_my_review(cast):
    mine = cast.propose_job(justification="x")
    other = cast.propose_job(actor=cast.author2, environment=cast.staging, justification="y")
    draft = cast.propose_job(
        actor=cast.author2,
        team=cast.data,
        definition=cast.definition(name="data.warehouse.load"),
        justification="z",
        submit=False,
    )

    def ids(user, query):
        response = client_for(user).get(f"/api/v1/change-requests/{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(cast.author, "?mine=1") == {mine.pk}
    assert ids(cast.author2, "?mine=true") == {other.pk, draft.pk}
    assert ids(cast.approver, "?awaiting_my_review=1") == {mine.pk, other.pk}
    approve_change(mine, actor=cast.approver)
    assert ids(cast.approver, "?awaiting_my_review=1") == {other.pk}
    assert ids(cast.approver2, "?awaiting_my_review=1") == {mine.pk, other.pk}
    # Authors and viewers have nothing to review; the superuser never reviews its own.
    assert ids(cast.author2, "?awaiting_my_review=1") == set()
    assert ids(cast.viewer, "?awaiting_my_review=1") == set()
    assert ids(cast.globex_approver, "?awaiting_my_review=1") == set()


def test_audit_events_filters(cast):
    job = cast.make_job(cast.dev)
    client = client_for(cast.admin)
    now = timezone.now()

    def actions(query):
        response = client.get(f"/api/v1/audit-events/{query}")
        assert response.status_code == 200, response.content
        return [row["action"] for row in response.json()["results"]]

    assert actions(f"?object=jobs.job:{job.pk}") == [AuditAction.JOB_CREATED]
    assert set(actions("?actor=acme-author")) == {
        AuditAction.CHANGE_CREATED,
        AuditAction.CHANGE_SUBMITTED,
        AuditAction.JOB_CREATED,
        AuditAction.CHANGE_APPLIED,
    }
    assert actions("?action=job.created&action=change.applied") == [AuditAction.CHANGE_APPLIED, AuditAction.JOB_CREATED]
    until = (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    since = (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert AuditAction.JOB_CREATED in actions(f"?until={until}")
    assert actions(f"?since={since}") == []
    event = client.get(f"/api/v1/audit-events/?object=jobs.job:{job.pk}").json()["results"][0]
    assert event["object"] == f"jobs.job:{job.pk}" and event["actor"] == "acme-author"
    assert event["created_at"].endswith("Z") and len(event["hash"]) == 64


def test_pagination_shape(cast):
    add_rows(cast, 0, 3)
    response = client_for(cast.viewer).get("/api/v1/jobs/?page=1").json()
    assert set(response) == {"count", "next", "previous", "results"}
    assert response["count"] == 3 and response["next"] is None and response["previous"] is None
