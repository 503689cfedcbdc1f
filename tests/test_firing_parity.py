"""One answer to "when does this job fire" (issue 14): the scheduler, ticking with a deterministic
clock, and every preview (API, job page, change-request preview, CLI) give the same answer for the
same job: allowed run windows, a holiday, two overlapping maintenance windows and a DST change."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from jobs import firing, scheduler
from jobs.models import Job, Run, RunStatus
from jobs.preview import preview_definition, window_warnings

START = datetime(2026, 3, 26, 0, 0, tzinfo=UTC)
END = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
STATUS_OF = {firing.FIRE: RunStatus.QUEUED, firing.DEFER: RunStatus.DEFERRED, firing.SKIP: RunStatus.SKIPPED}


@pytest.fixture
def berlin_job(cast):
    """01:30, 02:30 and 03:30 in Berlin (02:30 does not exist on 29 March: shifted to 03:00), allowed
    from 00:00 for 180 minutes of elapsed time (until 04:00 CEST on the night of the change), no runs
    on the holiday of 27 March, and two overlapping maintenance windows in the night of 30 to 31 March
    (each ends inside the other's span: the scheduler chains them) and one with the skip policy."""
    cast.make_calendar("feiertage", dates=["2026-03-27"])
    job = cast.make_job(
        cast.dev,
        cron="30 1,2,3 * * *",
        timezone="Europe/Berlin",
        windows=[{"cron": "0 0 * * *", "duration_minutes": 180}],
        window_policy="defer",
        holiday_calendar="feiertage",
        rationale="Nightly batch around the storage maintenance; the DST night is part of the test.",
    )
    at = datetime(2026, 3, 30, 23, 0, tzinfo=UTC)
    cast.make_window(
        environment=cast.dev, name="san A", starts_at=at + timedelta(minutes=15), ends_at=at + timedelta(minutes=75)
    )
    cast.make_window(name="san B", starts_at=at + timedelta(minutes=60), ends_at=at + timedelta(minutes=105))
    skip_at = datetime(2026, 4, 1, 23, 0, tzinfo=UTC)
    cast.make_window(name="freeze", starts_at=skip_at, ends_at=skip_at + timedelta(minutes=45), policy="skip")
    # Another environment's window changes nothing for this job.
    cast.make_window(environment=cast.prod, name="prod only", starts_at=START, ends_at=END)
    Job.objects.filter(pk=job.pk).update(next_fire_at=job.next_fire_after(START))
    job.refresh_from_db()
    return job


def scheduler_answers(job: Job) -> list[tuple]:
    """Tick at every instant the scheduler would wake up for (the job's next slot, a deferred run's
    release), record each run as it was created, and let queued runs finish before the next slot."""
    answers, seen = [], set()
    while True:
        job.refresh_from_db()
        waiting = Run.objects.filter(job=job, status=RunStatus.DEFERRED).order_by("deferred_until").first()
        instants = [job.next_fire_at] + ([waiting.deferred_until] if waiting else [])
        now = min(instants)
        if now > END:
            break
        scheduler.tick(now=now)
        for run in Run.objects.filter(job=job).exclude(pk__in=seen).order_by("scheduled_for"):
            seen.add(run.pk)
            answers.append((run.scheduled_for, run.status, run.reason, run.deferred_until))
        released = Run.objects.filter(job=job, status=RunStatus.QUEUED)
        if waiting and now == waiting.deferred_until:
            # Deferred runs are released exactly when they were deferred to (one at a time: concurrency=forbid).
            assert not Run.objects.filter(job=job, status=RunStatus.DEFERRED, deferred_until__lte=now).exists()
            assert released.exists()
        released.update(status=RunStatus.SUCCEEDED, finished_at=now)
    return answers


def as_answers(entries: list[dict]) -> list[tuple]:
    return [
        (
            datetime.fromisoformat(e["utc"].replace("Z", "+00:00")),
            STATUS_OF[e["decision"]],
            e["reason"],
            datetime.fromisoformat(e["deferred_to"].replace("Z", "+00:00")) if e["deferred_to"] else None,
        )
        for e in entries
    ]


def test_the_scheduler_and_every_preview_give_the_same_answer_for_windows_holidays_and_dst(cast, client, berlin_job):
    job = berlin_job
    expected = scheduler_answers(job)
    # What the scheduler did, in words a reader can check.
    by_slot = {slot.isoformat(): (status, reason) for slot, status, reason, _ in expected}
    assert by_slot["2026-03-27T00:30:00+00:00"] == (
        RunStatus.SKIPPED,
        "Skipped: 2026-03-27 is a holiday in calendar 'feiertage'.",
    )
    assert by_slot["2026-03-26T02:30:00+00:00"] == (
        RunStatus.DEFERRED,
        "Deferred to 2026-03-26T23:00:00Z: outside the job's allowed run windows.",
    )
    # The night of the change: 02:30 is shifted to 03:00 CEST, and 03:30 CEST is still inside the
    # 180 minutes opened at 00:00 CET.
    assert by_slot["2026-03-29T01:00:00+00:00"][0] == RunStatus.QUEUED
    assert by_slot["2026-03-29T01:30:00+00:00"][0] == RunStatus.QUEUED
    # Overlapping windows chain: the run at 01:30 CEST waits for the end of both.
    assert by_slot["2026-03-30T23:30:00+00:00"] == (
        RunStatus.DEFERRED,
        "Deferred to 2026-03-31T00:45:00Z: maintenance window 'san A', 'san B'.",
    )
    assert by_slot["2026-04-01T23:30:00+00:00"] == (
        RunStatus.SKIPPED,
        "Skipped: inside maintenance window 'freeze' (until 2026-04-01T23:45:00Z).",
    )
    assert {status for _, status, _, _ in expected} == {RunStatus.QUEUED, RunStatus.DEFERRED, RunStatus.SKIPPED}
    count = len(expected)

    # The API (detail=true, job=): same instants, same decisions, same reasons.
    client.force_login(cast.author)
    response = client.get(
        "/api/v1/schedule-preview/",
        {"job": job.pk, "after": "2026-03-25T23:59:59Z", "count": count, "detail": "true"},
    )
    assert response.status_code == 200, response.content
    assert as_answers(response.json()) == expected

    # The job page and the change-request previews (preview_definition).
    entries = preview_definition(
        job.definition(),
        tenant_id=job.tenant_id,
        environment_id=job.environment_id,
        after=START - timedelta(seconds=1),
        count=count,
    )
    assert as_answers(entries) == expected

    # The change warnings name both windows and the chained end, as the scheduler's reason does.
    warnings = window_warnings(
        job.definition(),
        tenant_id=job.tenant_id,
        environment_id=job.environment_id,
        now=START - timedelta(seconds=1),
        count=count,
    )
    assert (
        "The run at 2026-03-30T23:30:00Z (2026-03-31 01:30 CEST) falls in maintenance windows 'san A', 'san B' "
        "and will be deferred to 2026-03-31T00:45:00Z." in warnings
    )
    assert len(warnings) == sum(1 for _, _, reason, _ in expected if "maintenance window" in reason)

    # The CLI prints each deferral and skip with its reason.
    out = io.StringIO()
    call_command("schedule_preview", job=job.pk, after="2026-03-25T23:59:59Z", count=count, stdout=out)
    text = out.getvalue()
    for _slot, status, reason, _ in expected:
        if status != RunStatus.QUEUED:
            assert reason in text
    assert "concurrency=forbid: skipped if the previous run is still active" in text.lower()
