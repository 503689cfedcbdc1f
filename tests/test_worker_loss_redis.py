"""The Redis broker (GOVERNOR_Q_BROKER=redis) with a worker killed by SIGKILL mid-run: django-q2's
Redis broker is at-most-once (the popped task dies with the worker and is never handed out again),
so the lease sweep must find the run ``lost`` within a bounded time; it is retried (as a fresh task)
only when the job is idempotent, and the job never runs twice for one attempt.

A real redis-server on loopback, a real ``qcluster`` and a real ``run_scheduler`` (whose sweep
declares the run lost and enqueues the retry into Redis) run as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import redis

from jobs.models import Alert, AlertKind, Run, RunStatus
from jobs.services import trigger_run
from tests import procs
from tests.sandboxed import Executions
from tests.vault import free_port

LEASE_SECONDS = 2
QUEUE_KEY = "django_q:governor:q"


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(10)


@pytest.fixture
def redis_env(redis_url):
    return procs.django_env(
        GOVERNOR_Q_BROKER="redis",
        REDIS_URL=redis_url,
        GOVERNOR_WORKERS="1",
        GOVERNOR_RUN_LEASE_SECONDS=str(LEASE_SECONDS),
        GOVERNOR_TASK_TIMEOUT="60",
        GOVERNOR_SCHEDULER_MAX_SLEEP_MS="200",
    )


@pytest.fixture
def cluster(tcast, redis_env, tmp_path):
    worker = procs.manage("worker", "qcluster", env=redis_env, log_dir=tmp_path)
    scheduler = procs.manage("scheduler", "run_scheduler", env=redis_env, log_dir=tmp_path)
    try:
        yield worker
    finally:
        scheduler.stop()
        worker.stop()


def start_and_kill(tcast, cluster, redis_env, **overrides) -> tuple[Run, float, Executions]:
    # Attempt 1 hangs; any later one lives a second, long enough to be seen from outside.
    script = '[ "$GOVERNOR_ATTEMPT" = 1 ] && exec sleep 60; sleep 1; exit 0'
    # Yearly, so the scheduler beside the cluster never fires the job by itself during the test.
    job = tcast.make_job(tcast.dev, command=["/bin/sh", "-c", script], cron="0 0 1 1 *", **overrides)
    run = trigger_run(job, actor=tcast.operator, reason="worker loss test (redis)")
    # The job cannot leave a file on the host (it runs sandboxed): its processes are watched instead.
    executions = Executions(run.pk)
    # This test process's own broker is the ORM one: hand the run to Redis as a worker node would.
    enqueued = procs.run_manage(
        "shell", "-c", f"from jobs.services import enqueue_run; enqueue_run({run.pk})", env=redis_env
    )
    assert enqueued.returncode == 0, enqueued.stderr
    procs.wait_until(lambda: executions.attempts() == ["1"], 30, f"the job to start:\n{cluster.output()}")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    os.kill(int(run.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    return run, time.monotonic(), executions


def test_redis_broker_a_killed_worker_loses_a_non_idempotent_run_for_good(tcast, cluster, redis_env, redis_url):
    run, killed_at, executions = start_and_kill(tcast, cluster, redis_env)

    def settled():
        run.refresh_from_db()
        return run.status != RunStatus.RUNNING

    procs.wait_until(settled, LEASE_SECONDS * 5, "the scheduler's sweep to declare the run lost")
    assert time.monotonic() - killed_at <= LEASE_SECONDS + 3
    assert run.status == RunStatus.LOST and "waiting for an operator" in run.reason
    assert Alert.objects.filter(run=run, kind=AlertKind.LOST_RUN).count() == 1
    # At most once: the task died with its worker; the respawned worker gets nothing to redo.
    cluster.wait_for("ready for work", timeout=30)
    time.sleep(2)
    assert redis.Redis.from_url(redis_url).llen(QUEUE_KEY) == 0
    assert cluster.output().count(f"processing run-{run.pk}") == 1
    assert executions.stop() == ["1"]
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert [(a.number, a.status) for a in run.attempts.all()] == [(1, "lost")]


def test_redis_broker_a_killed_worker_retries_an_idempotent_run_exactly_once_more(tcast, cluster, redis_env, redis_url):
    run, _killed_at, executions = start_and_kill(tcast, cluster, redis_env, idempotent=True)

    def succeeded():
        run.refresh_from_db()
        return run.status == RunStatus.SUCCEEDED

    procs.wait_until(succeeded, 40, f"the retry to succeed:\n{cluster.output()}")
    time.sleep(2)  # room for any stray delivery to show itself
    assert executions.stop() == ["1", "2"]
    assert [(a.number, a.status) for a in run.attempts.order_by("number")] == [(1, "lost"), (2, "succeeded")]
    # One task for the first attempt, one fresh task for the retry, nothing more.
    assert cluster.output().count(f"processing run-{run.pk}") == 2
    assert redis.Redis.from_url(redis_url).llen(QUEUE_KEY) == 0


@pytest.mark.parametrize(
    "values, message",
    [
        ({"GOVERNOR_Q_BROKER": "redis", "REDIS_URL": ""}, "GOVERNOR_Q_BROKER=redis needs REDIS_URL"),
        ({"GOVERNOR_Q_BROKER": "kafka"}, "GOVERNOR_Q_BROKER must be 'orm' or 'redis'"),
    ],
)
def test_a_broker_setting_that_cannot_work_refuses_to_start(values, message):
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(DJANGO_SETTINGS_MODULE="governor.settings", **values)
    done = procs.run_manage("check", env=env)
    assert done.returncode != 0
    assert message in done.stderr
