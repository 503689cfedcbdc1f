"""No run left behind (issue 19), with real processes on loopback: a scheduler killed with SIGKILL
between its tick's commit and the enqueue, and a worker cluster killed with SIGKILL while it held
prefetched tasks (ORM broker: their messages stay locked by the dead cluster; Redis: popped and
gone). The scheduler's queue reconciler enqueues each orphaned run again within
GOVERNOR_REQUEUE_AFTER_MS, the run claim keeps every run exactly-once, and the job's next slots
run normally. ``GOVERNOR_TEST_CRASH_POINT`` is a test-only fault injection (jobs.scheduler.crash_point)."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
import redis
from django.db import models
from django.utils import timezone
from django_q.models import OrmQ

from governance.models import AuditAction, AuditEvent
from jobs import scheduler, tasks
from jobs.models import Job, Run, RunStatus
from jobs.services import trigger_run
from tests import procs
from tests.sandboxed import Executions
from tests.test_worker_loss_redis import QUEUE_KEY, redis_url  # noqa: F401 - fixture

BOUND_MS = 2000
pytestmark = pytest.mark.slow


# A job leaves nothing on the host (its sandbox), so its executions are counted from outside:
# every ``sleep`` process carrying the run's id, seen while it lives.
QUICK = ["/bin/sh", "-c", "exec sleep 1"]


def watch(runs) -> dict[int, Executions]:
    return {run.pk: Executions(run.pk) for run in runs}


def executed_once(watchers: dict[int, Executions]) -> None:
    """Each run started exactly one process, as attempt 1, and recorded exactly one attempt."""
    seen = {pk: watcher.stop() for pk, watcher in watchers.items()}
    assert seen == {pk: ["1"] for pk in watchers}, seen
    attempts = dict(Run.objects.filter(pk__in=list(watchers)).values_list("pk").annotate(n=models.Count("attempts")))
    assert attempts == dict.fromkeys(watchers, 1), attempts


def env(**extra: str) -> dict[str, str]:
    return procs.django_env(
        GOVERNOR_WORKERS="1",
        GOVERNOR_RUN_LEASE_SECONDS="2",
        GOVERNOR_TASK_TIMEOUT="60",
        GOVERNOR_SCHEDULER_MAX_SLEEP_MS="200",
        GOVERNOR_SCHEDULER_LEASE_MS="1500",
        GOVERNOR_REQUEUE_AFTER_MS=str(BOUND_MS),
        GOVERNOR_MISFIRE_GRACE_SECONDS="600",
        **extra,
    )


def test_a_scheduler_killed_between_its_commit_and_the_enqueue_leaves_no_run_behind(tcast, started):
    jobs = [
        tcast.make_job(
            tcast.dev,
            name=f"payments.ledger.crash-{i}",
            command=QUICK,
            cron="*/5 * * * *",
            timezone="UTC",
            concurrency="forbid",
        )
        for i in range(3)
    ]
    now = timezone.now()
    slot = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(next_fire_at=slot)

    crashing = started(
        "crashing-scheduler", "run_scheduler", environ=env(GOVERNOR_TEST_CRASH_POINT="after-tick-commit")
    )
    procs.wait_until(lambda: crashing.proc.poll() is not None, 20, f"the crash point:\n{crashing.output()}")
    assert crashing.proc.returncode == -signal.SIGKILL
    runs = list(Run.objects.filter(job__in=jobs).order_by("pk"))
    assert [run.status for run in runs] == [RunStatus.QUEUED] * 3
    assert OrmQ.objects.count() == 0  # committed, never enqueued: the orphans of issue 19
    watchers = watch(runs)

    cluster = started("worker", "qcluster", environ=env())
    restarted = started("scheduler", "run_scheduler", environ=env())
    began = time.monotonic()

    def all_succeeded():
        return Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.SUCCEEDED).count() == 3

    procs.wait_until(all_succeeded, 25, f"the orphans to run:\n{restarted.output()}\n{cluster.output()}")
    recovered_in = time.monotonic() - began
    executed_once(watchers)
    for run in runs:
        run.refresh_from_db()
        assert run.requeues == 1 and run.queue_note.startswith("re-enqueued: no queue message after ")
    assert AuditEvent.objects.filter(action=AuditAction.RUN_REQUEUED).count() == 3
    print(f"orphans of a crashed scheduler ran {recovered_in:.1f} s after the restart (bound {BOUND_MS} ms)")
    restarted.stop()

    # The jobs' next slots run normally (forbid is not blocked by anything left behind).
    following = slot + timedelta(minutes=5)
    result = scheduler.tick(now=following + timedelta(seconds=1))
    assert (result.created, result.skipped) == (3, 0)
    following_runs = list(Run.objects.filter(job__in=jobs, scheduled_for=following))
    watchers = watch(following_runs)
    procs.wait_until(
        lambda: Run.objects.filter(scheduled_for=following, status=RunStatus.SUCCEEDED).count() == 3, 20, "next"
    )
    executed_once(watchers)


def enqueue_from(environ: dict[str, str], run_ids: list[int]) -> None:
    """Hand runs to the broker of ``environ`` (Redis), as a web node configured for it would."""
    done = procs.run_manage("shell", "-c", f"from jobs.queue import enqueue_all; enqueue_all({run_ids!r})", env=environ)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("broker", ["orm", "redis"])
def test_a_cluster_killed_with_prefetched_tasks_leaves_no_run_behind(tcast, started, broker, request):
    extra = {}
    if broker == "redis":
        extra = {"GOVERNOR_Q_BROKER": "redis", "REDIS_URL": request.getfixturevalue("redis_url")}
    environ = env(**extra)
    long_job = tcast.make_job(
        tcast.dev,
        name="payments.ledger.long",
        command=["/bin/sh", "-c", "exec sleep 60"],
        cron="0 0 1 1 *",
    )
    quick_job = tcast.make_job(
        tcast.dev,
        name="payments.ledger.quick",
        command=QUICK,
        cron="0 0 1 1 *",
    )
    first = started("worker-1", "qcluster", environ=environ)
    long_run = trigger_run(long_job, actor=tcast.operator, reason="occupy the only worker")
    if broker == "redis":
        enqueue_from(environ, [long_run.pk])

    def long_running():
        long_run.refresh_from_db()
        return long_run.status == RunStatus.RUNNING

    procs.wait_until(long_running, 20, f"the long run to start:\n{first.output()}")
    quick = [trigger_run(quick_job, actor=tcast.operator, reason=f"quick {i}") for i in range(3)]
    ids = [run.pk for run in quick]
    watchers = watch(quick)
    if broker == "redis":
        enqueue_from(environ, ids)
        client = redis.Redis.from_url(environ["REDIS_URL"])

        def prefetched() -> set[int]:
            # Popped into the cluster's own memory (django-q2's pusher keeps up to queue_limit + 1).
            return set(ids) - {tasks._run_id(m) for m in client.lrange(QUEUE_KEY, 0, -1)}
    else:

        def prefetched() -> set[int]:
            locked = OrmQ.objects.filter(lock__gt=timezone.now()).values_list("payload", flat=True)
            return {tasks._run_id(m) for m in locked} & set(ids)

    procs.wait_until(prefetched, 15, f"the cluster to prefetch a task:\n{first.output()}")
    time.sleep(1)  # the pusher takes one more than fits and blocks: let it settle
    taken = prefetched()
    os.killpg(first.proc.pid, signal.SIGKILL)  # the whole cluster: leader, sentinel, pusher, worker
    first.proc.wait(10)
    # The long job dies with its worker (the sandbox's parent-death signal).
    assert Run.objects.filter(pk__in=ids, status=RunStatus.QUEUED).count() == 3

    # The scheduler's reconciler first, alone: what it re-enqueues while no cluster runs is exactly
    # what the dead cluster had taken, and the runs still waiting in the queue are left alone. (With
    # the new cluster already running, a message it has just popped is not in the queue either, and
    # may be re-enqueued too when its workers are slow to start: harmless, as the claim runs it
    # once, but not what this test pins.)
    sched = started("scheduler", "run_scheduler", environ=environ)
    began = time.monotonic()

    def requeued_now() -> dict[int, str]:
        return dict(Run.objects.filter(pk__in=ids, requeues__gt=0).values_list("pk", "queue_note"))

    procs.wait_until(lambda: set(requeued_now()) >= taken, 20, f"the taken runs re-enqueued:\n{sched.output()}")
    notes = requeued_now()
    # Exactly those the dead cluster had taken; any still waiting in the queue were left alone.
    assert set(notes) == taken, (notes, taken)
    assert all(note.startswith("re-enqueued: no queue message after ") for note in notes.values())
    started("worker-2", "qcluster", environ=environ)
    procs.wait_until(
        lambda: Run.objects.filter(pk__in=ids, status=RunStatus.SUCCEEDED).count() == 3,
        25,
        f"the prefetched run to be recovered:\n{sched.output()}",
    )
    print(f"{broker}: prefetched run recovered {time.monotonic() - began:.1f} s after the restart")
    time.sleep(1)  # room for a stray second delivery to show itself
    executed_once(watchers)
    long_run.refresh_from_db()
    assert long_run.status == RunStatus.LOST  # its worker died: the lease sweep, as before
