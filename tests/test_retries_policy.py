"""Retries are attempts of the same run: only declared transient failures, exponential backoff
with full jitter and a cap, at most max_attempts."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs import retries
from jobs.executor import execute_run
from jobs.models import Run, RunStatus
from jobs.recovery import sweep
from jobs.services import trigger_run

RETRY = {"max_attempts": 3, "backoff_seconds": 0.5, "backoff_cap_seconds": 2, "transient_exit_codes": [75]}


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def run_to_completion(cast, job) -> Run:
    run = trigger_run(job, actor=cast.operator, reason="test")
    for _ in range(10):
        execute_run(run.pk)
        run.refresh_from_db()
        if run.status != RunStatus.SCHEDULED:
            return run
        assert run.next_attempt_at is not None and run.finished_at is None
        # Pretend the backoff has passed: the sweep queues the next attempt.
        assert sweep(now=run.next_attempt_at + timedelta(milliseconds=1)).requeued == 1
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED
    raise AssertionError("the run never settled")


def test_a_transient_failure_is_retried_until_it_succeeds(cast):
    job = cast.make_job(cast.dev, command=sh('[ "$GOVERNOR_ATTEMPT" = 3 ] || exit 75; echo done'), retry=RETRY)
    run = run_to_completion(cast, job)
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 3
    attempts = list(run.attempts.all())
    assert [(a.number, a.status, a.exit_code) for a in attempts] == [
        (1, "failed", 75),
        (2, "failed", 75),
        (3, "succeeded", 0),
    ]
    assert all(0 <= a.retry_delay_s <= 2 for a in attempts[:2]) and attempts[2].retry_delay_s is None


def test_retries_stop_at_max_attempts(cast):
    job = cast.make_job(cast.dev, command=sh("exit 75"), retry=RETRY)
    run = run_to_completion(cast, job)
    assert run.status == RunStatus.FAILED and run.attempts.count() == 3 and run.finished_at is not None


def test_an_undeclared_failure_is_not_retried(cast):
    job = cast.make_job(cast.dev, command=sh("exit 1"), retry=RETRY)
    run = run_to_completion(cast, job)
    assert run.status == RunStatus.FAILED and run.attempts.count() == 1


def test_a_retry_is_not_due_before_its_backoff(cast):
    job = cast.make_job(
        cast.dev, command=sh("exit 75"), retry={**RETRY, "backoff_seconds": 60, "backoff_cap_seconds": 60}
    )
    run = trigger_run(job, actor=cast.operator, reason="test")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SCHEDULED
    assert sweep(now=run.next_attempt_at - timedelta(seconds=1)).requeued == 0
    assert execute_run(run.pk) == "not-claimed"


def test_backoff_is_full_jitter_under_an_exponential_cap():
    rng = random.Random(7)
    policy = {"backoff_seconds": 1, "backoff_cap_seconds": 10}
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (12, 10)]:
        delays = [retries.backoff_delay(policy, attempt, rng=rng) for _ in range(300)]
        assert 0 <= min(delays) < ceiling * 0.1
        assert ceiling * 0.9 < max(delays) <= ceiling


def test_retry_after_is_a_floor_for_the_backoff():
    policy = {"backoff_seconds": 1, "backoff_cap_seconds": 10}
    assert retries.backoff_delay(policy, 1, retry_after=30, rng=random.Random(1)) == 30


@pytest.mark.parametrize(
    "retry",
    [
        {"max_attempts": 0},
        {"max_attempts": 99},
        {"transient_exit_codes": [0]},
        {"transient_exit_codes": "75"},
        {"backoff_seconds": -1},
        {"retries": 3},
    ],
)
def test_bad_retry_policies_are_refused(cast, retry):
    with pytest.raises(ValidationError) as info:
        cast.make_job(cast.dev, retry=retry)
    assert "retry" in info.value.message_dict


def test_a_run_marked_lost_while_running_keeps_its_lost_state(cast):
    job = cast.make_job(cast.dev, command=["/bin/true"])
    run = trigger_run(job, actor=cast.operator, reason="test")
    from jobs.executor import claim

    assert claim(run.pk)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sweep().lost == 1
    run.refresh_from_db()
    assert run.status == RunStatus.LOST and run.finished_at is not None
    assert execute_run(run.pk) == "not-claimed"
