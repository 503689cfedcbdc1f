"""Two real ``run_scheduler`` processes on PostgreSQL; SIGKILL the leader mid-stream.

Every slot gets exactly one run, and the slots that came due while nobody led are enqueued
within the lease time: no slot missed, none doubled.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job, Run, RunStatus, SchedulerLease
from tests import procs

LEASE_S = 1.5
SLOTS = 40
SPACING_S = 0.25


@pytest.fixture
def schedulers(tcast, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("runs on PostgreSQL (DATABASE_URL), where several schedulers share one database")
    env = procs.django_env(GOVERNOR_SCHEDULER_LEASE_MS=str(int(LEASE_S * 1000)), GOVERNOR_SCHEDULER_MAX_SLEEP_MS="100")
    started = [procs.manage(f"scheduler-{i}", "run_scheduler", env=env, log_dir=tmp_path) for i in (1, 2)]
    try:
        for p in started:
            p.wait_for("scheduler started")
        yield started
    finally:
        for p in started:
            p.stop()


def make_jobs(cast, first_slot):
    """SLOTS jobs, one slot each, spaced SPACING_S apart; after it they fire only on 1 January."""
    template = cast.make_job(cast.dev, cron="0 0 1 1 *", timezone="UTC")
    jobs = []
    for i in range(SLOTS):
        job = Job.objects.get(pk=template.pk)
        job.pk = None
        job.name = f"payments.failover.job-{i}"
        for field in Job._meta.concrete_fields:
            if field.unique and field.has_default() and not field.primary_key:
                setattr(job, field.attname, field.get_default())
        job.next_fire_at = first_slot + timedelta(seconds=i * SPACING_S)
        jobs.append(job)
    Job.objects.filter(pk=template.pk).update(status="paused")
    return Job.objects.bulk_create(jobs)


def leader(started):
    lease = SchedulerLease.objects.get()
    pid = int(lease.holder.split(":")[1])
    return next(p for p in started if p.proc.pid == pid), lease


def test_killing_the_leader_hands_over_within_the_lease_without_missing_or_doubling_a_slot(tcast, schedulers):
    first_slot = timezone.now() + timedelta(seconds=2)
    jobs = make_jobs(tcast, first_slot)
    deadline = time.monotonic() + 10
    while not SchedulerLease.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    old, lease = leader(schedulers)
    survivor = next(p for p in schedulers if p is not old)
    # Kill the leader a third of the way through the slots, with no chance to clean up.
    kill_at = first_slot + timedelta(seconds=SLOTS * SPACING_S / 3)
    time.sleep(max(0.0, (kill_at - timezone.now()).total_seconds()))
    os.killpg(old.proc.pid, signal.SIGKILL)
    killed_at = timezone.now()
    before_kill = Run.objects.filter(scheduled_for__lte=killed_at).count()

    last_slot = first_slot + timedelta(seconds=(SLOTS - 1) * SPACING_S)
    deadline = time.monotonic() + (last_slot - timezone.now()).total_seconds() + LEASE_S + 10
    while Run.objects.count() < SLOTS and time.monotonic() < deadline:
        time.sleep(0.1)

    runs = list(Run.objects.order_by("scheduled_for"))
    assert [r.job_id for r in runs] == [j.pk for j in jobs], "one run per slot, none missed"
    assert all(r.scheduled_for == j.next_fire_at for r, j in zip(runs, jobs, strict=True))
    assert {r.status for r in runs} == {RunStatus.QUEUED}
    # Handover within the lease (plus a poll beat and a tick of slack).
    lateness = [(r.queued_at - r.scheduled_for).total_seconds() for r in runs]
    assert max(lateness) < LEASE_S + 1.0, lateness
    after = SchedulerLease.objects.get()
    assert after.term == lease.term + 1 and str(survivor.proc.pid) in after.holder
    assert 0 < before_kill < SLOTS
