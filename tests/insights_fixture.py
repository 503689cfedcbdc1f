"""A tenant with a few hundred jobs and generated run history, with planted insights (issue 21):

* pool ``batch`` in acme prod (4 slots): 20 payments jobs starting between 22:00 and 22:57 UTC,
  one minute each, that run a minute a day but three hours on the last day of the month (100 days
  of history: the seasonal profile learns it) -> the pool overflows on each month end, only then;
* pool ``quick`` in acme prod (10 slots): 10 short jobs that never fill it;
* the 02:00 herd: 120 data jobs in acme staging, all ``0 2 * * *``;
* 200 background jobs in acme dev spread over the day (at most 3 starting on any minute);
* globex: 15 ops jobs at 04:00 (another tenant's herd, never shown to acme).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone

from jobs.models import Job, Pool, Run, RunStatus

HERD = 120
CLOSE_JOBS = 20
CLOSE_SLOTS = 4
MONTH_END_S = 3 * 3600
NORMAL_S = 60
HISTORY_DAYS = 100


def _job(cast, tenant, team, env, name: str, cron: str, **fields) -> Job:
    return Job(
        tenant=tenant,
        team=team,
        environment=env,
        **cast.definition(name=name, cron=cron, timezone="UTC", timeout_seconds=4 * 3600),
        **fields,
    )


def _runs(job: Job, durations: list[tuple[datetime, float]]) -> list[Run]:
    return [
        Run(
            job=job,
            tenant_id=job.tenant_id,
            scheduled_for=at,
            started_at=at,
            finished_at=at + timedelta(seconds=seconds),
            status=RunStatus.SUCCEEDED,
            exit_code=0,
            job_version=1,
            definition={},
        )
        for at, seconds in durations
    ]


def is_month_end(day: date) -> bool:
    return calendar.monthrange(day.year, day.month)[1] == day.day


def plant(cast) -> dict:
    """Create the jobs, pools and runs above; return what the tests look for."""
    now = timezone.now()
    Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="batch", slots=CLOSE_SLOTS)
    Pool.objects.create(tenant=cast.acme, environment=cast.prod, name="quick", slots=10)
    jobs: list[Job] = []
    close = [
        _job(cast, cast.acme, cast.payments, cast.prod, f"payments.close.{i:02d}", f"{i * 3} 22 * * *", pool="batch")
        for i in range(CLOSE_JOBS)
    ]
    quick = [
        _job(cast, cast.acme, cast.payments, cast.prod, f"payments.quick.{i:02d}", f"{i * 5 + 1} 9 * * *", pool="quick")
        for i in range(10)
    ]
    herd = [_job(cast, cast.acme, cast.data, cast.staging, f"data.load.{i:03d}", "0 2 * * *") for i in range(HERD)]
    background = []
    for i in range(200):
        minute_of_day = (i * 7 + 300) % 1440  # 05:00 onwards, 7 minutes apart: never 02:00, never 22:xx twice
        hour, minute = divmod(minute_of_day, 60)
        if hour in (2, 22):
            hour = 12
        background.append(_job(cast, cast.acme, cast.data, cast.dev, f"data.misc.{i:03d}", f"{minute} {hour} * * *"))
    globex = [_job(cast, cast.globex, cast.ops, cast.globex_prod, f"ops.snap.{i:02d}", "0 4 * * *") for i in range(15)]
    jobs = Job.objects.bulk_create(close + quick + herd + background + globex)
    runs: list[Run] = []
    today = now.date()
    for job in jobs[:CLOSE_JOBS]:
        minute = int(job.cron.split()[0])
        history = []
        for back in range(1, HISTORY_DAYS + 1):
            day = today - timedelta(days=back)
            at = datetime(day.year, day.month, day.day, 22, minute, tzinfo=UTC)
            history.append((at, MONTH_END_S if is_month_end(day) else NORMAL_S))
        runs += _runs(job, history)
    for job in jobs[CLOSE_JOBS:]:
        hour, minute = int(job.cron.split()[1]), int(job.cron.split()[0])
        history = []
        for back in range(1, 6):
            day = today - timedelta(days=back)
            history.append((datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC), 30))
        runs += _runs(job, history)
    Run.objects.bulk_create(runs, batch_size=1000)
    return {"close": jobs[:CLOSE_JOBS], "herd": jobs[CLOSE_JOBS + 10 : CLOSE_JOBS + 10 + HERD], "now": now}


def month_ends_between(start: datetime, end: datetime) -> list[str]:
    """The month ends whose 22:00 UTC fires fall in [start, end) (dates, ISO)."""
    found = []
    day = start.date()
    while datetime(day.year, day.month, day.day, 22, tzinfo=UTC) < end:
        if is_month_end(day) and datetime(day.year, day.month, day.day, 22, tzinfo=UTC) >= start:
            found.append(day.isoformat())
        day += timedelta(days=1)
    return found
