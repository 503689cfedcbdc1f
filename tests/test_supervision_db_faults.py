"""Supervision outlives the database (issue 19, defect 2), with real workers and real faults: on
SQLite another connection holds the write lock longer than the workers' busy timeout; on
PostgreSQL the database refuses new connections and every backend connection of the workers and
the scheduler is terminated, for a few seconds. Runs that finish during the fault are recorded with their real exit
code and output once the database answers again, none executes twice, and a ``forbid`` job
whose run spans the fault never overlaps with its next slot. Executions are counted from
outside the sandboxes (tests/sandboxed.py)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job, Run, RunStatus
from jobs.recovery import sweep
from jobs.services import trigger_run
from tests import procs
from tests.sandboxed import Executions, _comm, _descends_from, _environ

pytestmark = pytest.mark.slow

FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.LOST, RunStatus.TIMED_OUT, RunStatus.CANCELLED)


def env(lease: int) -> dict[str, str]:
    return procs.django_env(
        GOVERNOR_WORKERS="2",
        GOVERNOR_RUN_LEASE_SECONDS=str(lease),
        GOVERNOR_TASK_TIMEOUT="120",
        # A writer gives up on SQLite's lock after 1 s ("database is locked") instead of 30 s.
        GOVERNOR_SQLITE_TIMEOUT_SECONDS="1",
        GOVERNOR_RECORD_RETRY_SECONDS="60",
        GOVERNOR_SCHEDULER_MAX_SLEEP_MS="200",
        GOVERNOR_SCHEDULER_LEASE_MS="1500",
        GOVERNOR_MISFIRE_GRACE_SECONDS="600",
    )


def database_fault(seconds: float) -> None:
    """SQLite: hold the write lock from a second connection. PostgreSQL: refuse new connections to
    the database and terminate every other client backend (the workers', the scheduler's): the
    database is out of reach for everyone but this test until the fault is over."""
    if connection.vendor == "sqlite":
        holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN IMMEDIATE")
            time.sleep(seconds)
            holder.execute("COMMIT")
        finally:
            holder.close()
        return
    import psycopg

    db = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    name = connection.ops.quote_name(db["NAME"])
    # From another database: a database cannot close itself to new connections.
    admin = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname="postgres", autocommit=True
    )
    end = time.monotonic() + seconds
    try:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        while time.monotonic() < end:
            admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
                " AND backend_type = 'client backend'",
                (db["NAME"], ours),
            )
            time.sleep(0.2)
    finally:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.close()


class Concurrency:
    """The most processes named ``sleep`` of one job (by GOVERNOR_JOB_NAME) alive at once, and the
    runs they belonged to; polled every 20 ms from outside the sandboxes."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.ancestor = os.getpid()
        self.most = 0
        self.runs: set[str] = set()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            alive = set()
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if _comm(pid) != "sleep":
                        continue
                    environ = _environ(pid)
                except OSError:
                    continue
                if environ.get("GOVERNOR_JOB_NAME") == self.job_name and _descends_from(pid, self.ancestor):
                    alive.add(environ.get("GOVERNOR_RUN_ID", "?"))
            self.runs |= alive
            self.most = max(self.most, len(alive))
            time.sleep(0.02)

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join()
        return self.most


def test_runs_that_finish_during_a_database_fault_are_recorded_once_with_their_exit_code_and_output(tcast, started):
    # Idempotent, so a run wrongly declared lost would be executed a second time (and seen).
    short = tcast.make_job(
        tcast.dev,
        name="payments.ledger.fault-short",
        command=["/bin/sh", "-c", "sleep 2; echo short-done; exit 7"],
        idempotent=True,
    )
    long = tcast.make_job(
        tcast.dev,
        name="payments.ledger.fault-long",
        command=["/bin/sh", "-c", "sleep 5; echo long-done"],
        idempotent=True,
    )
    cluster = started("worker", "qcluster", environ=env(lease=10))
    runs = [trigger_run(job, actor=tcast.operator, reason="database fault test") for job in (short, long)]
    watchers = {run.pk: Executions(run.pk, job_name=run.job.name) for run in runs}
    procs.wait_until(
        lambda: all(w.attempts() == ["1"] for w in watchers.values()), 30, f"both jobs to start:\n{cluster.output()}"
    )
    # The short run ends inside the fault (its result must wait), the long one renews its lease
    # and checks for a cancel inside it (it must keep its child), and ends just after.
    began = time.monotonic()
    database_fault(4.5)

    def all_recorded():
        sweep()  # a scheduler would sweep: a run whose lease expired would be declared lost
        return Run.objects.filter(pk__in=[r.pk for r in runs], status__in=FINAL).count() == 2

    procs.wait_until(all_recorded, 15, f"both results to be recorded:\n{cluster.output()}")
    recorded_after = time.monotonic() - began
    time.sleep(1.5)  # a second execution would show by now
    seen = {pk: watcher.stop() for pk, watcher in watchers.items()}
    assert seen == {run.pk: ["1"] for run in runs}, seen
    for run in runs:
        run.refresh_from_db()
    short_run, long_run = runs
    assert (short_run.status, short_run.exit_code) == (RunStatus.FAILED, 7), short_run.reason
    assert short_run.reason == "Exited with code 7."
    assert "short-done" in short_run.output
    assert (long_run.status, long_run.exit_code) == (RunStatus.SUCCEEDED, 0), long_run.reason
    assert "long-done" in long_run.output
    assert [(a.number, a.status) for a in short_run.attempts.all()] == [(1, RunStatus.FAILED)]
    assert [(a.number, a.status) for a in long_run.attempts.all()] == [(1, RunStatus.SUCCEEDED)]
    assert recorded_after < 10, recorded_after


def test_a_forbid_job_whose_run_spans_a_database_fault_never_overlaps_its_next_slot(tcast, started):
    name = "payments.ledger.fault-forbid"
    job = tcast.make_job(
        tcast.dev,
        name=name,
        command=["/bin/sh", "-c", "sleep 16; echo forbid-done"],
        cron="0 0 1 1 *",
        timezone="UTC",
        concurrency="forbid",
    )
    environ = env(lease=8)
    cluster = started("worker", "qcluster", environ=environ)
    started("scheduler", "run_scheduler", environ=environ)
    concurrency = Concurrency(name)
    first = trigger_run(job, actor=tcast.operator, reason="database fault test")
    procs.wait_until(lambda: concurrency.runs == {str(first.pk)}, 30, f"the job to start:\n{cluster.output()}")
    began = time.monotonic()
    time.sleep(0.5)
    # Renewals fail for 4 s: within the lease, so the worker keeps its child and renews afterwards.
    # An abandoned child would lose its lease about 8 s in and the scheduler would start the slot below.
    database_fault(4)
    time.sleep(max(0.0, 10.5 - (time.monotonic() - began)))
    # The next slot falls due while the first run still sleeps.
    Job.objects.filter(pk=job.pk).update(next_fire_at=timezone.now() - timedelta(seconds=1))

    def next_slot_decided():
        # Skipped (forbid), or started beside the first run (the defect).
        decided = [*FINAL, RunStatus.SKIPPED, RunStatus.RUNNING]
        return Run.objects.filter(job=job, status__in=decided).exclude(pk=first.pk).exists()

    procs.wait_until(next_slot_decided, 10, "the scheduler to decide the next slot")

    def first_recorded():
        first.refresh_from_db()
        return first.status in FINAL

    procs.wait_until(first_recorded, 15, f"the first run to finish:\n{cluster.output()}")
    # Watch until the first run's process would have ended in any case (it sleeps 16 s).
    time.sleep(max(0.0, 17.5 - (time.monotonic() - began)))
    assert concurrency.stop() == 1, concurrency.runs
    assert (first.status, first.exit_code) == (RunStatus.SUCCEEDED, 0), first.reason
    assert "forbid-done" in first.output
    following = Run.objects.filter(job=job).exclude(pk=first.pk).get()
    assert following.status == RunStatus.SKIPPED, following.reason
    assert "concurrency=forbid" in following.reason


def test_a_fault_longer_than_the_lease_kills_the_job_first_and_leaves_the_runs_to_the_sweep(tcast, started):
    # Attempt 1 of ``hung`` would sleep 30 s; any later attempt, and ``quick``, live a second.
    hung = tcast.make_job(
        tcast.dev,
        name="payments.ledger.fault-hung",
        command=["/bin/sh", "-c", '[ "$GOVERNOR_ATTEMPT" = 1 ] && exec sleep 30; sleep 1; echo hung-done'],
        idempotent=True,
    )
    quick = tcast.make_job(
        tcast.dev,
        name="payments.ledger.fault-quick",
        command=["/bin/sh", "-c", "sleep 1; echo quick-done"],
        idempotent=True,
    )
    environ = {**env(lease=5), "GOVERNOR_RECORD_RETRY_SECONDS": "2"}
    cluster = started("worker", "qcluster", environ=environ)
    overlap = {job.name: Concurrency(job.name) for job in (hung, quick)}
    runs = [trigger_run(job, actor=tcast.operator, reason="database fault test") for job in (hung, quick)]
    watchers = {run.pk: Executions(run.pk, job_name=run.job.name) for run in runs}
    procs.wait_until(
        lambda: all(w.attempts() == ["1"] for w in watchers.values()), 30, f"both jobs to start:\n{cluster.output()}"
    )
    # Longer than the lease and than the recording bound.
    database_fault(8)
    hung_run, quick_run = runs
    log = cluster.output()
    assert f"run {hung_run.pk}: lease not renewed for" in log, log
    assert f"run {quick_run.pk} attempt 1: result NOT recorded" in log, log
    assert Run.objects.get(pk=hung_run.pk).status == RunStatus.RUNNING  # nothing written during the fault
    # Killed within the lease, with the database still out of reach: no process of it is left.
    assert not [pid for pid in watchers[hung_run.pk].seen if os.path.exists(f"/proc/{pid}")]

    def both_retried_and_done():
        sweep()  # the scheduler's sweep: both leases have expired
        return Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.SUCCEEDED).count() == 2

    procs.wait_until(both_retried_and_done, 20, f"the sweep's retries to succeed:\n{cluster.output()}")
    time.sleep(1)
    assert {pk: w.stop() for pk, w in watchers.items()} == {run.pk: ["1", "2"] for run in runs}
    # The hung attempt was killed before its lease expired: its retry never ran beside it.
    assert {name: c.stop() for name, c in overlap.items()} == {hung.name: 1, quick.name: 1}
    for run in runs:
        assert [(a.number, a.status) for a in run.attempts.all()] == [(1, RunStatus.LOST), (2, RunStatus.SUCCEEDED)]
