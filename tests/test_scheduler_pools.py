"""Pools, reserved critical slots, priorities and backpressure: every deferral recorded, released in order."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from conftest import PASSWORD
from jobs import scheduler
from jobs.models import Job, Pool, Run, RunStatus, TenantExecutionPolicy, TriggerKind

SLOT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def pool(cast, name="etl", slots=2, reserved=0, environment=None):
    environment = environment or cast.dev
    return Pool.objects.create(
        tenant=environment.tenant, environment=environment, name=name, slots=slots, reserved_critical_slots=reserved
    )


def clone(template: Job, count: int, prefix: str, **fields) -> list[Job]:
    """Copies of a live job under other names (the scheduler reads rows; change control is tested elsewhere)."""
    jobs = []
    for i in range(count):
        job = Job.objects.get(pk=template.pk)
        job.pk = None
        job.name = f"{prefix}-{i:03d}"
        job.ping_token = uuid.uuid4()
        for field, value in fields.items():
            setattr(job, field, value)
        jobs.append(job)
    return Job.objects.bulk_create(jobs)


def hourly(cast, name="payments.ledger.reconcile", due=True, **overrides):
    """A job due at SLOT (or, ``due=False``, not for a day: it only holds slots with its runs)."""
    overrides.setdefault("cron", "0 * * * *")
    if overrides.get("criticality") == "critical":
        overrides.setdefault("rationale", "Critical; its pings come later.")
    job = cast.make_job(cast.dev, name=name, timezone="UTC", **overrides)
    Job.objects.filter(pk=job.pk).update(next_fire_at=SLOT if due else SLOT + timedelta(days=1))
    job.refresh_from_db()
    return job


def active_run(job, minutes_ago=30, status=RunStatus.RUNNING, trigger=TriggerKind.SCHEDULE):
    return Run.objects.create(
        job=job,
        tenant_id=job.tenant_id,
        scheduled_for=SLOT - timedelta(minutes=minutes_ago),
        trigger=trigger,
        status=status,
        job_version=job.version,
        definition=job.definition(),
    )


def finish(*runs):
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(status=RunStatus.SUCCEEDED, finished_at=SLOT)


def runs_of(job):
    return list(Run.objects.filter(job=job).order_by("scheduled_for"))


def test_a_pool_admits_as_many_runs_as_it_has_slots_and_defers_the_rest_with_the_reason(cast):
    pool(cast, slots=2)
    jobs = [hourly(cast, name=f"payments.etl.load-{i}", pool="etl") for i in range(3)]
    result = scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert (result.created, result.deferred) == (2, 1)
    deferred = Run.objects.get(job__in=jobs, status=RunStatus.DEFERRED)
    assert deferred.reason == "Deferred: pool dev/etl full: 2 of 2 slots busy."
    assert Run.objects.filter(job__in=jobs, status=RunStatus.QUEUED).count() == 2


def test_runs_of_jobs_without_a_pool_are_not_limited(cast):
    pool(cast, slots=0)
    hourly(cast, name="payments.etl.free")
    assert scheduler.tick(now=SLOT + timedelta(seconds=1)).created == 1


def test_a_run_waiting_for_a_slot_goes_when_one_frees_and_not_before(cast):
    pool(cast, slots=1)
    busy = hourly(cast, name="payments.etl.busy", pool="etl", due=False, concurrency="allow", rationale="x")
    running = active_run(busy)
    job = hourly(cast, name="payments.etl.waiting", pool="etl")
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    (run,) = runs_of(job)
    assert run.status == RunStatus.DEFERRED
    assert scheduler.promote_deferred(SLOT + timedelta(seconds=30)) == 0
    finish(running)
    assert scheduler.promote_deferred(SLOT + timedelta(seconds=31)) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.queued_at == SLOT + timedelta(seconds=31)
    assert run.reason == "Deferred: pool dev/etl full: 1 of 1 slots busy."


def test_manual_runs_occupy_pool_slots(cast):
    pool(cast, slots=1)
    job = hourly(cast, name="payments.etl.load", pool="etl")
    other = hourly(cast, name="payments.etl.other", pool="etl")
    active_run(job, status=RunStatus.QUEUED, trigger=TriggerKind.MANUAL)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(other)[0].status == RunStatus.DEFERRED


def test_reserved_slots_are_kept_for_critical_jobs(cast):
    pool(cast, slots=2, reserved=1)
    first = hourly(cast, name="payments.etl.first", pool="etl", priority=9)
    second = hourly(cast, name="payments.etl.second", pool="etl")
    critical = hourly(cast, name="payments.etl.critical", pool="etl", criticality="critical", priority=0)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(first)[0].status == RunStatus.QUEUED
    (waiting,) = runs_of(second)
    assert waiting.status == RunStatus.DEFERRED
    assert waiting.reason == (
        "Deferred: pool dev/etl full for non-critical jobs: 1 of 2 slots busy, 1 reserved for critical jobs."
    )
    # Lowest priority, but critical: the reserved slot is its.
    assert runs_of(critical)[0].status == RunStatus.QUEUED


def test_a_critical_job_still_waits_when_every_slot_is_busy(cast):
    pool(cast, slots=1, reserved=1)
    holder = hourly(cast, name="payments.etl.holder", pool="etl", due=False, criticality="critical")
    active_run(holder)
    critical = hourly(cast, name="payments.etl.critical", pool="etl", criticality="critical")
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(critical)[-1].reason == "Deferred: pool dev/etl full: 1 of 1 slots busy."


def test_higher_priority_runs_take_free_slots_first_then_the_oldest(cast):
    pool(cast, slots=1)
    holder = hourly(cast, name="payments.etl.holder", pool="etl", due=False)
    running = active_run(holder)
    low = hourly(cast, name="payments.etl.low", pool="etl", priority=2)
    high = hourly(cast, name="payments.etl.high", pool="etl", priority=8)
    mid = hourly(cast, name="payments.etl.mid", pool="etl", priority=5)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    # An older waiting run of the same priority as ``mid``.
    mid_old = hourly(cast, name="payments.etl.mid-old", pool="etl", priority=5)
    Run.objects.filter(job=mid).update(scheduled_for=SLOT + timedelta(minutes=1))
    Job.objects.filter(pk=mid_old.pk).update(next_fire_at=SLOT)
    scheduler.tick(now=SLOT + timedelta(seconds=2))
    waiting = [low, high, mid, mid_old]
    assert all(runs_of(j)[0].status == RunStatus.DEFERRED for j in waiting)

    order = []
    current = running
    for step in range(4):
        finish(current)
        assert scheduler.promote_deferred(SLOT + timedelta(minutes=2, seconds=step)) == 1
        current = Run.objects.get(job__in=waiting, status=RunStatus.QUEUED)
        order.append(current.job.name)
    assert order == ["payments.etl.high", "payments.etl.mid-old", "payments.etl.mid", "payments.etl.low"]


def test_new_slots_do_not_jump_ahead_of_runs_already_waiting_for_the_pool(cast):
    pool(cast, slots=1)
    holder = hourly(cast, name="payments.etl.holder", pool="etl", due=False)
    running = active_run(holder)
    waiting = hourly(cast, name="payments.etl.waiting", pool="etl")
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    finish(running)
    newcomer = hourly(cast, name="payments.etl.newcomer", pool="etl")
    Job.objects.filter(pk=newcomer.pk).update(next_fire_at=SLOT + timedelta(hours=1))
    result = scheduler.tick(now=SLOT + timedelta(hours=1, seconds=1))
    assert (result.promoted, result.created, result.deferred) == (1, 0, 1)
    assert runs_of(waiting)[0].status == RunStatus.QUEUED
    assert runs_of(newcomer)[0].status == RunStatus.DEFERRED


def test_a_pool_drained_to_zero_slots_admits_nothing(cast):
    drained = pool(cast, slots=3)
    job = hourly(cast, name="payments.etl.load", pool="etl")
    Pool.objects.filter(pk=drained.pk).update(slots=0)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(job)[0].reason == "Deferred: pool dev/etl full: 0 of 0 slots busy."


# --- backpressure ------------------------------------------------------------------------


def queue_up(cast, count):
    filler = hourly(cast, name="payments.fill.queued", concurrency="allow", rationale="filler")
    Job.objects.filter(pk=filler.pk).update(status="paused")
    return [active_run(filler, minutes_ago=60 + i, status=RunStatus.QUEUED) for i in range(count)]


def test_low_priority_runs_wait_while_the_queue_is_deeper_than_the_limit(cast, settings):
    settings.GOVERNOR_QUEUE_DEPTH_LIMIT = 3
    queued = queue_up(cast, 3)
    low = hourly(cast, name="payments.batch.low", priority=2)
    normal = hourly(cast, name="payments.batch.normal")
    critical_low = hourly(cast, name="payments.batch.critical", priority=0, criticality="critical")
    result = scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert (result.created, result.deferred) == (2, 1)
    (run,) = runs_of(low)
    assert run.status == RunStatus.DEFERRED
    assert run.reason == (
        "Deferred: backpressure: queue depth 4 >= limit 3; runs of priority below 5 wait until it drains."
    )
    assert runs_of(normal)[0].status == RunStatus.QUEUED
    assert runs_of(critical_low)[0].status == RunStatus.QUEUED

    # The two admitted runs are queued too: draining the fillers alone is not enough.
    finish(*queued)
    assert scheduler.promote_deferred(SLOT + timedelta(seconds=5)) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_the_queue_depth_limit_is_set_per_tenant(cast, settings):
    settings.GOVERNOR_QUEUE_DEPTH_LIMIT = 0  # no bound by default
    queue_up(cast, 2)
    low = hourly(cast, name="payments.batch.low", priority=1)
    TenantExecutionPolicy.objects.create(tenant=cast.acme, queue_depth_limit=2)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(low)[0].reason.startswith("Deferred: backpressure: queue depth 2 >= limit 2;")
    TenantExecutionPolicy.objects.filter(tenant=cast.acme).update(queue_depth_limit=0)
    assert scheduler.promote_deferred(SLOT + timedelta(seconds=2)) == 1


def test_backpressure_counts_only_the_tenants_own_queue(cast, settings):
    settings.GOVERNOR_QUEUE_DEPTH_LIMIT = 1
    globex_job = cast.make_job(cast.globex_prod)
    active_run(globex_job, status=RunStatus.QUEUED)
    low = hourly(cast, name="payments.batch.low", priority=1)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert runs_of(low)[0].status == RunStatus.QUEUED


# --- the job's concurrency policy is checked again when a deferred run is released -----------


def window_until(cast, end):
    cast.make_window(environment=cast.dev, name="patching", starts_at=SLOT, ends_at=end)


def test_a_deferred_run_of_a_forbid_job_is_skipped_at_release_while_another_run_is_active(cast):
    job = hourly(cast)  # concurrency=forbid by default
    end = SLOT + timedelta(minutes=30)
    window_until(cast, end)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    (deferred,) = runs_of(job)
    manual = active_run(job, minutes_ago=-10, trigger=TriggerKind.MANUAL)
    assert scheduler.promote_deferred(end + timedelta(seconds=1)) == 0
    deferred.refresh_from_db()
    assert deferred.status == RunStatus.SKIPPED
    assert deferred.reason == f"Skipped at release: concurrency=forbid and run(s) #{manual.pk} still active."
    assert deferred.finished_at == end + timedelta(seconds=1)


def test_a_deferred_run_of_a_replace_job_cancels_the_active_run_at_release(cast):
    job = hourly(cast, concurrency="replace", rationale="Newest data wins.")
    end = SLOT + timedelta(minutes=30)
    window_until(cast, end)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    (deferred,) = runs_of(job)
    manual = active_run(job, minutes_ago=-10, trigger=TriggerKind.MANUAL)
    assert scheduler.promote_deferred(end + timedelta(seconds=1)) == 1
    manual.refresh_from_db()
    deferred.refresh_from_db()
    assert deferred.status == RunStatus.QUEUED
    assert manual.status == RunStatus.CANCELLED
    assert manual.reason == "Cancelled: replaced by the run of slot 2026-06-01T12:00:00Z (concurrency=replace)."


def test_max_active_runs_is_checked_at_release(cast):
    job = hourly(cast, concurrency="allow", max_active_runs=1, rationale="One at a time is enough.")
    end = SLOT + timedelta(minutes=30)
    window_until(cast, end)
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    (deferred,) = runs_of(job)
    active_run(job, minutes_ago=-10, trigger=TriggerKind.MANUAL)
    scheduler.promote_deferred(end + timedelta(seconds=1))
    deferred.refresh_from_db()
    assert deferred.status == RunStatus.SKIPPED
    assert deferred.reason == "Skipped at release: 1 run(s) active, the job allows at most 1."


def test_several_deferred_slots_of_a_forbid_job_release_only_one(cast):
    job = hourly(cast, cron="*/10 * * * *", catchup="all", rationale="x")
    end = SLOT + timedelta(minutes=30)
    window_until(cast, end)
    Job.objects.filter(pk=job.pk).update(next_fire_at=SLOT)
    scheduler.tick(now=SLOT + timedelta(minutes=20, seconds=1))
    assert [r.status for r in runs_of(job)] == [RunStatus.DEFERRED] * 3
    assert scheduler.promote_deferred(end + timedelta(seconds=1)) == 1
    statuses = [r.status for r in runs_of(job)]
    assert statuses == [RunStatus.QUEUED, RunStatus.SKIPPED, RunStatus.SKIPPED]


def test_a_pool_deferred_run_of_a_forbid_job_is_skipped_when_its_own_job_got_busy(cast):
    pool(cast, slots=1)
    holder = hourly(cast, name="payments.etl.holder", pool="etl", due=False)
    running = active_run(holder)
    job = hourly(cast, name="payments.etl.waiting", pool="etl")
    scheduler.tick(now=SLOT + timedelta(seconds=1))
    finish(running)
    manual = active_run(job, minutes_ago=-1, trigger=TriggerKind.MANUAL)
    scheduler.promote_deferred(SLOT + timedelta(seconds=2))
    (deferred,) = [r for r in runs_of(job) if r.trigger == TriggerKind.SCHEDULE]
    assert deferred.status == RunStatus.SKIPPED
    assert f"#{manual.pk} still active" in deferred.reason


# --- query counts --------------------------------------------------------------------------


# Up to 20: SQLite splits a bulk INSERT of more than about 25 runs (999 parameters), pools or not.
@pytest.mark.parametrize("count", [12, 20])
def test_tick_queries_do_not_grow_with_pooled_jobs(cast, settings, django_assert_max_num_queries, count):
    settings.GOVERNOR_QUEUE_DEPTH_LIMIT = 1000
    for env in (cast.dev,):
        pool(cast, name="etl", slots=3, environment=env)
        pool(cast, name="bulk", slots=2, environment=env)
    template = hourly(cast, name="payments.etl.template", pool="etl")
    clone(template, count // 2, "payments.etl.a", pool="etl", next_fire_at=SLOT, priority=2)
    clone(template, count // 2, "payments.etl.b", pool="bulk", next_fire_at=SLOT, criticality="critical")
    with django_assert_max_num_queries(12):
        result = scheduler.tick(now=SLOT + timedelta(seconds=1))
    assert result.created == 5
    Run.objects.filter(status=RunStatus.QUEUED).update(status=RunStatus.SUCCEEDED)
    with django_assert_max_num_queries(12):
        assert scheduler.promote_deferred(SLOT + timedelta(seconds=2)) == 5


# --- API and job page ---------------------------------------------------------------------


def test_the_pools_api_shows_busy_and_free_slots(client, cast):
    etl = pool(cast, slots=3, reserved=1)
    pool(cast, name="empty", slots=2)
    job = hourly(cast, name="payments.etl.load", pool="etl", concurrency="allow", rationale="x")
    active_run(job)
    active_run(job, minutes_ago=20, status=RunStatus.QUEUED)
    finish(active_run(job, minutes_ago=10))
    client.login(username=cast.viewer.username, password=PASSWORD)
    data = client.get(reverse("api-pool-list")).json()
    rows = {row["name"]: row for row in data["results"]}
    assert (rows["etl"]["busy"], rows["etl"]["free"], rows["etl"]["reserved_critical_slots"]) == (2, 1, 1)
    assert (rows["empty"]["busy"], rows["empty"]["free"]) == (0, 2)
    detail = client.get(reverse("api-pool-detail", args=[etl.pk])).json()
    assert detail["environment"]["slug"] == "dev" and detail["busy"] == 2


def test_another_tenants_pool_is_a_404_like_a_missing_one(client, cast):
    theirs = pool(cast, name="backup", slots=1, environment=cast.globex_prod)
    client.login(username=cast.viewer.username, password=PASSWORD)
    assert client.get(reverse("api-pool-detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("api-pool-detail", args=[theirs.pk + 1000])).status_code == 404
    assert client.get(reverse("api-pool-list")).json()["results"] == []
    client.login(username=cast.outsider.username, password=PASSWORD)
    assert client.get(reverse("api-pool-detail", args=[theirs.pk])).status_code == 404


def test_the_pools_list_runs_the_same_queries_for_many_pools(client, cast, django_assert_max_num_queries):
    client.login(username=cast.viewer.username, password=PASSWORD)
    pool(cast, name="one", slots=1)
    with django_assert_max_num_queries(50) as few:
        client.get(reverse("api-pool-list"))
    for i in range(15):
        pool(cast, name=f"p{i}", slots=i, environment=cast.staging)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(client.get(reverse("api-pool-list")).json()["results"]) == 16


def test_the_job_page_shows_the_pool_and_its_usage(client, cast):
    pool(cast, slots=4, reserved=1)
    job = hourly(cast, name="payments.etl.load", pool="etl", priority=7)
    active_run(job)
    client.login(username=cast.viewer.username, password=PASSWORD)
    html = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "<strong>etl</strong>: 1 of 4 slots busy, 3 free (1 reserved for critical jobs); priority 7 of 9" in html
