"""Overhead and efficiency: where a run's time goes besides the job itself (queue wait, startup,
recording) day by day per environment, the scheduler's lag, and the jobs that cost the most
(docs/insights.md, "Overhead and efficiency").

Daily percentiles come from the database: a ``ROW_NUMBER`` and a ``COUNT`` window per (day,
environment) keep only the rows at the p50 and p95 ranks, so what crosses the wire is two rows per
day and environment, not every run. A constant number of queries whatever the number of runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, F, Min, Q, Sum, Window
from django.db.models.functions import Ceil, RowNumber
from django.utils import timezone

from governance.access import restrict
from governance.dbtime import Seconds, UTCDay
from governance.models import Environment
from jobs.models import Attempt, Job, JobStatus, Run, RunStatus, TriggerKind

from .common import bar_chart, line_chart, visible_jobs

PARTS = [
    ("queue_wait_ms", "Queue wait", "queued until a worker claimed it"),
    ("startup_ms", "Startup", "claimed until the process started (sandbox, secrets)"),
    ("execution_ms", "Execution", "the job's own process, start to exit"),
    ("recording_ms", "Recording", "exit until the result was written"),
]
FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)
QUANTILES = ("p50", "p95")


def _daily_percentiles(runs, value: Any, group: dict[str, Any]) -> dict:
    """{(day, *group values): {"p50": v, "p95": v, "max": v, "n": count}} of ``value`` over ``runs``,
    one UTC day at a time per ``group`` (names -> expressions), the ranks picked by the database."""
    day = UTCDay("scheduled_for")
    keys = [day, *group.values()]
    ranked = (
        runs.annotate(
            day=day,
            v=value,
            rn=Window(RowNumber(), partition_by=keys, order_by=F("v").asc()),
            cnt=Window(Count("id"), partition_by=keys),
            **group,
        )
        # The nearest ranks, computed where the counts are (never re-derived here in floating point).
        .annotate(r50=Ceil(F("cnt") * 0.5), r95=Ceil(F("cnt") * 0.95))
        .filter(Q(rn=F("r50")) | Q(rn=F("r95")) | Q(rn=F("cnt")))
        .order_by()
    )
    found: dict[tuple, dict[str, Any]] = {}
    for row in ranked.values_list("day", *group, "rn", "cnt", "r50", "r95", "v"):
        day_value, *values, rn, count, r50, r95, v = row
        entry = found.setdefault((day_value, *values), {"n": count})
        if rn == r50:
            entry["p50"] = v
        if rn == r95:
            entry["p95"] = v
        if rn == count:
            entry["max"] = v
    return found


@dataclass
class EnvironmentOverhead:
    environment: Environment
    charts: list[dict[str, Any]] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Review:
    since: datetime
    window: int
    top: int
    days: list[date]
    environments: list[EnvironmentOverhead]
    lag_chart: dict[str, Any]
    lag_table: list[dict[str, Any]]
    lag_now_seconds: float
    by_runtime: list[dict[str, Any]]
    by_failure: list[dict[str, Any]]
    runtime_chart: dict[str, Any]
    failure_chart: dict[str, Any]


def _day_list(since: datetime, now: datetime) -> list[date]:
    first, last = since.date(), now.date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def review(user, *, window: int, top: int, now: datetime | None = None) -> Review:
    now = now or timezone.now()
    since = now - timedelta(days=window)
    days = _day_list(since, now)
    jobs = visible_jobs(user)
    runs = restrict(Run.objects.filter(scheduled_for__gte=since), user)

    # Overhead parts, daily per environment.
    per_part: dict[str, dict] = {}
    for name, _label, _what in PARTS:
        per_part[name] = _daily_percentiles(
            runs.filter(**{f"{name}__isnull": False}), F(name), {"env": F("job__environment_id")}
        )
    env_ids = sorted({key[1] for found in per_part.values() for key in found})
    environments = {
        env.pk: env
        for env in Environment.objects.filter(pk__in=env_ids).select_related("tenant").order_by("tenant__slug", "order")
    }
    overhead = []
    for env in environments.values():
        item = EnvironmentOverhead(env)
        for name, label, what in PARTS:
            found = per_part[name]
            values = {q: [found.get((d, env.pk), {}).get(q) for d in days] for q in QUANTILES}
            chart = line_chart(
                days,
                [{"label": "p95", "values": values["p95"]}, {"label": "p50", "values": values["p50"]}],
                unit="ms",
                width=560,
                height=200,
            )
            chart.update(
                part=name,
                label=label,
                what=what,
                title=f"{label} in {env.tenant.slug}/{env.slug}, p95 and p50 per day, in ms",
                chart_id=f"oh-{env.pk}-{name}",
            )
            item.charts.append(chart)
        for d in days:
            row: dict[str, Any] = {"day": d}
            for name, _label, _what in PARTS:
                entry = per_part[name].get((d, env.pk), {})
                row[name] = {"p50": entry.get("p50"), "p95": entry.get("p95"), "n": entry.get("n", 0)}
            row["cells"] = [row[name] for name, _l, _w in PARTS]
            if any(row[name]["n"] for name, _l, _w in PARTS):
                item.table.append(row)
        overhead.append(item)

    # The scheduler's lag: how late after its slot the scheduler created each scheduled run.
    lag = _daily_percentiles(
        runs.filter(trigger=TriggerKind.SCHEDULE, partition="").exclude(status=RunStatus.SKIPPED),
        Seconds(F("created_at"), F("scheduled_for")),
        {},
    )
    lag_values = {q: [lag.get((d,), {}).get(q) for d in [*days]] for q in ("p50", "p95", "max")}
    lag_chart = line_chart(
        days,
        [
            {"label": "max", "values": lag_values["max"]},
            {"label": "p95", "values": lag_values["p95"]},
            {"label": "p50", "values": lag_values["p50"]},
        ],
        unit="s",
    )
    lag_table = [{"day": d, **lag[(d,)]} for d in days if (d,) in lag]
    oldest = jobs.filter(status=JobStatus.ENABLED, next_fire_at__lte=now).aggregate(oldest=Min("next_fire_at"))[
        "oldest"
    ]
    lag_now = (now - oldest).total_seconds() if oldest else 0.0

    # Top jobs by total runtime, and by failure cost (failed attempts and retries).
    runtime_rows = list(
        runs.filter(started_at__isnull=False, finished_at__isnull=False)
        .values("job_id")
        .annotate(seconds=Sum(Seconds(F("finished_at"), F("started_at"))), runs=Count("id"))
        .order_by("-seconds", "job_id")[:top]
    )
    attempts = restrict(
        Attempt.objects.filter(
            Q(status__in=FAILED) | Q(number__gt=1),
            finished_at__gte=since,
            started_at__isnull=False,
            finished_at__isnull=False,
        ),
        user,
    )
    failure_rows = list(
        attempts.values(job_id=F("run__job_id"))
        .annotate(
            seconds=Sum(Seconds(F("finished_at"), F("started_at"))),
            failed=Count("id", filter=Q(status__in=FAILED)),
            retries=Count("id", filter=Q(number__gt=1)),
        )
        .order_by("-seconds", "job_id")[:top]
    )
    named = {
        job.pk: job
        for job in Job.objects.filter(pk__in={r["job_id"] for r in runtime_rows + failure_rows}).select_related(
            "tenant", "environment"
        )
    }
    by_runtime = [
        {"job": named[r["job_id"]], "seconds": r["seconds"] or 0.0, "runs": r["runs"]}
        for r in runtime_rows
        if r["job_id"] in named
    ]
    by_failure = [
        {"job": named[r["job_id"]], "seconds": r["seconds"] or 0.0, "failed": r["failed"], "retries": r["retries"]}
        for r in failure_rows
        if r["job_id"] in named
    ]
    runtime_chart = bar_chart(
        [
            {"label": r["job"].name, "value": r["seconds"], "text": f"{r['seconds'] / 3600:.1f} h, {r['runs']} runs"}
            for r in by_runtime
        ],
        unit="s",
    )
    failure_chart = bar_chart(
        [
            {
                "label": r["job"].name,
                "value": r["seconds"],
                "text": f"{r['seconds'] / 3600:.1f} h, {r['failed']} failed, {r['retries']} retries",
            }
            for r in by_failure
        ],
        unit="s",
    )
    return Review(
        since,
        window,
        top,
        days,
        overhead,
        lag_chart,
        lag_table,
        lag_now,
        by_runtime,
        by_failure,
        runtime_chart,
        failure_chart,
    )


CSV_HEADER = ["section", "day", "tenant", "environment", "job", "measure", "p50", "p95", "max", "n", "value"]


def csv_rows(result: Review):
    for item in result.environments:
        env = item.environment
        for row in item.table:
            for name, _label, _what in PARTS:
                part = row[name]
                if part["n"]:
                    yield [
                        "overhead",
                        row["day"],
                        env.tenant.slug,
                        env.slug,
                        "",
                        name,
                        part["p50"],
                        part["p95"],
                        "",
                        part["n"],
                        "",
                    ]
    for row in result.lag_table:
        yield [
            "scheduler_lag",
            row["day"],
            "",
            "",
            "",
            "lag_seconds",
            row.get("p50"),
            row.get("p95"),
            row.get("max"),
            row["n"],
            "",
        ]
    for r in result.by_runtime:
        job = r["job"]
        yield [
            "top_runtime",
            "",
            job.tenant.slug,
            job.environment.slug,
            job.name,
            "runtime_seconds",
            "",
            "",
            "",
            r["runs"],
            round(r["seconds"], 3),
        ]
    for r in result.by_failure:
        job = r["job"]
        yield [
            "top_failure_cost",
            "",
            job.tenant.slug,
            job.environment.slug,
            job.name,
            "failure_seconds",
            "",
            "",
            "",
            r["failed"] + r["retries"],
            round(r["seconds"], 3),
        ]


def _job_ref(job: Job) -> dict[str, Any]:
    return {"job_id": job.pk, "job": job.name, "tenant": job.tenant.slug, "environment": job.environment.slug}


def as_json(result: Review) -> dict[str, Any]:
    return {
        "since": result.since,
        "window_days": result.window,
        "overhead": [
            {
                "tenant": item.environment.tenant.slug,
                "environment": item.environment.slug,
                "days": [
                    {"day": row["day"].isoformat(), **{name: row[name] for name, _l, _w in PARTS}} for row in item.table
                ],
            }
            for item in result.environments
        ],
        "scheduler_lag": {
            "now_seconds": result.lag_now_seconds,
            "days": [{**row, "day": row["day"].isoformat()} for row in result.lag_table],
        },
        "top_by_runtime": [
            {**_job_ref(r["job"]), "seconds": r["seconds"], "runs": r["runs"]} for r in result.by_runtime
        ],
        "top_by_failure_cost": [
            {**_job_ref(r["job"]), "seconds": r["seconds"], "failed_attempts": r["failed"], "retries": r["retries"]}
            for r in result.by_failure
        ],
    }
