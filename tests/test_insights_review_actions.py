"""What the review pages make happen, and what they cost: "propose" opens a draft change request as
the user (authors only, nothing applied); opening a run notes that its output was read (at most once
an hour); each page runs as many queries for 40 jobs as for 10."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.models import ChangeRequest, ChangeStatus
from governance.models import AuditAction, AuditEvent
from insights.models import InsightCache
from jobs.models import Job, Run
from tests.insights_review_world import add_healthy, build


@pytest.fixture
def world(cast):
    return build(cast, healthy=10)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def propose_url(job, api: bool = False) -> str:
    name = "api-insights-rightsizing-propose" if api else "insights_rightsizing_propose"
    return reverse(name, kwargs={"pk": job.pk})


# --- propose ----------------------------------------------------------------------------------------


def test_an_author_proposes_the_recommendation_as_a_draft_change_nothing_applied(world, cast):
    job = world.job("payments.plant.oversized")
    page = client_for(cast.author).get(reverse("insights_rightsizing")).content.decode()
    # The page's form carries the recommended values.
    assert f'action="{propose_url(job)}"' in page and 'name="memory_mb" value="512"' in page
    response = client_for(cast.author).post(propose_url(job), {"memory_mb": "512"})
    change = ChangeRequest.objects.get(job=job)
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", kwargs={"pk": change.pk})
    assert change.status == ChangeStatus.DRAFT and change.author == cast.author
    assert change.proposed["limits"] == {"memory_mb": 512, "cpu_seconds": 180}
    assert change.proposed["timeout_seconds"] == job.timeout_seconds
    assert "max RSS" in change.justification and "4096 MB → 512 MB" in change.justification
    job.refresh_from_db()
    assert job.limits["memory_mb"] == 4096 and job.version == 1
    assert AuditEvent.objects.filter(action=AuditAction.CHANGE_CREATED, actor=cast.author).exists()


def test_a_proposal_in_an_ungoverned_environment_still_waits_for_its_author_to_submit(world, cast):
    job = world.job("payments.plant.slow-timeout")
    assert not job.environment.governed
    response = client_for(cast.author).post(propose_url(job), {"timeout_seconds": "300"})
    assert response.status_code == 302
    change = ChangeRequest.objects.get(job=job)
    assert change.status == ChangeStatus.DRAFT and change.proposed["timeout_seconds"] == 300
    job.refresh_from_db()
    assert job.timeout_seconds == 3600


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_lesser_roles_are_refused_and_the_refusal_is_recorded(world, cast, role):
    job = world.job("payments.plant.oversized")
    user = getattr(cast, role)
    response = client_for(user).post(propose_url(job), {"memory_mb": "512"})
    assert response.status_code == 403
    api = client_for(user).post(propose_url(job, api=True), {"memory_mb": 512}, content_type="application/json")
    assert api.status_code == 403
    assert not ChangeRequest.objects.filter(job=job).exists()
    assert AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED, actor=user, tenant=cast.acme).count() == 2
    # The page offers no button to those who may not propose.
    page = client_for(user).get(reverse("insights_rightsizing")).content.decode()
    assert propose_url(job) not in page


def test_another_tenants_job_is_not_found(world, cast):
    job = world.job("ops.plant.oversized")
    assert client_for(cast.author).post(propose_url(job), {"memory_mb": "384"}).status_code == 404
    assert (
        client_for(cast.author)
        .post(propose_url(job, api=True), {"memory_mb": 384}, content_type="application/json")
        .status_code
        == 404
    )
    assert not ChangeRequest.objects.filter(job=job).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memory_mb": "8"}, "memory_mb"),
        ({"memory_mb": "lots"}, "memory_mb"),
        ({"cpu_seconds": "0"}, "cpu_seconds"),
        ({"timeout_seconds": "-5"}, "timeout_seconds"),
        ({}, "limits"),
    ],
)
def test_a_bad_proposal_answers_400_naming_the_field_and_proposes_nothing(world, cast, body, field):
    job = world.job("payments.plant.oversized")
    response = client_for(cast.author).post(propose_url(job), body)
    assert response.status_code == 400
    assert f"{field}: " in response.content.decode() and "Nothing was proposed" in response.content.decode()
    api = client_for(cast.author).post(propose_url(job, api=True), body, content_type="application/json")
    assert api.status_code == 400 and list(api.json()) == [field]
    assert not ChangeRequest.objects.filter(job=job).exists()


def test_the_api_proposes_too(world, cast):
    job = world.job("payments.plant.slow-timeout")
    response = client_for(cast.author).post(
        propose_url(job, api=True), {"timeout_seconds": 300, "justification": "INC-7"}, content_type="application/json"
    )
    assert response.status_code == 201
    change = ChangeRequest.objects.get(pk=response.json()["change_request"])
    assert response.json()["status"] == "draft" and change.justification == "INC-7"
    assert change.proposed["timeout_seconds"] == 300


# --- who reads the output ----------------------------------------------------------------------------


def test_opening_a_run_notes_its_output_was_read_at_most_once_an_hour(world, cast):
    job = world.job("payments.plant.unread")
    run = Run.objects.filter(job=job).first()
    zombies = {
        (f["job"], f["kind"]) for f in client_for(cast.viewer).get(reverse("api-insights-zombies")).json()["findings"]
    }
    assert ("payments.plant.unread", "unread_output") in zombies
    client = client_for(cast.viewer)
    assert client.get(reverse("run_detail", kwargs={"pk": run.pk})).status_code == 200
    first = Job.objects.get(pk=job.pk).last_output_view_at
    assert first is not None and timezone.now() - first < timedelta(seconds=30)
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse("run_detail", kwargs={"pk": run.pk}))
    assert Job.objects.get(pk=job.pk).last_output_view_at == first
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "jobs_job" in q["sql"]]
    # An hour later the next view writes again; the API's run detail counts as a read too.
    Job.objects.filter(pk=job.pk).update(last_output_view_at=first - timedelta(hours=2))
    assert client.get(reverse("api-run-detail", kwargs={"pk": run.pk})).status_code == 200
    assert Job.objects.get(pk=job.pk).last_output_view_at > first
    zombies = {(f["job"], f["kind"]) for f in client.get(reverse("api-insights-zombies")).json()["findings"]}
    assert ("payments.plant.unread", "unread_output") not in zombies


def test_an_alert_rule_on_the_job_means_someone_watches_its_output(world, cast):
    try:
        AlertRule = apps.get_model("monitoring", "AlertRule")
    except LookupError:
        pytest.skip("monitoring.AlertRule is not part of this tree yet")
    job = world.job("payments.plant.unread")
    AlertRule.objects.create(
        tenant=cast.acme,
        name="unread-failed",
        scope="job",
        job=job,
        team=job.team,
        environment=job.environment,
        kind="run_failed",
    )
    zombies = {
        (f["job"], f["kind"]) for f in client_for(cast.viewer).get(reverse("api-insights-zombies")).json()["findings"]
    }
    assert ("payments.plant.unread", "unread_output") not in zombies


# --- query counts -------------------------------------------------------------------------------------

PAGES = ["insights_rightsizing", "insights_zombies", "insights_overhead"]
APIS = ["api-insights-rightsizing", "api-insights-zombies", "api-insights-overhead"]


def _queries(client, name: str, *, fresh: bool = True) -> int:
    """Queries of one request; ``fresh``: with the page's cached results dropped first, so the page is
    worked out (and stored) as the first reader's is."""
    if fresh:
        InsightCache.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(name))
    assert response.status_code == 200
    return len(queries.captured_queries)


def test_each_page_runs_as_many_queries_for_40_jobs_as_for_10(world, cast):
    client = client_for(cast.author)
    before = {name: _queries(client, name) for name in [*PAGES, *APIS]}
    add_healthy(world, 100, 30)
    assert Job.objects.filter(tenant=cast.acme).count() >= 40
    after = {name: _queries(client, name) for name in [*PAGES, *APIS]}
    assert after == before
    # Working a page out and storing it (the cache's read and write included).
    assert max(before.values()) <= 24, before
    # A tenant-wide reader's next request reads the stored page.
    for name in PAGES:
        _queries(client, name)
        assert _queries(client, name, fresh=False) <= 10, name
