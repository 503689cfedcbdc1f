"""The queue reconciler and the concurrency rule that a ghost cannot block (issue 19), without
processes: a deterministic clock, django-q2's ORM broker on the test database, ticks called directly.

The fault tests with real scheduler and cluster processes are tests/test_reconcile_faults.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from governance.models import AuditAction, AuditEvent
from jobs import queue, scheduler, scheduler_constraints, scheduler_reconcile, tasks
from jobs.models import Alert, AlertKind, Run, RunStatus

BOUND = 20


@pytest.fixture(autouse=True)
def bound(settings):
    settings.GOVERNOR_REQUEUE_AFTER_SECONDS = BOUND
    settings.GOVERNOR_REQUEUE_MAX = 2


def messages_for(run_id: int) -> int:
    return sum(1 for payload in OrmQ.objects.values_list("payload", flat=True) if tasks._run_id(payload) == run_id)


def test_a_queued_run_with_no_queue_message_is_enqueued_again_once_past_the_bound_with_its_note(cast):
    job = cast.make_job(cast.dev)
    now = timezone.now()
    orphan = cast.queued_run(job, queued_at=now - timedelta(seconds=BOUND + 5))
    fresh = cast.queued_run(job, queued_at=now - timedelta(seconds=BOUND - 5), scheduled_for=now)
    result = scheduler_reconcile.reconcile_queue(now)
    assert result.requeued == [orphan.pk]
    orphan.refresh_from_db()
    assert (orphan.status, orphan.requeues) == (RunStatus.QUEUED, 1)
    assert orphan.queue_note == f"re-enqueued: no queue message after {BOUND + 5} s"
    assert messages_for(orphan.pk) == 1 and messages_for(fresh.pk) == 0
    event = AuditEvent.objects.get(action=AuditAction.RUN_REQUEUED)
    assert event.object_id == str(orphan.pk) and event.data["note"] == orphan.queue_note
    assert event.actor_repr == "scheduler" and event.tenant_id == job.tenant_id
    # Its message is live now: the next passes leave it alone, even past the bound again.
    assert scheduler_reconcile.reconcile_queue(now + timedelta(seconds=1)).requeued == []
    assert scheduler_reconcile.reconcile_queue(now + timedelta(seconds=BOUND + 1)).requeued == [fresh.pk]
    assert messages_for(orphan.pk) == 1


def test_runs_waiting_for_a_reason_are_not_touched(cast):
    job = cast.make_job(cast.dev)
    long_ago = timezone.now() - timedelta(hours=1)
    for i, status in enumerate([RunStatus.DEFERRED, RunStatus.SCHEDULED, RunStatus.RUNNING, RunStatus.SUCCEEDED]):
        run = cast.queued_run(
            job,
            queued_at=long_ago,
            scheduled_for=long_ago + timedelta(minutes=i),
            deferred_until=timezone.now() + timedelta(hours=1),
            next_attempt_at=timezone.now() + timedelta(hours=1),
            lease_expires_at=timezone.now() + timedelta(minutes=1),
        )
        Run.objects.filter(pk=run.pk).update(status=status)
    assert scheduler_reconcile.reconcile_queue().stale == 0
    assert OrmQ.objects.count() == 0


def test_orm_broker_a_message_taken_by_a_dead_cluster_is_not_live_but_one_waiting_or_just_taken_is(cast):
    job = cast.make_job(cast.dev)
    now = timezone.now()
    old = now - timedelta(minutes=5)
    waiting, just_taken, taken_by_the_dead = (
        cast.queued_run(job, queued_at=old, scheduled_for=old + timedelta(minutes=i)) for i in range(3)
    )
    for run in (waiting, just_taken, taken_by_the_dead):
        queue.enqueue_all([run.pk])
    # django-q2 locks a message it hands to a cluster until now + retry (GOVERNOR_TASK_RETRY).
    retry = timedelta(seconds=Conf.RETRY)
    rows = {tasks._run_id(m.payload): m for m in OrmQ.objects.all()}
    OrmQ.objects.filter(pk=rows[just_taken.pk].pk).update(lock=now - timedelta(seconds=2) + retry)
    OrmQ.objects.filter(pk=rows[taken_by_the_dead.pk].pk).update(lock=now - timedelta(seconds=BOUND + 1) + retry)
    assert tasks.live_queue_messages(BOUND, now) == {waiting.pk, just_taken.pk}
    assert scheduler_reconcile.reconcile_queue(now).requeued == [taken_by_the_dead.pk]
    assert messages_for(taken_by_the_dead.pk) == 2  # the dead cluster's copy is refused by the claim later


def test_a_stale_queued_run_still_counts_for_forbid_with_a_true_reason_until_the_reconciler_gives_up(cast):
    job = cast.make_job(cast.dev, cron="*/5 * * * *", timezone="UTC", concurrency="forbid")
    slot = job.next_fire_at
    ghost = cast.queued_run(job, scheduled_for=slot - timedelta(minutes=5), queued_at=slot - timedelta(minutes=5))
    scheduler.tick(now=slot + timedelta(seconds=1))
    blocked = Run.objects.get(job=job, scheduled_for=slot)
    assert blocked.status == RunStatus.SKIPPED
    assert blocked.reason == f"Skipped: concurrency=forbid and run(s) #{ghost.pk} still active."
    # Enqueued again twice, each time its message vanishes (a cluster that keeps dying with it).
    now = slot + timedelta(seconds=2)
    for _ in range(2):
        assert scheduler_reconcile.reconcile_queue(now).requeued == [ghost.pk]
        OrmQ.objects.all().delete()
        now += timedelta(seconds=BOUND + 1)
    result = scheduler_reconcile.reconcile_queue(now)
    assert (result.requeued, result.given_up) == ([], [ghost.pk])
    alert = Alert.objects.get(run=ghost, kind=AlertKind.STUCK_QUEUED)
    assert "no worker took it after 2 re-enqueues" in alert.message and "cluster_status" in alert.message
    ghost.refresh_from_db()
    assert ghost.status == RunStatus.QUEUED and ghost.queue_note.startswith("stuck:")
    # Given up: no second alert, and the job's next slot runs.
    assert scheduler_reconcile.reconcile_queue(now + timedelta(seconds=BOUND + 1)).stale == 0
    assert Alert.objects.filter(run=ghost).count() == 1
    scheduler.tick(now=slot + timedelta(minutes=5, seconds=1))
    assert Run.objects.get(job=job, scheduled_for=slot + timedelta(minutes=5)).status == RunStatus.QUEUED


def test_a_rerun_starts_the_reconcilers_count_afresh(cast):
    job = cast.make_job(cast.dev, concurrency="forbid")
    now = timezone.now()
    run = cast.queued_run(
        job, queued_at=now - timedelta(hours=1), requeues=2, requeued_at=now - timedelta(minutes=30), queue_note="x"
    )
    # Queued again by an operator after the reconciler's marks: they no longer apply.
    Run.objects.filter(pk=run.pk).update(queued_at=now - timedelta(seconds=BOUND + 1))
    assert Run.objects.filter(pk=run.pk).filter(scheduler_constraints.active_runs(now)).exists()
    assert scheduler_reconcile.reconcile_queue(now).requeued == [run.pk]
    run.refresh_from_db()
    assert run.requeues == 1 and run.queue_note == f"re-enqueued: no queue message after {BOUND + 1} s"


def test_a_running_run_whose_worker_lease_expired_does_not_block_forbid(cast):
    job = cast.make_job(cast.dev, cron="*/5 * * * *", timezone="UTC", concurrency="forbid")
    slot = job.next_fire_at
    run = cast.queued_run(job, scheduled_for=slot - timedelta(minutes=5), lease_expires_at=slot - timedelta(seconds=5))
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    scheduler.tick(now=slot + timedelta(seconds=1))
    assert Run.objects.get(job=job, scheduled_for=slot).status == RunStatus.QUEUED


# --- catch-up ------------------------------------------------------------------------------


def finish(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())


def by_slot(job, first):
    return {
        int((run.scheduled_for - first).total_seconds() // 60): run
        for run in Run.objects.filter(job=job).order_by("scheduled_for")
    }


def test_catchup_all_under_forbid_after_two_hours_down_runs_the_newest_slots_one_after_another(cast):
    job = cast.make_job(
        cast.dev,
        cron="*/15 * * * *",
        timezone="UTC",
        catchup="all",
        catchup_limit=3,
        starting_deadline_seconds=3600,
        concurrency="forbid",
    )
    first = job.next_fire_at
    now = first + timedelta(hours=2, seconds=10)
    result = scheduler.tick(now=now)
    assert (result.created, result.skipped, result.deferred) == (1, 6, 2)
    runs = by_slot(job, first)
    assert sorted(runs) == [0, 15, 30, 45, 60, 75, 90, 105, 120]
    for minute in (0, 15, 30, 45, 60):
        late = int((now - runs[minute].scheduled_for).total_seconds())
        assert runs[minute].status == RunStatus.SKIPPED
        assert runs[minute].reason == (
            f"Missed: reached {late} s after its time, past the starting deadline of 3600 s."
        )
    assert runs[75].reason == "Missed: beyond the catch-up limit of 3 slots (catchup=all)."
    assert runs[90].status == RunStatus.QUEUED
    assert (runs[105].status, runs[105].deferred_until) == (RunStatus.DEFERRED, None)
    assert runs[105].reason.startswith(
        f"Waiting its turn after the run of slot {runs[90].scheduled_for:%Y-%m-%dT%H:%M}"
    )
    assert "concurrency=forbid runs one at a time" in runs[120].reason
    assert not any("#-1" in run.reason for run in runs.values())

    # In turn: each waits until the one before it has finished.
    assert scheduler.promote_deferred(now + timedelta(seconds=5)) == 0
    finish(runs[90])
    assert scheduler.promote_deferred(now + timedelta(seconds=6)) == 1
    runs = by_slot(job, first)
    assert (runs[105].status, runs[120].status) == (RunStatus.QUEUED, RunStatus.DEFERRED)
    # The next regular slot finds one running and one waiting: skipped, saying so.
    scheduler.tick(now=first + timedelta(hours=2, minutes=15, seconds=1))
    runs = by_slot(job, first)
    assert runs[135].status == RunStatus.SKIPPED
    assert runs[135].reason == (
        f"Skipped: concurrency=forbid and catch-up run(s) #{runs[120].pk} still wait their turn "
        f"behind run(s) #{runs[105].pk}."
    )
    finish(runs[105])
    scheduler.promote_deferred(first + timedelta(hours=2, minutes=16))
    assert by_slot(job, first)[120].status == RunStatus.QUEUED


def test_a_catchup_slot_whose_deadline_passes_while_it_waits_is_skipped_saying_so(cast):
    job = cast.make_job(
        cast.dev,
        cron="*/15 * * * *",
        timezone="UTC",
        catchup="all",
        starting_deadline_seconds=1800,
        concurrency="forbid",
    )
    first = job.next_fire_at
    scheduler.tick(now=first + timedelta(minutes=15, seconds=5))
    runs = by_slot(job, first)
    assert (runs[0].status, runs[15].status) == (RunStatus.QUEUED, RunStatus.DEFERRED)
    finish(runs[0])
    later = first + timedelta(minutes=45, seconds=30)
    scheduler.promote_deferred(later)
    waited = by_slot(job, first)[15]
    assert waited.status == RunStatus.SKIPPED
    assert waited.reason == (
        "Missed: reached 1830 s after its time while waiting its turn, past the starting deadline of 1800 s."
    )


def test_a_slot_just_past_its_starting_deadline_says_so_not_the_catchup_limit(cast):
    job = cast.make_job(
        cast.dev, cron="*/15 * * * *", timezone="UTC", catchup="all", starting_deadline_seconds=900, catchup_limit=5
    )
    first = job.next_fire_at
    scheduler.tick(now=first + timedelta(minutes=15, seconds=0.4))
    oldest = by_slot(job, first)[0]
    assert oldest.reason == "Missed: reached 901 s after its time, past the starting deadline of 900 s."


def test_catchup_all_under_replace_runs_only_the_newest_slot_of_the_batch(cast):
    job = cast.make_job(cast.dev, cron="*/15 * * * *", timezone="UTC", catchup="all", concurrency="replace")
    first = job.next_fire_at
    scheduler.tick(now=first + timedelta(minutes=30, seconds=5))
    runs = by_slot(job, first)
    assert [runs[m].status for m in (0, 15, 30)] == [RunStatus.SKIPPED, RunStatus.SKIPPED, RunStatus.QUEUED]
    assert runs[0].reason == (
        f"Skipped: replaced by the run of slot {runs[15].scheduled_for:%Y-%m-%dT%H:%M:%SZ} (concurrency=replace)."
    )
