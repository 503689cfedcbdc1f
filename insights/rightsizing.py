"""Right-sizing: each job's CPU time, memory and duration over its recent runs against its limits and
timeout, and the limits to propose instead (docs/insights.md, "Right-sizing").

Two queries whatever the number of jobs: the jobs the user may see, and their last ``LAST_RUNS``
finished runs within the window (a ``ROW_NUMBER`` window per job, so one busy job cannot crowd
the others out and no job is read past its bound). Percentiles are nearest-rank over those runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from approvals.models import ChangeRequest
from approvals.services import propose_change
from governance.dbtime import Seconds
from jobs.execution_spec import LIMIT_KEYS
from jobs.models import Job, JobKind, Run, RunStatus

from .common import percentile, round_up_mb, round_up_seconds, visible_jobs

# Runs read per job: enough for a p95 that means something, bounded so a job running every minute
# costs what a daily one does.
LAST_RUNS = 100
# Memory: the largest resident set seen, times this (the sandbox limits address space, which runs
# above the resident set). CPU and duration: the larger of p95 x 2 and the maximum x 1.25.
MEMORY_HEADROOM = 1.5
TIME_P95_HEADROOM = 2.0
TIME_MAX_HEADROOM = 1.25
# A limit the job comes this close to (a fraction of it) is too tight: raise it.
TIGHT = 0.8
MEASURED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT)
RESOURCES = ("memory_mb", "cpu_seconds", "timeout_seconds")
LABELS = {"memory_mb": "memory limit", "cpu_seconds": "CPU time limit", "timeout_seconds": "timeout"}
UNITS = {"memory_mb": "MB", "cpu_seconds": "s", "timeout_seconds": "s"}


@dataclass
class Recommendation:
    resource: str
    current: int
    recommended: int
    direction: str  # "lower" or "raise"
    source: str  # "job" (set on the job) or "default" (the worker's default limit)
    evidence: str

    @property
    def label(self) -> str:
        return LABELS[self.resource]

    @property
    def unit(self) -> str:
        return UNITS[self.resource]

    @property
    def ratio(self) -> float:
        return self.current / self.recommended if self.recommended else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "unit": self.unit,
            "current": self.current,
            "current_source": self.source,
            "recommended": self.recommended,
            "direction": self.direction,
            "evidence": self.evidence,
        }


@dataclass
class JobSizing:
    job: Job
    samples: int = 0
    timed_out: int = 0
    cpu: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    # Block I/O (reads + writes) per run: no limit to size, shown beside the others.
    blocks: list[float] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)

    def figure(self, name: str, q: float) -> float | None:
        return percentile(getattr(self, name), q)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "timed_out": self.timed_out,
            "cpu_seconds": {"p50": self.figure("cpu", 0.5), "p95": self.figure("cpu", 0.95), "max": _max(self.cpu)},
            "max_rss_mb": {
                "p50": self.figure("rss_mb", 0.5),
                "p95": self.figure("rss_mb", 0.95),
                "max": _max(self.rss_mb),
            },
            "duration_seconds": {
                "p50": self.figure("durations", 0.5),
                "p95": self.figure("durations", 0.95),
                "max": _max(self.durations),
            },
            "block_io": {"p95": self.figure("blocks", 0.95), "max": _max(self.blocks)},
        }


def _max(values: list[float]) -> float | None:
    return values[-1] if values else None


@dataclass
class Review:
    since: datetime
    window: int
    min_samples: int
    threshold: float
    examined: int
    too_few: int
    sized: list[JobSizing]

    @property
    def recommendations(self) -> list[tuple[JobSizing, Recommendation]]:
        return [(s, r) for s in self.sized for r in s.recommendations]


def effective_limits(job: Job) -> tuple[dict[str, int], set[str]]:
    """The limits the sandbox applies to the job's runs, and which of them the job sets itself."""
    own = {k: v for k, v in (job.limits or {}).items() if k in LIMIT_KEYS}
    return {**settings.GOVERNOR_DEFAULT_LIMITS, **own}, set(own)


def _time_need(values: list[float]) -> float:
    p95 = percentile(values, 0.95) or 0.0
    return max(p95 * TIME_P95_HEADROOM, values[-1] * TIME_MAX_HEADROOM)


def _decide(
    resource: str,
    current: int,
    source: str,
    values: list[float],
    *,
    need: float,
    round_up,
    threshold: float,
    describe: str,
    may_lower: bool = True,
) -> Recommendation | None:
    recommended = round_up(need)
    unit = UNITS[resource]
    if may_lower and current >= threshold * recommended:
        direction = "lower"
    elif values[-1] >= TIGHT * current and recommended > current:
        direction = "raise"
    else:
        return None
    lo, hi = LIMIT_KEYS.get(resource, (1, 7 * 24 * 3600))
    recommended = min(max(recommended, lo), hi)
    evidence = f"{describe}; {LABELS[resource]} {current} {unit}"
    evidence += " (the default)" if source == "default" else ""
    evidence += f" → {recommended} {unit}"
    return Recommendation(resource, current, recommended, direction, source, evidence)


def _recommend(sizing: JobSizing, *, min_samples: int, threshold: float, since: datetime) -> None:
    job = sizing.job
    limits, own = effective_limits(job)
    day = since.date().isoformat()
    for values in (sizing.cpu, sizing.rss_mb, sizing.durations, sizing.blocks):
        values.sort()
    found: list[Recommendation | None] = []
    if len(sizing.rss_mb) >= min_samples:
        rss = sizing.rss_mb
        found.append(
            _decide(
                "memory_mb",
                limits["memory_mb"],
                "job" if "memory_mb" in own else "default",
                rss,
                need=rss[-1] * MEMORY_HEADROOM,
                round_up=round_up_mb,
                threshold=threshold,
                describe=f"max RSS {rss[-1]:.0f} MB (p95 {percentile(rss, 0.95):.0f} MB) over {len(rss)} runs "
                f"since {day}, × {MEMORY_HEADROOM} headroom",
            )
        )
    if len(sizing.cpu) >= min_samples:
        cpu = sizing.cpu
        found.append(
            _decide(
                "cpu_seconds",
                limits["cpu_seconds"],
                "job" if "cpu_seconds" in own else "default",
                cpu,
                need=_time_need(cpu),
                round_up=round_up_seconds,
                threshold=threshold,
                describe=f"CPU time p95 {percentile(cpu, 0.95):.1f} s, max {cpu[-1]:.1f} s over {len(cpu)} runs "
                f"since {day}",
            )
        )
    if len(sizing.durations) >= min_samples and job.kind != JobKind.EXTERNAL:
        durations = sizing.durations
        timed_out = f", {sizing.timed_out} timed out" if sizing.timed_out else ""
        found.append(
            _decide(
                "timeout_seconds",
                job.timeout_seconds,
                "job",
                durations,
                need=_time_need(durations),
                round_up=lambda v: round_up_seconds(v, floor=60),
                threshold=threshold,
                # A job that timed out in the window is never told its timeout is too long.
                may_lower=not sizing.timed_out,
                describe=f"duration p95 {percentile(durations, 0.95):.0f} s, max {durations[-1]:.0f} s over "
                f"{len(durations)} successful runs since {day}{timed_out}",
            )
        )
    sizing.recommendations = [r for r in found if r is not None]


def review(
    user, *, window: int, min_samples: int, threshold: float, now: datetime | None = None, job_id: int | None = None
) -> Review:
    """Every job the user may see, sized from its last LAST_RUNS finished runs of the last ``window`` days."""
    now = now or timezone.now()
    since = now - timedelta(days=window)
    jobs_qs = visible_jobs(user).select_related("tenant", "team", "environment")
    if job_id is not None:
        jobs_qs = jobs_qs.filter(pk=job_id)
    jobs = {job.pk: JobSizing(job) for job in jobs_qs.order_by("tenant__slug", "environment__order", "name")}
    runs = (
        Run.objects.filter(
            job_id__in=jobs_qs.values("pk"), scheduled_for__gte=since, status__in=MEASURED, finished_at__isnull=False
        )
        .annotate(
            recent=Window(RowNumber(), partition_by=[F("job_id")], order_by=[F("scheduled_for").desc(), F("id").desc()])
        )
        .filter(recent__lte=LAST_RUNS)
        .annotate(seconds=Seconds(F("finished_at"), F("started_at")))
        .values_list(
            "job_id",
            "status",
            "cpu_user_s",
            "cpu_sys_s",
            "max_rss_kb",
            "execution_ms",
            "seconds",
            "block_in",
            "block_out",
        )
        .order_by()
    )
    for job_pk, status, cpu_user, cpu_sys, rss_kb, execution_ms, seconds, block_in, block_out in runs:
        sizing = jobs.get(job_pk)
        if sizing is None:
            continue
        sizing.samples += 1
        if status == RunStatus.TIMED_OUT:
            sizing.timed_out += 1
        if cpu_user is not None and cpu_sys is not None:
            sizing.cpu.append(cpu_user + cpu_sys)
        if rss_kb is not None:
            sizing.rss_mb.append(rss_kb / 1024)
        if block_in is not None or block_out is not None:
            sizing.blocks.append((block_in or 0) + (block_out or 0))
        if status == RunStatus.SUCCEEDED:
            duration = execution_ms / 1000 if execution_ms is not None else seconds
            if duration is not None:
                sizing.durations.append(duration)
    for sizing in jobs.values():
        _recommend(sizing, min_samples=min_samples, threshold=threshold, since=since)
    sized = [s for s in jobs.values() if s.recommendations]
    sized.sort(
        key=lambda s: -max(r.ratio if r.direction == "lower" else 1 / max(r.ratio, 1e-9) for r in s.recommendations)
    )
    too_few = sum(1 for s in jobs.values() if s.samples < min_samples)
    return Review(since, window, min_samples, threshold, len(jobs), too_few, sized)


CSV_HEADER = [
    "tenant",
    "environment",
    "team",
    "job",
    "job_id",
    "resource",
    "unit",
    "current",
    "current_source",
    "recommended",
    "direction",
    "samples",
    "p95",
    "max",
    "evidence",
]


def csv_rows(result: Review):
    figures = {"memory_mb": "rss_mb", "cpu_seconds": "cpu", "timeout_seconds": "durations"}
    for sizing, rec in result.recommendations:
        job = sizing.job
        values = getattr(sizing, figures[rec.resource])
        yield [
            job.tenant.slug,
            job.environment.slug,
            job.team.slug,
            job.name,
            job.pk,
            rec.resource,
            rec.unit,
            rec.current,
            rec.source,
            rec.recommended,
            rec.direction,
            len(values),
            round(percentile(values, 0.95) or 0, 3),
            round(values[-1], 3) if values else "",
            rec.evidence,
        ]


def as_json(result: Review) -> dict[str, Any]:
    return {
        "since": result.since,
        "window_days": result.window,
        "min_samples": result.min_samples,
        "threshold": result.threshold,
        "jobs_examined": result.examined,
        "jobs_with_too_few_runs": result.too_few,
        "jobs": [
            {
                "job_id": s.job.pk,
                "job": s.job.name,
                "tenant": s.job.tenant.slug,
                "environment": s.job.environment.slug,
                "team": s.job.team.slug,
                **s.summary(),
                "recommendations": [r.as_dict() for r in s.recommendations],
            }
            for s in result.sized
        ],
    }


# --- proposing ------------------------------------------------------------------------------------


def proposal_values(params: Any) -> dict[str, int]:
    """The limits a "propose" names (memory_mb, cpu_seconds, timeout_seconds; at least one), checked
    against the same bounds a job definition has; ValidationError naming each bad field."""
    values: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    bounds = {**LIMIT_KEYS, "timeout_seconds": (1, 7 * 24 * 3600)}
    for name in RESOURCES:
        raw = params.get(name)
        if raw is None or str(raw).strip() == "":
            continue
        low, high = bounds[name]
        try:
            value = int(str(raw).strip())
        except ValueError:
            errors[name] = [f"Must be a whole number between {low} and {high}."]
            continue
        if not low <= value <= high:
            errors[name] = [f"Must be a whole number between {low} and {high}."]
            continue
        values[name] = value
    if not values and not errors:
        errors["limits"] = ["Name at least one of memory_mb, cpu_seconds, timeout_seconds."]
    if errors:
        raise ValidationError(errors)
    return values


def propose_right_size(job: Job, *, actor, values: dict[str, int], justification: str = "") -> ChangeRequest:
    """Open a draft change request setting the job's limits and timeout to ``values``, as ``actor``
    (approvals.services.propose_change: the author role is checked there, the event audited there).
    A draft: nothing changes until its author submits it and the environment's reviewers approve."""
    limits = dict(job.limits or {})
    definition: dict[str, Any] = {}
    for name in ("memory_mb", "cpu_seconds"):
        if name in values:
            limits[name] = values[name]
    if limits != (job.limits or {}):
        definition["limits"] = limits
    if "timeout_seconds" in values:
        definition["timeout_seconds"] = values["timeout_seconds"]
    if not justification.strip():
        found = review(actor, window=30, min_samples=1, threshold=1.1, job_id=job.pk)
        evidence = [r.evidence for s in found.sized for r in s.recommendations if r.resource in values]
        justification = "Right-sizing (Insights): " + (
            "; ".join(evidence) if evidence else ", ".join(f"{k} → {v}" for k, v in sorted(values.items()))
        )
    return propose_change(
        actor=actor, action="update", job=job, definition=definition, justification=justification, submit=False
    )
