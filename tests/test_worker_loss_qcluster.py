"""A worker killed with SIGKILL mid-run: the run becomes ``lost`` within a bounded time, is retried
only when the job is idempotent, and django-q2's redelivery of the unacknowledged task (the ORM
broker is at-least-once) never executes the job behind Governor's back."""

from __future__ import annotations

import os
import signal
import time

import pytest

from jobs.models import Alert, AlertKind, Run, RunStatus
from jobs.recovery import sweep
from jobs.services import trigger_run
from tests import procs
from tests.sandboxed import Executions

LEASE_SECONDS = 2
REDELIVERY_SECONDS = 4


@pytest.fixture
def cluster(tcast, tmp_path):
    env = procs.django_env(
        GOVERNOR_WORKERS="1",
        GOVERNOR_RUN_LEASE_SECONDS=str(LEASE_SECONDS),
        GOVERNOR_TASK_TIMEOUT="60",
        GOVERNOR_TASK_RETRY=str(REDELIVERY_SECONDS),
    )
    worker = procs.manage("worker", "qcluster", env=env, log_dir=tmp_path)
    try:
        yield worker
    finally:
        worker.stop()


def kill_worker_mid_run(tcast, cluster, **overrides) -> tuple[Run, Executions]:
    # Attempt 1 hangs; any later one lives a second, long enough to be seen from outside.
    script = '[ "$GOVERNOR_ATTEMPT" = 1 ] && exec sleep 60; sleep 1; exit 0'
    job = tcast.make_job(tcast.dev, command=["/bin/sh", "-c", script], **overrides)
    run = trigger_run(job, actor=tcast.operator, reason="worker loss test")
    executions = Executions(run.pk)
    procs.wait_until(lambda: executions.attempts() == ["1"], 30, f"the job to start:\n{cluster.output()}")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    worker_pid = int(run.worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)
    return run, executions


def sweep_until_not_running(run: Run) -> float:
    killed_at = time.monotonic()

    def settled():
        sweep()
        run.refresh_from_db()
        return run.status != RunStatus.RUNNING

    procs.wait_until(settled, LEASE_SECONDS * 5, "the run to be declared lost")
    return time.monotonic() - killed_at


def test_a_killed_worker_loses_a_non_idempotent_run_which_waits_for_an_operator(tcast, cluster, tmp_path):
    run, executions = kill_worker_mid_run(tcast, cluster)
    elapsed = sweep_until_not_running(run)
    assert run.status == RunStatus.LOST
    assert elapsed <= LEASE_SECONDS + 2
    assert "waiting for an operator" in run.reason
    assert Alert.objects.filter(run=run, kind=AlertKind.LOST_RUN).exists()
    # django-q2 hands the unacknowledged task to the respawned worker; the claim refuses it.
    procs.wait_until(lambda: cluster.output().count(f"processing run-{run.pk}") >= 2, 30, "django-q2 to redeliver")
    time.sleep(0.5)
    assert executions.stop() == ["1"]
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert [(a.number, a.status) for a in run.attempts.all()] == [(1, "lost")]


def test_a_killed_worker_retries_an_idempotent_run_exactly_once_more(tcast, cluster):
    run, executions = kill_worker_mid_run(tcast, cluster, idempotent=True)
    sweep_until_not_running(run)

    def finished():
        run.refresh_from_db()
        return run.status == RunStatus.SUCCEEDED

    procs.wait_until(finished, 30, f"the retry to succeed:\n{cluster.output()}")
    # Let the stale redelivery of the first task arrive too: it must not run the job a third time.
    procs.wait_until(lambda: cluster.output().count(f"processing run-{run.pk}") >= 3, 30, "django-q2 to redeliver")
    time.sleep(0.5)
    assert executions.stop() == ["1", "2"]
    assert [(a.number, a.status) for a in run.attempts.all()] == [(1, "lost"), (2, "succeeded")]
