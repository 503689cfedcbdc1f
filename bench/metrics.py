"""/metrics: one scrape with 10,000 jobs and a large run table (BENCH_METRICS_RUNS, 1,000,000 by default)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from bench.report import Report, median, timed

TITLE = "Metrics (issue 16)"

JOBS = 10_000
RUNS = int(os.environ.get("BENCH_METRICS_RUNS", "1000000"))
DAYS = 30  # runs spread over a month; the default 24 h window holds about a thirtieth of them
POOLS = 20
BATCH = 10_000


def run(report: Report) -> None:
    from django.test import Client
    from django.utils import timezone

    from governance.models import Environment, Team, Tenant
    from jobs.models import Alert, AlertKind, Job, Pool, Run, RunStatus, SchedulerLease

    now = timezone.now()
    tenant = Tenant.objects.create(slug="bench-metrics", name="Bench metrics")
    team = Team.objects.create(tenant=tenant, slug="ops", name="Ops")
    envs = [
        Environment.objects.create(tenant=tenant, slug=slug, name=slug, order=i, required_approvals=0)
        for i, slug in enumerate(("dev", "staging", "prod"))
    ]
    for env in envs:
        for i in range(POOLS // len(envs) + 1):
            Pool.objects.create(tenant=tenant, environment=env, name=f"pool-{i}", slots=10)
    started = time.perf_counter()
    jobs = Job.objects.bulk_create(
        [
            Job(
                tenant=tenant,
                team=team,
                environment=envs[i % 3],
                name=f"bench.metrics.job-{i}",
                command=["/bin/true"],
                cron="*/5 * * * *",
                pool=f"pool-{i % (POOLS // 3)}" if i % 2 else "",
                next_fire_at=now - timedelta(seconds=i % 120),
            )
            for i in range(JOBS)
        ],
        batch_size=2000,
    )
    per_job = max(1, RUNS // JOBS)
    step = timedelta(days=DAYS) / per_job
    outcome = [RunStatus.SUCCEEDED] * 17 + [RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED]
    rows = []
    made = 0
    for k in range(per_job):
        finished = now - step * k
        for i, job in enumerate(jobs):
            active = k == 0 and i % 20 == 0
            took = timedelta(seconds=(i * 7 + k * 13) % 5000)
            rows.append(
                Run(
                    job=job,
                    tenant=tenant,
                    scheduled_for=finished - took - timedelta(seconds=1),
                    status=(RunStatus.QUEUED if i % 40 else RunStatus.RUNNING) if active else outcome[(i + k) % 20],
                    started_at=None if active else finished - took,
                    finished_at=None if active else finished,
                    job_version=1,
                    definition={},
                )
            )
            if len(rows) == BATCH:
                Run.objects.bulk_create(rows)
                made += len(rows)
                rows = []
    if rows:
        Run.objects.bulk_create(rows)
        made += len(rows)
    Alert.objects.bulk_create(
        [Alert(tenant=tenant, job=jobs[i], kind=AlertKind.LOST_RUN, message="lost") for i in range(0, JOBS, 50)]
    )
    SchedulerLease.objects.create(
        name="scheduler", holder="bench:1:x", acquired_at=now, expires_at=now + timedelta(seconds=15)
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"  planted {JOBS} jobs and {made} runs in {time.perf_counter() - started:.0f} s", flush=True)

    client = Client(REMOTE_ADDR="127.0.0.1")

    def scrape():
        response = client.get("/metrics")
        assert response.status_code == 200, response.status_code
        return response

    samples = []
    size = 0
    for _ in range(5):
        seconds, response = timed(scrape)
        samples.append(seconds)
        size = len(response.content)
    report.figure(
        "metrics_scrape_ms",
        median(samples) * 1000,
        "ms",
        target="< 500",
        note=f"{JOBS:,} jobs, {made:,} runs ({connection.vendor}), median of 5; {size // 1024} KiB",
    )
    if os.environ.get("BENCH_METRICS_KEEP"):
        return
    Run.objects.filter(tenant=tenant).delete()
    Alert.objects.filter(tenant=tenant).delete()
    Job.objects.filter(tenant=tenant).delete()
