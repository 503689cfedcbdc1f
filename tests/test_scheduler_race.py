"""Concurrency guarantees: several schedulers never double a slot, a redelivered task never
runs a job twice. Threads here use separate database connections, as separate processes would."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from django.db import connection

from jobs import scheduler, tasks
from jobs.models import Job, Run, RunStatus
from tests.sandboxed import Executions

JOBS = 30
ROUNDS = 3


def run_concurrently(target, count: int) -> list:
    """Call ``target()`` from ``count`` threads released at the same instant; return the results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = target()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_two_schedulers_ticking_at_once_create_exactly_one_run_per_slot(tcast):
    jobs = [
        tcast.make_job(
            tcast.dev, name=f"payments.race.job-{i:03d}", cron="* * * * *", concurrency="allow", rationale="race"
        )
        for i in range(JOBS)
    ]
    slot = min(job.next_fire_at for job in jobs)
    Job.objects.update(next_fire_at=slot)

    expected: set[tuple[int, object]] = set()
    for round_ in range(ROUNDS):
        due = slot + timedelta(minutes=round_)
        now = due + timedelta(seconds=1)
        results = run_concurrently(lambda now=now: scheduler.tick(now=now), 2)
        assert sum(r.created for r in results) == JOBS, results
        expected |= {(job.pk, due) for job in jobs}

    keys = Counter(Run.objects.values_list("job_id", "scheduled_for"))
    assert set(keys) == expected, "a slot is missing or unexpected"
    assert max(keys.values()) == 1, "a slot got more than one run"
    assert Job.objects.filter(next_fire_at=slot + timedelta(minutes=ROUNDS)).count() == JOBS


def test_a_task_delivered_twice_at_once_and_again_later_runs_the_job_once(tcast):
    job = tcast.make_job(tcast.dev, command=["/bin/sleep", "1"], cron="* * * * *", rationale="race")
    scheduler.tick(now=job.next_fire_at)
    run = Run.objects.get()

    # The job cannot leave a file on the host (it runs sandboxed): count its processes from outside.
    executions = Executions(run.pk)
    results = run_concurrently(lambda: tasks.execute_run(run.pk), 2)
    results.append(tasks.execute_run(run.pk))

    assert sorted(results) == ["not-claimed", "not-claimed", RunStatus.SUCCEEDED]
    assert executions.stop() == ["1"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1
