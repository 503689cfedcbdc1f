"""Two schedulers at once never overfill a pool: admission happens under a lock on the pool row.

Threads use separate database connections, as separate scheduler processes would."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from django.db import transaction

from jobs import pools, scheduler
from jobs.models import Job, Pool, Run, RunStatus
from tests.test_scheduler_pools import clone
from tests.test_scheduler_race import run_concurrently

JOBS = 20
SLOTS = 3


def test_two_schedulers_admitting_and_releasing_at_once_never_exceed_the_pools_slots(tcast):
    Pool.objects.create(tenant=tcast.acme, environment=tcast.dev, name="etl", slots=SLOTS)
    template = tcast.make_job(tcast.dev, name="payments.race.pooled", cron="* * * * *", pool="etl", rationale="race")
    jobs = [template, *clone(template, JOBS - 1, "payments.race.pooled")]
    slot = min(job.next_fire_at for job in jobs)
    Job.objects.update(next_fire_at=slot)
    now = slot + timedelta(seconds=1)

    results = run_concurrently(lambda: scheduler.tick(now=now), 2)
    assert sum(r.created for r in results) == SLOTS, results
    assert sum(r.deferred for r in results) == JOBS - SLOTS
    assert Run.objects.filter(status=RunStatus.QUEUED).count() == SLOTS

    released = 0
    for round_ in range(3):
        Run.objects.filter(status=RunStatus.QUEUED).update(status=RunStatus.SUCCEEDED, finished_at=now)
        later = now + timedelta(seconds=round_ + 1)
        promoted = run_concurrently(lambda later=later: scheduler.promote_deferred(later), 2)
        assert sum(promoted) == SLOTS, promoted
        assert Run.objects.filter(status=RunStatus.QUEUED).count() == SLOTS
        released += SLOTS
    assert Run.objects.filter(status=RunStatus.DEFERRED).count() == JOBS - SLOTS - released


def test_a_scheduler_admitting_into_a_pool_waits_for_the_one_holding_it(tcast):
    """While one scheduler holds the pool (between counting its slots and committing its runs),
    another one's admission waits and then counts those runs: the last slot is never given twice."""
    Pool.objects.create(tenant=tcast.acme, environment=tcast.dev, name="etl", slots=1)
    first = tcast.make_job(tcast.dev, name="payments.race.first", cron="0 * * * *", pool="etl")
    second = clone(first, 1, "payments.race.second")[0]
    slot = first.next_fire_at
    Job.objects.filter(pk=first.pk).update(next_fire_at=None)
    Job.objects.filter(pk=second.pk).update(next_fire_at=slot)
    holding = threading.Event()

    def hold_the_last_slot():
        with transaction.atomic():
            admission = pools.Admission([first])
            assert admission.admit(first) is None
            holding.set()
            time.sleep(0.5)  # the other scheduler reaches its admission meanwhile
            Run.objects.create(
                job=first,
                tenant=tcast.acme,
                scheduled_for=slot,
                status=RunStatus.QUEUED,
                job_version=1,
                definition=first.definition(),
            )
        return "held"

    def tick_when_held():
        holding.wait(10)
        return scheduler.tick(now=slot + timedelta(seconds=1))

    targets = iter([hold_the_last_slot, tick_when_held])
    lock = threading.Lock()

    def next_target():
        with lock:
            target = next(targets)
        return target()

    held, result = run_concurrently(next_target, 2)
    if held != "held":
        held, result = result, held
    assert (result.created, result.deferred) == (0, 1), result
    (run,) = Run.objects.filter(job=second)
    assert run.reason == "Deferred: pool dev/etl full: 1 of 1 slots busy."
