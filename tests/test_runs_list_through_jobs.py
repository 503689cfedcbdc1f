"""Runs lists filtered through the run's job (environment, team, a grant narrowed to a team or an
environment): the same rows in the same order as the join they replace, whichever plan
``jobs.run_scope`` chooses (issues 17 and 20)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conftest import PASSWORD
from governance.actors import SYSTEM
from governance.models import Role
from governance.services import grant_role
from jobs import run_scope
from jobs.filters import RunFilter
from jobs.models import Job, Run, RunStatus, TriggerKind
from jobs.run_scope import restrict_runs
from tests.api_support import client_for

# Which way run_scope reads the job side: a few jobs' runs job by job, or the tenant's runs
# newest first testing each run's job (forced here by lowering the thresholds).
PLANS = {"few": (500, 20_000), "many_jobs": (0, 20_000), "many_runs": (500, 0)}


@pytest.fixture(params=sorted(PLANS))
def plan(request, monkeypatch):
    few_jobs, few_runs = PLANS[request.param]
    monkeypatch.setattr(run_scope, "FEW_JOBS", few_jobs)
    monkeypatch.setattr(run_scope, "FEW_RUNS", few_runs)
    return request.param


def scoped_user(cast, name, **scope):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(name, password=PASSWORD)
    grant_role(user, Role.VIEWER, tenant=cast.acme, actor=SYSTEM, **scope)
    return user


def world(cast) -> None:
    """Jobs of both acme teams in each environment, globex's, and 70 runs of them: some at the same
    instant (the id orders them), manual and scheduled, failed and succeeded, over two days."""
    now = timezone.now().replace(microsecond=0)
    jobs = [
        cast.make_job(env, team=team, name=f"{team.slug}.list.job-{env.slug}")
        for env in (cast.dev, cast.staging, cast.prod)
        for team in (cast.payments, cast.data)
    ]
    jobs.append(cast.make_job(cast.globex_prod))
    for i in range(70):
        job = jobs[(i * 5) % len(jobs)]
        when = now - timedelta(hours=i // 2)  # two runs of different jobs per instant
        Run.objects.create(
            job=job,
            tenant_id=job.tenant_id,
            scheduled_for=when,
            status=RunStatus.FAILED if i % 3 == 0 else RunStatus.SUCCEEDED,
            trigger=TriggerKind.MANUAL if i % 4 == 1 else TriggerKind.SCHEDULE,
            job_version=job.version,
            definition=job.definition(),
        )


def expected(user_jobs: set[int], params: dict) -> list[int]:
    """The ids the list must show, computed in Python from every run."""
    rows = []
    for run in Run.objects.select_related("job__team", "job__environment"):
        job = run.job
        if job.pk not in user_jobs:
            continue
        if "environment" in params and params["environment"] not in (job.environment.slug, str(job.environment_id)):
            continue
        if "team" in params and params["team"] not in (job.team.slug, str(job.team_id)):
            continue
        if "trigger" in params and run.trigger != params["trigger"]:
            continue
        if "status" in params and run.status != params["status"]:
            continue
        if "since" in params and run.scheduled_for < params["since_at"]:
            continue
        rows.append(run)
    rows.sort(key=lambda r: (r.scheduled_for, r.pk), reverse=True)
    return [r.pk for r in rows]


def ui_ids(client, params: dict) -> tuple[list[int], str]:
    response = client.get(reverse("run_list"), params)
    assert response.status_code == 200, response.content[:500]
    html = response.content.decode()
    return [int(pk) for pk in re.findall(r'<tr data-run="(\d+)">', html)], html


CASES = [
    {"environment": "prod"},
    {"environment": "dev", "trigger": "manual"},
    {"environment": "prod", "status": "failed", "since": True},
    {"team": "data"},
    {"team": "payments", "trigger": "schedule", "status": "succeeded"},
    {"team": "data", "environment": "staging", "since": True},
    {},
]


@pytest.mark.parametrize("who", ["admin", "team_viewer", "env_viewer"])
def test_lists_filtered_through_the_job_show_exactly_the_joined_rows_in_order(client, cast, plan, who):
    world(cast)
    user = {
        "admin": lambda: cast.admin,
        "team_viewer": lambda: scoped_user(cast, "data-viewer", team=cast.data),
        "env_viewer": lambda: scoped_user(cast, "prod-viewer", environment=cast.prod),
    }[who]()
    visible = {
        "admin": Job.objects.filter(tenant=cast.acme),
        "team_viewer": Job.objects.filter(team=cast.data),
        "env_viewer": Job.objects.filter(tenant=cast.acme, environment=cast.prod),
    }[who]
    visible_ids = set(visible.values_list("pk", flat=True))
    client.login(username=user.username, password=PASSWORD)
    api = client_for(user)
    since_at = timezone.now().replace(microsecond=0) - timedelta(hours=20)
    for case in CASES + [{"environment": str(cast.prod.pk)}, {"team": str(cast.data.pk), "trigger": "manual"}]:
        params = {k: v for k, v in case.items() if k != "since"}
        if case.get("since"):
            params["since"] = since_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        want = expected(visible_ids, {**params, "since_at": since_at})
        # The UI: 50 a page, the count beside the pages.
        shown, html = ui_ids(client, params)
        assert shown == want[:50], (case, plan)
        if len(want) > 50:
            assert f"{len(want)} total" in html
            assert ui_ids(client, {**params, "page": 2})[0] == want[50:100]
        # The API: the same rows, in the same order, and the same count.
        body = api.get("/api/v1/runs/", params).json()
        assert [row["id"] for row in body["results"]] == want[:50], (case, plan)
        assert body["count"] == len(want)
        if len(want) > 50:
            more = api.get("/api/v1/runs/", {**params, "page": 2}).json()
            assert [row["id"] for row in more["results"]] == want[50:100]


def test_a_job_filter_combined_with_the_environment_lists_that_jobs_runs_or_none(client, cast, plan):
    world(cast)
    job = Job.objects.get(name="payments.list.job-prod")
    client.login(username=cast.admin.username, password=PASSWORD)
    mine = list(Run.objects.filter(job=job).order_by("-scheduled_for", "-id").values_list("pk", flat=True))
    assert mine
    assert ui_ids(client, {"job": job.pk, "environment": "prod"})[0] == mine
    assert ui_ids(client, {"job": job.pk, "environment": "dev"})[0] == []
    api = client_for(cast.admin)
    assert [r["id"] for r in api.get("/api/v1/runs/", {"job": job.pk, "environment": "prod"}).json()["results"]] == mine


def test_a_filter_matching_no_job_lists_nothing(client, cast, plan):
    world(cast)
    client.login(username=cast.admin.username, password=PASSWORD)
    assert ui_ids(client, {"team": "nobody"})[0] == []
    assert client_for(cast.admin).get("/api/v1/runs/", {"environment": "nowhere"}).json()["count"] == 0


def test_a_team_viewer_sees_no_run_of_another_team_or_tenant_whatever_the_filter(client, cast, plan):
    world(cast)
    viewer = scoped_user(cast, "data-viewer", team=cast.data)
    client.login(username=viewer.username, password=PASSWORD)
    api = client_for(viewer)
    data_runs = set(Run.objects.filter(job__team=cast.data).values_list("pk", flat=True))
    for params in ({}, {"team": "payments"}, {"team": cast.ops.pk}, {"environment": cast.globex_prod.pk}):
        shown = set(ui_ids(client, params)[0]) | {r["id"] for r in api.get("/api/v1/runs/", params).json()["results"]}
        assert shown <= data_runs, params
    assert set(ui_ids(client, {})[0]) == data_runs


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_filtered_lists_do_not_grow_queries_with_rows(
    client, cast, monkeypatch, django_assert_max_num_queries, plan_name
):
    monkeypatch.setattr(run_scope, "FEW_JOBS", PLANS[plan_name][0])
    monkeypatch.setattr(run_scope, "FEW_RUNS", PLANS[plan_name][1])
    from tests.test_ui_query_counts import add_jobs

    viewer = scoped_user(cast, "payments-viewer", team=cast.payments)
    ui, api = client, client_for(viewer)
    ui.login(username=viewer.username, password=PASSWORD)
    pages = [
        (ui, reverse("run_list"), {}),
        (ui, reverse("run_list"), {"environment": "prod", "trigger": "schedule"}),
        (ui, reverse("run_list"), {"team": "payments", "status": "failed"}),
        (api, "/api/v1/runs/", {}),
        (api, "/api/v1/runs/", {"environment": "prod", "trigger": "schedule"}),
    ]
    add_jobs(cast, 0, 5)
    small = []
    for who, url, params in pages:
        with CaptureQueriesContext(connection) as ctx:
            assert who.get(url, params).status_code == 200
        small.append(len(ctx.captured_queries))
    add_jobs(cast, 5, 25)
    for (who, url, params), count in zip(pages, small, strict=True):
        with django_assert_max_num_queries(count):
            assert who.get(url, params).status_code == 200


# --- the plans ------------------------------------------------------------------------------


def key_query_plan(user, params: dict) -> str:
    request = RequestFactory().get("/runs/", params)
    request.user = user
    runs = restrict_runs(Run.objects.order_by("-scheduled_for", "-id"), user)
    filterset = RunFilter(request.GET, queryset=runs, request=request)
    assert filterset.is_valid(), filterset.errors
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # A test database is small enough to read whole; the plan asked about is the one with indexes.
            cursor.execute("SET LOCAL enable_seqscan = off")
    return filterset.qs.values("pk")[:50].explain()


# sqlite_stat1 of the bench database (10,000 jobs in 3 environments and 3 teams, 1,000,000 runs, two
# triggers), by index: rows, then rows per distinct value of each leading column. SQLite plans from
# these alone (no histogram in this build): the average trigger matches 500,000 runs.
BENCH_STAT1 = {
    ("jobs_run", "run_tenant_trigger_recent"): "1000000 1000000 500000 1 1",
    ("jobs_run", "run_tenant_status_recent"): "1000000 1000000 200000 1 1",
    ("jobs_run", "run_tenant_recent_state"): "1000000 1000000 1 1 1",
    ("jobs_run", "run_job_recent"): "1000000 100 1",
    ("jobs_run", "sqlite_autoindex_jobs_run_%"): "1000000 100 1 1",
    ("jobs_job", "jobs_job_environment_id_%"): "10000 3334",
    ("jobs_job", "jobs_job_team_id_%"): "10000 3334",
}


def bench_statistics(cursor) -> None:
    """Give the test database the bench's statistics and have SQLite read them again."""
    for (table, index), stat in BENCH_STAT1.items():
        cursor.execute("DELETE FROM sqlite_stat1 WHERE tbl = %s AND idx LIKE %s", [table, index])
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE %s", [index])
        for (name,) in cursor.fetchall():
            cursor.execute("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (%s, %s, %s)", [table, name, stat])
    cursor.execute("ANALYZE sqlite_schema")


def test_a_dense_job_filter_walks_a_run_list_index_and_a_sparse_one_reads_its_jobs_runs(cast, monkeypatch):
    """The environment of a third of the jobs is tested on each run from a run-list index (which
    carries the job id); the three jobs of a small team are read job by job."""
    monkeypatch.setattr(run_scope, "FEW_JOBS", 10)
    now = timezone.now().replace(microsecond=0)
    runs = []
    for i in range(60):
        job = cast.make_job([cast.dev, cast.staging, cast.prod][i % 3], name=f"payments.plan.job-{i}")
        runs += [
            Run(
                job=job,
                tenant=cast.acme,
                scheduled_for=now - timedelta(minutes=k * 60 + i),
                trigger=TriggerKind.MANUAL if k % 10 == 0 else TriggerKind.SCHEDULE,
                job_version=1,
                definition=job.definition(),
            )
            for k in range(30)
        ]
    Run.objects.bulk_create(runs)
    small = scoped_user(cast, "small-viewer", team=cast.data)
    for i in range(3):
        job = cast.make_job(cast.prod, team=cast.data, name=f"data.plan.job-{i}")
        Run.objects.bulk_create(
            Run(job=job, tenant=cast.acme, scheduled_for=now - timedelta(hours=k), job_version=1, definition={})
            for k in range(30)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        if connection.vendor == "sqlite":
            bench_statistics(cursor)

    dense = key_query_plan(cast.admin, {"environment": "prod", "trigger": "manual"})
    assert "run_tenant_trigger_recent" in dense and "run_job_recent" not in dense, dense
    dense = key_query_plan(cast.admin, {"environment": "prod"})
    assert "run_tenant_recent_state" in dense and "run_job_recent" not in dense, dense

    for user, params in ((cast.admin, {"team": "data"}), (small, {})):
        sparse = key_query_plan(user, params)
        # Any index leading with the job: run_job_recent (or the unique slot on PostgreSQL).
        assert "run_job_recent" in sparse or "run_unique_slot" in sparse, sparse
        assert "run_tenant_" not in sparse, sparse


def test_grants_narrowed_in_two_tenants_list_what_restrict_lets_through(client, cast, plan):
    from governance.access import restrict

    world(cast)
    user = scoped_user(cast, "two-scopes", team=cast.data)
    grant_role(user, Role.VIEWER, tenant=cast.globex, environment=cast.globex_prod, actor=SYSTEM)
    client.login(username=user.username, password=PASSWORD)
    api = client_for(user)
    joined = restrict(Run.objects.order_by("-scheduled_for", "-id"), user)
    cases = [
        ({}, joined),
        ({"environment": "prod"}, joined.filter(job__environment__slug="prod")),
        ({"trigger": "manual"}, joined.filter(trigger="manual")),
    ]
    for params, rows in cases:
        want = list(rows.values_list("pk", flat=True))
        assert want, params
        assert ui_ids(client, params)[0] == want[:50], params
        assert [row["id"] for row in api.get("/api/v1/runs/", params).json()["results"]] == want[:50], params
    both = set(joined.values_list("tenant_id", flat=True))
    assert both == {cast.acme.pk, cast.globex.pk}
