"""Several nodes, no doubles (issue 20, item 2): two ``run_scheduler`` and two worker clusters
(``run_workers``) against one PostgreSQL and one Redis; under load (timed slots plus a triggered
burst) one scheduler (the leader) and one whole cluster are killed with SIGKILL. Every slot gets
exactly one run, no run is left ``running``, and each attempt ran exactly once, counted from outside
the sandbox. The runs the dead cluster held (running: lost, retried as the jobs are idempotent;
popped from Redis but not started: re-enqueued by the reconciler) run exactly once more."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job, Run, RunStatus, SchedulerLease
from jobs.services import trigger_run
from tests import procs
from tests.sandboxed import _comm, _descends_from, _environ
from tests.test_worker_loss_redis import redis_url  # noqa: F401 - fixture

pytestmark = pytest.mark.ha

# Issue 20: "50 jobs every minute plus triggered bursts": 50 slot jobs due within 5 s (a minute's
# worth, compressed), beside a burst of triggered runs.
SLOTS = 50
SPACING_S = 0.1
BURST = 10
LEASE_S = 1.5
SCRIPT = ["/bin/sh", "-c", "exec sleep 1"]


class AllExecutions:
    """Every sandboxed ``sleep`` this test process started (through its clusters): pid -> (run id, attempt)."""

    def __init__(self) -> None:
        self.ancestor = os.getpid()
        self.seen: dict[int, tuple[int, str]] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) in self.seen:
                    continue
                try:
                    if _comm(pid) != "sleep":
                        continue
                    environ = _environ(pid)
                    if "GOVERNOR_RUN_ID" not in environ or not _descends_from(pid, self.ancestor):
                        continue
                except OSError:
                    continue
                self.seen[int(pid)] = (int(environ["GOVERNOR_RUN_ID"]), environ.get("GOVERNOR_ATTEMPT", ""))
            time.sleep(0.02)

    def stop(self) -> dict[int, list[str]]:
        self.stop_event.set()
        self.thread.join()
        by_run: dict[int, list[str]] = defaultdict(list)
        for run_id, attempt in self.seen.values():
            by_run[run_id].append(attempt)
        return {run_id: sorted(attempts) for run_id, attempts in by_run.items()}


def environ(url: str) -> dict[str, str]:
    return procs.django_env(
        GOVERNOR_Q_BROKER="redis",
        REDIS_URL=url,
        GOVERNOR_WORKERS="2",
        GOVERNOR_RUN_LEASE_SECONDS="2",
        GOVERNOR_TASK_TIMEOUT="60",
        GOVERNOR_SCHEDULER_MAX_SLEEP_MS="100",
        GOVERNOR_SCHEDULER_LEASE_MS=str(int(LEASE_S * 1000)),
        GOVERNOR_REQUEUE_AFTER_MS="5000",
        GOVERNOR_MISFIRE_GRACE_SECONDS="600",
    )


def slot_jobs(cast, first_slot) -> tuple[list[Job], Job]:
    """SLOTS idempotent jobs, one slot each SPACING_S apart; after it they fire only on 1 January."""
    template = cast.make_job(cast.dev, command=SCRIPT, cron="0 0 1 1 *", timezone="UTC", idempotent=True)
    jobs = []
    for i in range(SLOTS):
        job = Job.objects.get(pk=template.pk)
        job.pk = None
        job.name = f"payments.nodes.job-{i}"
        for field in Job._meta.concrete_fields:
            if field.unique and field.has_default() and not field.primary_key:
                setattr(job, field.attname, field.get_default())
        job.next_fire_at = first_slot + timedelta(seconds=i * SPACING_S)
        jobs.append(job)
    Job.objects.filter(pk=template.pk).update(status="paused")
    return Job.objects.bulk_create(jobs), template


def in_cluster(pid: int, cluster) -> bool:
    return _descends_from(str(pid), cluster.proc.pid)


def test_two_schedulers_and_two_clusters_lose_one_of_each_without_a_missed_doubled_or_stuck_run(
    tcast, started, request
):
    if connection.vendor != "postgresql":
        pytest.skip("runs on PostgreSQL (DATABASE_URL) with a Redis broker")
    env = environ(request.getfixturevalue("redis_url"))
    watch = AllExecutions()
    schedulers = [started(f"scheduler-{i}", "run_scheduler", environ=env) for i in (1, 2)]
    clusters = [started(f"cluster-{i}", "run_workers", environ=env) for i in (1, 2)]
    for process in schedulers:
        process.wait_for("scheduler started")
    for process in clusters:
        process.wait_for("ready for work", timeout=60)

    first_slot = timezone.now() + timedelta(seconds=2)
    jobs, template = slot_jobs(tcast, first_slot)
    # A triggered burst alongside the slots, handed to Redis as a web node would.
    Job.objects.filter(pk=template.pk).update(status="active")
    template.refresh_from_db()
    burst = [trigger_run(template, actor=tcast.operator, reason=f"burst {i}") for i in range(BURST)]
    Job.objects.filter(pk=template.pk).update(status="paused")
    done = procs.run_manage(
        "shell", "-c", f"from jobs.queue import enqueue_all; enqueue_all({[r.pk for r in burst]!r})", env=env
    )
    assert done.returncode == 0, done.stderr

    # Kill the leading scheduler a third of the way through the slots, then the cluster holding a run.
    procs.wait_until(SchedulerLease.objects.exists, 10, "a leader")
    holder_pid = int(SchedulerLease.objects.get().holder.split(":")[1])
    leader = next(p for p in schedulers if p.proc.pid == holder_pid)
    time.sleep(max(0.0, (first_slot - timezone.now()).total_seconds() + SLOTS * SPACING_S / 3))
    os.killpg(leader.proc.pid, signal.SIGKILL)

    def running_on_a_cluster():
        for run in Run.objects.filter(status=RunStatus.RUNNING).exclude(worker=""):
            pid = int(run.worker.rsplit(":", 1)[1])
            for cluster in clusters:
                if in_cluster(pid, cluster):
                    return cluster
        return None

    victim = procs.wait_until(running_on_a_cluster, 20, "a run on a cluster")
    held = set(Run.objects.filter(status=RunStatus.RUNNING).values_list("pk", flat=True))
    os.killpg(victim.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    everything = [j.pk for j in jobs] + [template.pk]

    def settled():
        runs = Run.objects.filter(job__in=everything)
        return runs.count() == SLOTS + BURST and not runs.exclude(status=RunStatus.SUCCEEDED).exists()

    survivors = [p for p in schedulers + clusters if p not in (leader, victim)]
    logs = lambda: "\n".join(p.output()[-3000:] for p in survivors)  # noqa: E731
    procs.wait_until(settled, 90, f"every run to succeed:\n{logs()}")
    recovered_in = time.monotonic() - killed_at
    time.sleep(1.5)  # room for a stray second delivery to show itself
    seen = watch.stop()

    runs = list(Run.objects.filter(job__in=everything).prefetch_related("attempts"))
    slot_runs = sorted((r for r in runs if r.job_id != template.pk), key=lambda r: r.scheduled_for)
    assert [r.job_id for r in slot_runs] == [j.pk for j in jobs], "one run per slot, none missed or doubled"
    assert all(r.scheduled_for == j.next_fire_at for r, j in zip(slot_runs, jobs, strict=True))
    assert Counter(r.status for r in runs) == {RunStatus.SUCCEEDED: SLOTS + BURST}
    retried = []
    for run in runs:
        attempts = sorted(run.attempts.all(), key=lambda a: a.number)
        statuses = [a.status for a in attempts]
        # Exactly one success, as the last attempt; an earlier one only where the cluster died mid-run.
        assert statuses[-1] == "succeeded" and statuses.count("succeeded") == 1, (run.pk, statuses)
        if len(attempts) > 1:
            assert run.pk in held and statuses == ["lost", "succeeded"], (run.pk, statuses)
            retried.append(run.pk)
        # Each recorded attempt started exactly one process, and no process ran unrecorded.
        assert seen.get(run.pk) == [str(a.number) for a in attempts], (run.pk, seen.get(run.pk), statuses)
    assert retried, "the killed cluster held a run: it is lost, then retried"
    print(
        f"ha nodes: {len(runs)} runs, {len(retried)} lost with the cluster and retried once, "
        f"all settled {recovered_in:.1f} s after the kill",
        file=sys.stderr,
    )
