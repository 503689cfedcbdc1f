"""Misfires: after an outage or a pause every missed slot is recorded, and the catch-up policy bounds what runs."""

from datetime import timedelta

from jobs import scheduler
from jobs.models import Job, JobStatus, Run, RunStatus
from jobs.services import set_paused


def due_job(cast, **overrides):
    job = cast.make_job(cast.dev, cron="*/5 * * * *", timezone="UTC", **overrides)
    return job, job.next_fire_at


def statuses(job):
    return list(Run.objects.filter(job=job).order_by("scheduled_for").values_list("status", flat=True))


def test_an_on_time_slot_runs_once_and_the_next_slot_is_scheduled(cast):
    job, slot = due_job(cast)
    first = scheduler.tick(now=slot + timedelta(seconds=2))
    again = scheduler.tick(now=slot + timedelta(seconds=3))
    assert (first.created, first.skipped, again.created) == (1, 0, 0)
    job.refresh_from_db()
    assert job.next_fire_at == slot + timedelta(minutes=5)
    run = Run.objects.get(job=job)
    assert run.status == RunStatus.QUEUED and run.scheduled_for == slot


def test_after_an_hour_down_every_missed_slot_is_skipped_with_a_reason_and_only_the_newest_runs(cast):
    job, slot = due_job(cast)
    result = scheduler.tick(now=slot + timedelta(hours=1, seconds=10))
    assert (result.created, result.skipped) == (1, 12)
    assert statuses(job) == [RunStatus.SKIPPED] * 12 + [RunStatus.QUEUED]
    skipped = Run.objects.filter(job=job, status=RunStatus.SKIPPED).first()
    assert "scheduler down or job paused" in skipped.reason and skipped.finished_at is not None
    job.refresh_from_db()
    assert job.next_fire_at == slot + timedelta(hours=1, minutes=5)


def test_catchup_skip_skips_even_the_newest_slot_when_it_is_past_the_grace(cast, settings):
    settings.GOVERNOR_MISFIRE_GRACE_SECONDS = 60
    job, slot = due_job(cast)
    result = scheduler.tick(now=slot + timedelta(minutes=3))
    assert (result.created, result.skipped) == (0, 1)
    assert "more than the 60 s grace" in Run.objects.get(job=job).reason


def test_catchup_latest_runs_the_newest_missed_slot_within_the_starting_deadline(cast):
    job, slot = due_job(cast, catchup="latest", starting_deadline_seconds=600)
    result = scheduler.tick(now=slot + timedelta(minutes=34))
    assert (result.created, result.skipped) == (1, 6)
    runs = list(Run.objects.filter(job=job).order_by("scheduled_for"))
    assert runs[-1].status == RunStatus.QUEUED and runs[-1].scheduled_for == slot + timedelta(minutes=30)
    assert "catchup=latest runs only that one" in runs[-2].reason
    assert "past the starting deadline of 600 s" in runs[0].reason


def test_catchup_latest_skips_everything_past_the_starting_deadline(cast):
    job, slot = due_job(cast, catchup="latest", starting_deadline_seconds=120)
    result = scheduler.tick(now=slot + timedelta(minutes=34))
    assert (result.created, result.skipped) == (0, 7)
    assert "past the starting deadline of 120 s" in Run.objects.filter(job=job).last().reason


def test_catchup_all_runs_missed_slots_up_to_the_limit_never_a_burst(cast):
    job, slot = due_job(
        cast, catchup="all", catchup_limit=3, concurrency="allow", rationale="Catch-up runs may overlap."
    )
    result = scheduler.tick(now=slot + timedelta(days=1))
    assert result.created == 3
    assert result.skipped == 24 * 12 + 1 - 3
    runs = list(Run.objects.filter(job=job).order_by("scheduled_for"))
    assert [r.status for r in runs[-3:]] == [RunStatus.QUEUED] * 3
    assert "beyond the catch-up limit of 3" in runs[0].reason


def test_slots_missed_while_paused_are_recorded_at_resume(cast):
    job, slot = due_job(cast)
    set_paused(job, actor=cast.operator, paused=True, reason="maintenance")
    assert scheduler.tick(now=slot + timedelta(minutes=20)).due == 0
    job.refresh_from_db()
    set_paused(job, actor=cast.operator, paused=False, reason="maintenance over")
    job.refresh_from_db()
    assert job.next_fire_at == slot
    result = scheduler.tick(now=slot + timedelta(minutes=20, seconds=5))
    assert (result.created, result.skipped) == (1, 4)


def test_a_deleted_or_paused_job_is_not_scheduled(cast):
    job, slot = due_job(cast)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PAUSED)
    assert scheduler.tick(now=slot + timedelta(seconds=1)).due == 0
    assert not Run.objects.exists()


def test_a_slow_tick_and_a_second_scheduler_never_double_a_slot(cast):
    job, slot = due_job(cast)
    stale = Job.objects.get(pk=job.pk)
    scheduler.tick(now=slot + timedelta(seconds=1))
    # A second scheduler that read the job before the first one claimed it loses the claim.
    result = scheduler.TickResult()
    scheduler._claim_and_create([(stale, slot + timedelta(minutes=5), [])], slot, result, bulk=True)
    assert result.lost_race == 1
    assert Run.objects.filter(job=job).count() == 1


def test_a_manual_run_at_the_slot_instant_does_not_block_the_other_due_jobs(cast):
    job, slot = due_job(cast)
    other = cast.make_job(cast.dev, name="payments.ledger.other", cron="*/5 * * * *", timezone="UTC")
    Run.objects.create(job=job, tenant=cast.acme, scheduled_for=slot, job_version=1, definition={})
    result = scheduler.tick(now=slot + timedelta(seconds=1))
    assert result.lost_race == 1 and result.created == 1
    assert Run.objects.filter(job=other).count() == 1


def _all_due_at_one_slot():
    """Jobs made a moment apart can straddle a 5-minute boundary on a slow machine; line them up."""
    slot = max(Job.objects.values_list("next_fire_at", flat=True))
    Job.objects.update(next_fire_at=slot)
    return slot


def test_tick_query_count_does_not_grow_with_due_jobs(cast, django_assert_max_num_queries):
    for i in range(12):
        cast.make_job(cast.dev, name=f"payments.ledger.j{i}", cron="*/5 * * * *", timezone="UTC")
    now = _all_due_at_one_slot() + timedelta(seconds=1)
    with django_assert_max_num_queries(8):
        result = scheduler.tick(now=now)
    assert result.created == 12


def test_due_runs_reach_the_django_q2_queue_in_one_batch_each_for_its_own_run(cast, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    for i in range(5):
        cast.make_job(cast.dev, name=f"payments.ledger.q{i}", cron="*/5 * * * *", timezone="UTC")
    OrmQ.objects.all().delete()
    now = _all_due_at_one_slot() + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        result = scheduler.tick(now=now)
    tasks = [SignedPackage.loads(payload) for payload in OrmQ.objects.values_list("payload", flat=True)]
    assert sorted(t["args"][0] for t in tasks) == sorted(result.run_ids) and len(tasks) == 5
    assert {t["func"] for t in tasks} == {"jobs.tasks.execute_run"}
    assert {t["name"] for t in tasks} == {f"run-{i}" for i in result.run_ids}
