"""The dashboard's counted panels (runs per hour and status, jobs per environment) show the same
numbers to a reader of the whole tenant and to one narrowed to a team (their own team's), whichever
plan each gets, and the page's query count stays pinned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from governance.access import restrict
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from jobs.models import Job, JobStatus, Run


def team_member(cast, name: str, roles=(Role.AUTHOR, Role.APPROVER)):
    """A user holding ``roles`` over team payments only (two roles over one team: one scope)."""
    user = get_user_model().objects.create_user(name, password=PASSWORD)
    for role in roles:
        grant_role(user, role, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return user


def plant_runs(cast) -> list[Run]:
    """Runs of a payments job and a data job around the chart's day: inside it at its first
    instant, in its middle and a minute ago; outside it a minute before it and in the future."""
    now = timezone.now()
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    payments = cast.bulk_job(1)
    data = Job.objects.create(
        tenant=cast.acme, team=cast.data, environment=cast.dev, **cast.definition(name="data.bulk.job-1")
    )
    runs = []
    for job in (payments, data):
        for at, status in [
            (start, "succeeded"),
            (start + timedelta(hours=5, minutes=30), "failed"),
            (start + timedelta(hours=5, minutes=31), "failed"),
            (start + timedelta(hours=5, minutes=40), "timed_out"),
            (now - timedelta(minutes=1), "running"),
            (start - timedelta(minutes=1), "succeeded"),
            (now + timedelta(hours=2), "scheduled"),
        ]:
            runs.append(
                Run.objects.create(
                    job=job,
                    tenant=cast.acme,
                    scheduled_for=at,
                    status=status,
                    job_version=1,
                    definition=job.definition(),
                )
            )
    return runs


def expected_chart(chart, now, runs) -> dict:
    """Per bar hour, per status: the runs that fall in it, counted here from the planted rows."""
    hours = [bar["hour"] for bar in chart["bars"]]
    counts: dict = {}
    for run in runs:
        if run.scheduled_for > now:
            continue
        for hour in hours:
            if hour <= run.scheduled_for < hour + timedelta(hours=1):
                counts.setdefault(hour, {}).setdefault(run.status, 0)
                counts[hour][run.status] += 1
    return counts


def shown_chart(chart) -> dict:
    return {bar["hour"]: {s["status"]: s["n"] for s in bar["segments"]} for bar in chart["bars"] if bar["segments"]}


@pytest.mark.parametrize("reader", ["viewer", "team"])
def test_the_chart_counts_each_hour_and_status_the_reader_may_see(client, cast, reader):
    runs = plant_runs(cast)
    user = cast.viewer if reader == "viewer" else team_member(cast, "payments-member")
    client.login(username=user.username, password=PASSWORD)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    chart, now = response.context["chart"], response.context["now"]
    visible = [r for r in runs if reader == "viewer" or r.job.team_id == cast.payments.pk]
    expected = expected_chart(chart, now, visible)
    assert shown_chart(chart) == expected
    # Both jobs' day: 5 runs each in it (the first instant, three in the sixth hour, a minute ago).
    assert chart["total"] == (10 if reader == "viewer" else 5)
    assert chart["failed"] == (6 if reader == "viewer" else 3)  # failed and timed out
    assert f"{chart['total']} runs in total" in response.content.decode()


@pytest.mark.parametrize("reader", ["viewer", "team"])
def test_jobs_per_environment_count_enabled_and_paused_jobs_the_reader_may_see(client, cast, reader):
    for i in range(6):
        cast.bulk_job(i, status=JobStatus.PAUSED if i in (0, 4) else JobStatus.ENABLED)
    cast.bulk_job(7, status=JobStatus.DELETED)
    Job.objects.create(tenant=cast.acme, team=cast.data, environment=cast.dev, **cast.definition(name="data.x.y"))
    user = cast.viewer if reader == "viewer" else team_member(cast, "payments-member", roles=(Role.VIEWER,))
    client.login(username=user.username, password=PASSWORD)
    environments = client.get(reverse("dashboard")).context["environments"]
    shown = {env["slug"]: (env["enabled"], env["paused"], env["total"]) for env in environments}
    # bulk jobs 0..5 go to dev, staging, prod in turn; 0 and 4 are paused; 7 is deleted.
    dev_enabled = 1 + (1 if reader == "viewer" else 0)  # bulk 3, and the data team's job
    assert shown == {"dev": (dev_enabled, 1, dev_enabled + 1), "staging": (1, 1, 2), "prod": (2, 0, 2)}
    assert [env["slug"] for env in environments] == ["dev", "staging", "prod"]


def test_two_roles_over_one_team_restrict_as_one_condition(cast):
    """An author who also approves in one team is filtered like a user with one role there: the same
    condition written twice made SQLite read every run of every job (seconds per page)."""
    both = team_member(cast, "both-roles", roles=(Role.AUTHOR, Role.OPERATOR))
    one = team_member(cast, "one-role", roles=(Role.AUTHOR,))
    runs_both, runs_one = restrict(Run.objects.all(), both), restrict(Run.objects.all(), one)
    assert str(runs_both.query) == str(runs_one.query)
    # A tenant-wide grant covers a narrowed one of the same tenant.
    grant_role(both, Role.VIEWER, tenant=cast.acme, actor=SYSTEM)
    both = get_user_model().objects.get(pk=both.pk)
    assert str(restrict(Run.objects.all(), both).query) == str(restrict(Run.objects.all(), cast.viewer).query)


@pytest.mark.parametrize(("user", "ceiling"), [("admin", 21), ("approver", 23), ("viewer", 20)])
def test_the_dashboard_query_count_stays_pinned(client, cast, user, ceiling):
    """The grants come in one query (one fewer on every page), the nav badge shares the review queue's
    count (one fewer for an approver), the now panel reads the rows of all its groups at once; the
    jobs per environment take one query more (their counts from an index alone, then the few
    environments). A new panel must pay for itself elsewhere."""
    plant_runs(cast)
    cast.propose_job()
    client.login(username=getattr(cast, user).username, password=PASSWORD)
    client.get(reverse("dashboard"))
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(reverse("dashboard")).status_code == 200
    assert len(ctx.captured_queries) <= ceiling, len(ctx.captured_queries)


def test_closed_hours_are_kept_a_minute_and_the_last_two_are_always_counted(client, cast, monkeypatch):
    from jobs import run_counts

    plant_runs(cast)
    client.login(username=cast.viewer.username, password=PASSWORD)
    first = client.get(reverse("dashboard")).context["chart"]
    assert first["total"] == 10
    job = Job.objects.filter(tenant=cast.acme, team=cast.payments).order_by("pk").first()
    now = timezone.now()
    for at in (now - timedelta(hours=10), now - timedelta(seconds=5)):
        Run.objects.create(
            job=job, tenant=cast.acme, scheduled_for=at, status="failed", job_version=1, definition=job.definition()
        )
    # Within the minute: the run of ten hours ago is not counted yet, the one of a moment ago is.
    kept = client.get(reverse("dashboard")).context["chart"]
    assert (kept["total"], kept["failed"]) == (11, first["failed"] + 1)
    # Past it, every hour is counted again.
    monkeypatch.setattr(run_counts, "CLOSED_TTL", 0.0)
    fresh = client.get(reverse("dashboard")).context["chart"]
    assert (fresh["total"], fresh["failed"]) == (12, first["failed"] + 2)
    # Another reader's scope is its own entry: a team member sees only their team's hours.
    member = team_member(cast, "payments-member-2")
    client.login(username=member.username, password=PASSWORD)
    theirs = client.get(reverse("dashboard")).context["chart"]
    assert theirs["total"] == 5 + 2  # their job's five planted runs and the two above
