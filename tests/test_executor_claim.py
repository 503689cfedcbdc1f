"""The executor's claim and record: one claim wins, the loaded run carries its job, environment
and execution policy without further queries, the result and its attempt are written together or
not at all, and the downstream lookup finds exactly the jobs with an edge from the finished one,
through its partial index, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.execution_spec import executable_allowed
from jobs.executor import _claim_and_load, execute_run, record_attempt
from jobs.models import Attempt, Job, Run, RunStatus, TenantExecutionPolicy
from jobs.workflows import downstream_candidates, downstream_query, downstream_sql_postgresql
from monitoring import gates


def queued_run(cast, job=None) -> Run:
    return cast.queued_run(job or cast.make_job(cast.dev, command=["/bin/true"], criticality="medium"))


def claim(run_id: int):
    return _claim_and_load(run_id)


def test_only_one_claim_wins_and_it_loads_what_execution_reads(cast, django_assert_num_queries):
    run = queued_run(cast)
    # The conditional UPDATE, then one SELECT with its joins; on PostgreSQL one UPDATE ... RETURNING.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        loaded = claim(run.pk)
    assert claim(run.pk) is None, "a second claim of the same attempt must lose"
    stored = Run.objects.select_related("job__environment").get(pk=run.pk)
    assert stored.status == RunStatus.RUNNING and stored.attempt == 1 and stored.worker == loaded.worker != ""
    assert stored.lease_expires_at > stored.started_at
    for field in ("id", "tenant_id", "job_id", "scheduled_for", "status", "attempt", "definition", "queued_at"):
        assert getattr(loaded, field) == getattr(stored, field), field
    assert loaded.started_at == stored.started_at and loaded.started_at.tzinfo is not None
    with django_assert_num_queries(0):
        assert loaded.job.name == stored.job.name
        assert loaded.job.ping_token == stored.job.ping_token
        assert loaded.job.environment.slug == "dev"
        assert loaded.definition["command"] == ["/bin/true"]
        assert executable_allowed(loaded.tenant, "/bin/true", loaded.allowed_executables)  # no policy row: defaults


def test_a_cancelled_or_missing_run_is_not_claimed(cast):
    run = queued_run(cast)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    assert claim(run.pk) is None
    assert claim(10**9) is None
    assert Run.objects.get(pk=run.pk).attempt == 0


def test_the_tenants_execution_policy_comes_with_the_claim(cast, django_assert_num_queries):
    TenantExecutionPolicy.objects.create(tenant=cast.acme, allowed_executables=["/bin/true"])
    run = queued_run(cast)
    TenantExecutionPolicy.objects.filter(tenant=cast.acme).update(allowed_executables=["/opt/acme/*"])
    loaded = claim(run.pk)
    with django_assert_num_queries(0):
        # Read at claim time, not at proposal time: a narrowed allow-list stops the run.
        assert not executable_allowed(loaded.tenant, "/bin/true", loaded.allowed_executables)
        assert executable_allowed(loaded.tenant, "/opt/acme/sync", loaded.allowed_executables)


def test_a_run_costs_a_fixed_handful_of_queries(cast, django_assert_num_queries, django_capture_on_commit_callbacks):
    run = queued_run(cast)
    # Monitoring's view of open incidents and rules, refreshed every few seconds, is warm in a worker.
    gates.jobs_with_open_incidents(), gates.tenants_with_rules()
    # The claim and its read; the result and the attempt, between the savepoint pair standing in for
    # the transaction here; after the commit, whether any job follows. Nothing grows with jobs or runs.
    # On PostgreSQL: the claim, the result with its attempt (one statement each), the downstream lookup.
    queries = 3 if connection.vendor == "postgresql" else 7
    with django_assert_num_queries(queries), django_capture_on_commit_callbacks(execute=True):
        assert execute_run(run.pk) == RunStatus.SUCCEEDED
    attempt = Attempt.objects.get(run=run)
    assert attempt.number == 1 and attempt.status == RunStatus.SUCCEEDED and attempt.exit_code == 0
    assert attempt.tenant_id == cast.acme.pk and attempt.started_at is not None


def test_a_result_is_not_recorded_over_a_run_that_was_lost_meanwhile(cast):
    run = queued_run(cast)
    loaded = claim(run.pk)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.LOST, reason="lease expired")
    attempt = {"run_id": run.pk, "tenant_id": run.tenant_id, "number": 1, "status": RunStatus.SUCCEEDED}
    fields = {"status": RunStatus.SUCCEEDED, "exit_code": 0, "finished_at": timezone.now()}
    assert record_attempt(loaded, fields, attempt, only_if_running=True) is False
    stored = Run.objects.get(pk=run.pk)
    assert stored.status == RunStatus.LOST and stored.exit_code is None
    assert not Attempt.objects.filter(run=run).exists(), "no attempt row without its run's result"


def test_a_stalled_worker_does_not_record_over_the_attempt_that_replaced_it(cast):
    """Worker A stalls past its lease; the sweep requeues the (idempotent) run and worker B takes it
    as attempt 2. When A wakes up, its result is not written, over B's running attempt or at all."""
    run = queued_run(cast)
    stale = claim(run.pk)  # attempt 1
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, lease_expires_at=None)
    Attempt.objects.create(run=run, tenant_id=run.tenant_id, number=1, status=RunStatus.LOST, reason="lease expired")
    current = claim(run.pk)
    assert current.attempt == 2
    for only_if_running in (True, False):  # the cancel path writes without the status check
        attempt = {"run_id": run.pk, "tenant_id": run.tenant_id, "number": 1, "status": RunStatus.SUCCEEDED}
        fields = {"status": RunStatus.SUCCEEDED, "exit_code": 0, "finished_at": timezone.now()}
        assert record_attempt(stale, fields, attempt, only_if_running=only_if_running) is False
    stored = Run.objects.get(pk=run.pk)
    assert (stored.status, stored.attempt, stored.exit_code) == (RunStatus.RUNNING, 2, None)
    assert list(Attempt.objects.filter(run=run).values_list("number", "status")) == [(1, RunStatus.LOST)]


def test_a_finished_run_starts_the_jobs_that_follow_it(cast, django_capture_on_commit_callbacks):
    upstream = cast.make_job(cast.dev, name="payments.etl.load", command=["/bin/true"])
    follower = cast.make_job(cast.dev, name="payments.etl.report", dependencies=[{"upstream": upstream.name}])
    for minutes, (status, follows) in enumerate((("paused", False), ("enabled", True))):
        Job.objects.filter(pk=follower.pk).update(status=status)
        run = cast.queued_run(
            upstream, scheduled_for=timezone.now().replace(microsecond=0) + timedelta(minutes=minutes)
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert execute_run(run.pk) == RunStatus.SUCCEEDED
        assert Run.objects.filter(job=follower).exists() is follows, status


def test_the_downstream_lookup_matches_names_exactly(cast):
    """LIKE only narrows: wildcard characters in names are escaped and every row is checked exactly."""
    upstream = cast.make_job(cast.dev, name="payments.etl.load")
    downstream = cast.make_job(cast.dev, name="payments.etl.report", dependencies=[{"upstream": upstream.name}])
    other = cast.make_job(cast.dev, name="payments.etl.other")
    # Names straight in the table (a tenant's naming pattern may allow '_' and '%').
    Job.objects.filter(pk=other.pk).update(
        dependencies=[{"upstream": "payments_etl_load"}, {"upstream": "payments.etl.load%"}]
    )
    env = cast.dev
    assert downstream_candidates(cast.acme.pk, env.pk, "payments.etl.load") == [downstream.pk]
    assert downstream_candidates(cast.acme.pk, env.pk, "payments_etl_load") == [other.pk]
    assert downstream_candidates(cast.acme.pk, env.pk, "payments.etl.report") == []
    Job.objects.filter(pk=downstream.pk).update(status="paused")
    assert downstream_candidates(cast.acme.pk, env.pk, "payments.etl.load") == []


def test_the_downstream_lookup_reads_only_jobs_with_dependencies(cast):
    """The partial index job_downstream_lookup serves the lookup: its condition is part of the
    query, or the planner would scan every job of the environment."""
    # An environment of many jobs without dependencies, as in production: the partial index is then
    # the cheapest way for any planner (PostgreSQL chooses by cost, and by statistics).
    template = cast.make_job(cast.dev, name="payments.etl.template")
    fields = {f.attname: getattr(template, f.attname) for f in Job._meta.concrete_fields if not f.primary_key}
    Job.objects.bulk_create(
        [Job(**{**fields, "name": f"payments.etl.bulk-{i}", "ping_token": uuid.uuid4()}) for i in range(1500)]
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE jobs_job")
    query = downstream_query(cast.acme.pk, cast.dev.pk, "payments.etl.load")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
    plan = query.explain()
    assert "job_downstream_lookup" in plan, plan
    if connection.vendor == "postgresql":
        # The fixed statement the executor asks on PostgreSQL (jobs.workflows) uses the same index.
        with connection.cursor() as cursor:
            cursor.execute(
                f"EXPLAIN {downstream_sql_postgresql()}",
                [cast.acme.pk, cast.dev.pk, "enabled", '%"payments.etl.load"%'],
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "job_downstream_lookup" in plan, plan


@pytest.mark.parametrize("policy", [None, ["/bin/*"]])
def test_an_executed_run_reads_the_same_through_the_orm(cast, policy):
    if policy:
        TenantExecutionPolicy.objects.create(tenant=cast.acme, allowed_executables=policy)
    run = queued_run(cast, cast.make_job(cast.dev, command=["/bin/echo", "hello"]))
    assert execute_run(run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.output == "hello\n" and run.exit_code == 0 and run.finished_at > run.started_at
    assert run.lease_expires_at is None and run.queue_wait_ms >= 0 and run.recording_ms >= 0
