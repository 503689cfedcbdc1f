"""Alert-rule evaluation: one cycle of ``monitoring.rules.evaluate`` with 10,000 jobs and 3 rules each."""

from __future__ import annotations

import time
from datetime import timedelta

from bench.report import Report, median, timed

TITLE = "Alert rules (issue 16)"

JOBS = 10_000
RUNS_PER_JOB = 5
BATCH = 10_000


def run(report: Report) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from governance.models import Environment, Team, Tenant
    from jobs.models import Job, Run, RunStatus
    from monitoring.models import AlertRule, DurationSamples, RuleState
    from monitoring.rules import evaluate

    now = timezone.now().replace(microsecond=0)
    tenant = Tenant.objects.create(slug="bench-rules", name="Bench rules")
    team = Team.objects.create(tenant=tenant, slug="ops", name="Ops")
    envs = [
        Environment.objects.create(tenant=tenant, slug=slug, name=slug, order=i, required_approvals=0)
        for i, slug in enumerate(("dev", "staging", "prod"))
    ]
    started = time.perf_counter()
    criticality = ["critical", "high", "medium", "medium", "low"]
    jobs = Job.objects.bulk_create(
        [
            Job(
                tenant=tenant,
                team=team,
                environment=envs[i % 3],
                name=f"ops.rules.job-{i}",
                criticality=criticality[i % 5],
                tags=["nightly"] if i % 2 else [],
                command=["/bin/true"],
                cron="0 3 * * *",
                timezone="Europe/Berlin",
                next_fire_at=now + timedelta(hours=1) if i % 50 else now - timedelta(hours=1),
            )
            for i in range(JOBS)
        ],
        batch_size=2000,
    )
    rules = []
    for i, job in enumerate(jobs):
        rules.append(AlertRule(tenant=tenant, name=f"failed-{i}", scope="job", job=job, kind="run_failed"))
        rules.append(
            AlertRule(
                tenant=tenant,
                name=f"long-{i}",
                scope="job",
                job=job,
                kind="long_running",
                params={"k": 3.0, "samples": 20, "min_samples": 5},
            )
        )
        rules.append(
            AlertRule(
                tenant=tenant,
                name=f"deadline-{i}",
                scope="job",
                job=job,
                kind="deadline_missed",
                for_seconds=300,
                params={"time": "06:00", "timezone": "Europe/Berlin", "days": "business"},
            )
        )
    AlertRule.objects.bulk_create(rules, batch_size=5000)
    DurationSamples.objects.bulk_create(
        [DurationSamples(job=job, seconds=[60.0 + (i + k) % 120 for k in range(20)]) for i, job in enumerate(jobs)],
        batch_size=5000,
    )
    rows = []
    made = 0
    for k in range(RUNS_PER_JOB):
        for i, job in enumerate(jobs):
            at = now - timedelta(hours=24 * k + 2)
            latest = k == 0
            status = RunStatus.SUCCEEDED
            if latest and i % 10 == 0:
                status = RunStatus.FAILED
            elif latest and i % 20 == 1:
                status = RunStatus.RUNNING
            rows.append(
                Run(
                    job=job,
                    tenant=tenant,
                    scheduled_for=at,
                    status=status,
                    started_at=at,
                    finished_at=None if status == RunStatus.RUNNING else at + timedelta(seconds=90),
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
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"  planted {JOBS} jobs, {len(rules)} rules and {made} runs in {time.perf_counter() - started:.0f} s",
        flush=True,
    )

    first, result = timed(evaluate, now)
    print(f"  first cycle {first * 1000:.0f} ms: {len(result.signals)} signals", flush=True)
    samples = []
    cpu = []
    sql = []
    queries = 0
    for step in range(1, 6):
        with CaptureQueriesContext(connection) as ctx:
            cpu_start = time.process_time()
            seconds, _ = timed(evaluate, now + timedelta(seconds=10 * step))
            cpu.append(time.process_time() - cpu_start)
        samples.append(seconds)
        queries = len(ctx.captured_queries)
        sql.append(sum(float(q["time"]) for q in ctx.captured_queries))
    report.figure(
        "rule_eval_10k_jobs_3_rules_ms",
        median(samples) * 1000,
        "ms",
        target="< 1000",
        note=f"{JOBS:,} jobs x 3 rules, {made:,} runs ({connection.vendor}), median of 5 cycles "
        f"(process CPU {median(cpu) * 1000:.0f} ms, SQL {median(sql) * 1000:.0f} ms); first cycle {first * 1000:.0f} ms "
        f"with {len(result.signals):,} signals",
    )
    report.figure(
        "rule_eval_queries",
        queries,
        "queries",
        target="constant",
        note="per evaluation cycle, whatever the number of jobs and rules",
    )
    RuleState.objects.filter(tenant=tenant).delete()
    AlertRule.objects.filter(tenant=tenant).delete()
    DurationSamples.objects.filter(job__tenant=tenant).delete()
    Run.objects.filter(tenant=tenant).delete()
    Job.objects.filter(tenant=tenant).delete()
