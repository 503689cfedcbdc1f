"""Watching jobs (issue 17): run history strips, what is live now, a 24-hour timeline, and when a
live page should poll again. Each helper runs a fixed number of queries whatever the number of rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Min, OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone

from governance.access import restrict
from governance.models import AuditAction, AuditEvent
from governance.paging import rows_in_order

from .models import Job, JobStatus, Run, RunStatus

STRIP_LENGTH = 20
# The fields a strip cell shows; nothing else is read (the output can be megabytes).
STRIP_FIELDS = ("id", "job_id", "status", "scheduled_for", "started_at", "finished_at", "exit_code")
ACTIVE_STATUSES = (RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.DEFERRED, RunStatus.RUNNING)
# A run still waiting this long after its time, or a slot the scheduler has not turned into a run, is late.
LATE_AFTER = timedelta(seconds=60)
# How often a live page asks again while something is queued or running (seconds).
LIVE_POLL_SECONDS = 2
# Nothing live, but a slot comes due within this long: the page asks again when it does.
WAKE_WITHIN = timedelta(minutes=10)
# A slot overdue (scheduler down or busy): ask again now and then, not every 2 s.
OVERDUE_POLL_SECONDS = 15

# A letter per state, so a strip is readable without its colours.
STATE_LETTERS: dict[str, str] = {
    RunStatus.SUCCEEDED: "✓",
    RunStatus.FAILED: "F",
    RunStatus.TIMED_OUT: "T",
    RunStatus.LOST: "L",
    RunStatus.CANCELLED: "C",
    RunStatus.SKIPPED: "–",
    RunStatus.RUNNING: "R",
    RunStatus.QUEUED: "Q",
    RunStatus.SCHEDULED: "Q",
    RunStatus.DEFERRED: "D",
}
FAILED_STATUSES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)


class RunRow:
    """A run as a strip cell or a timeline bar shows it: plain values read by ``values_list``
    (building a thousand model instances took most of a list page's time)."""

    __slots__ = (
        "pk",
        "job_id",
        "status",
        "scheduled_for",
        "started_at",
        "finished_at",
        "exit_code",
        "summary",
        "letter",
        "url",
    )

    def __init__(self, pk, job_id, status, scheduled_for, started_at, finished_at, exit_code) -> None:
        self.pk = pk
        self.job_id = job_id
        self.status = status
        self.scheduled_for = scheduled_for
        self.started_at = started_at
        self.finished_at = finished_at
        self.exit_code = exit_code
        self.summary = self.letter = self.url = ""

    @property
    def id(self) -> int:
        return self.pk

    def __repr__(self) -> str:
        return f"<RunRow #{self.pk} {self.status}>"


def _run_url_prefix() -> str:
    return reverse("run_detail", args=[0]).removesuffix("0/")


def with_strip_cutoff(jobs, length: int = STRIP_LENGTH):
    """Annotate a job queryset with the instant of each job's ``length``-th newest run (its strip
    starts there): one index probe of ``run_job_recent`` per listed job, inside the list's own query."""
    nth = Run.objects.filter(job=OuterRef("pk"), partition="").order_by("-scheduled_for", "-id")
    return jobs.annotate(strip_cutoff=Subquery(nth.values("scheduled_for")[length - 1 : length]))


def last_runs(jobs, length: int = STRIP_LENGTH) -> dict[int, list[RunRow]]:
    """The newest ``length`` runs of each job, oldest first, in one query.

    Jobs annotated by ``with_strip_cutoff`` fetch only their runs from the cutoff on (a bounded
    range scan each); others fetch all their runs (use this on one job or on jobs known to be
    new). Partition runs of a fan-out are left out: the strip shows slots."""
    jobs = list(jobs)
    if not jobs:
        return {}
    bounds = Q()
    for job in jobs:
        cutoff = getattr(job, "strip_cutoff", None)
        bounds |= Q(job_id=job.pk, scheduled_for__gte=cutoff) if cutoff is not None else Q(job_id=job.pk)
    strips: dict[int, list[RunRow]] = {job.pk: [] for job in jobs}
    rows = (
        Run.objects.filter(bounds, partition="").order_by("job_id", "-scheduled_for", "-id").values_list(*STRIP_FIELDS)
    )
    for values in rows:
        strip = strips[values[1]]
        if len(strip) < length:
            strip.append(RunRow(*values))
    # Worded once here, not per cell in the template: a page has up to a thousand cells.
    prefix = _run_url_prefix()
    for strip in strips.values():
        strip.reverse()
        for run in strip:
            run.summary = run_summary(run)
            run.letter = STATE_LETTERS.get(run.status, "?")
            run.url = f"{prefix}{run.pk}/"
    return strips


STATUS_LABELS: dict[str, str] = {str(value): str(label) for value, label in RunStatus.choices}


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_summary(run: Run | RunRow) -> str:
    """``Run #12: Failed · started 2026-12-07 01:02:03 UTC · took 3.0 s · exit 1``: what hover and
    focus show on a strip cell or a timeline bar (reads only the strip's fields)."""
    parts = [f"Run #{run.pk}: {STATUS_LABELS.get(run.status) or RunStatus(run.status).label}"]
    if run.started_at:
        parts.append(f"started {run.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
        if run.finished_at:
            parts.append(f"took {_seconds((run.finished_at - run.started_at).total_seconds())}")
        else:
            parts.append("still running" if run.status == RunStatus.RUNNING else "not finished")
    else:
        parts.append(f"scheduled for {run.scheduled_for.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, not started")
    if run.exit_code is not None:
        parts.append(f"exit {run.exit_code}")
    return " · ".join(parts)


def paused_by(job: Job) -> AuditEvent | None:
    """Who paused the job, when and why: the newest pause event of its audit trail (one query)."""
    if job.status != JobStatus.PAUSED:
        return None
    return (
        AuditEvent.objects.filter(action=AuditAction.JOB_PAUSED, object_type="jobs.job", object_id=str(job.pk))
        .order_by("-created_at", "-id")
        .first()
    )


def trigger_reason(run: Run) -> str:
    """Why the run (its current attempt) started, in words."""
    if run.trigger_reason:
        return run.trigger_reason
    if run.trigger == "schedule":
        return f"Its schedule ({run.definition.get('cron', '?')}, {run.definition.get('timezone', 'UTC')}) came due."
    if run.trigger == "ping":
        return "The external job reported in (ping)."
    return ""


# --- now: what is queued, running, deferred or late ------------------------------------------


# Each group of live runs is read through the partial index that serves it (the index's own
# condition is repeated so SQLite's planner may use it): a page listing them does not scan the runs.
_ACTIVE_INDEXED = Q(status__in=(RunStatus.QUEUED, RunStatus.RUNNING))  # run_active
LIVE_GROUPS = {
    RunStatus.RUNNING: _ACTIVE_INDEXED & Q(status=RunStatus.RUNNING),
    RunStatus.QUEUED: _ACTIVE_INDEXED & Q(status=RunStatus.QUEUED),
    # Waiting for a retry attempt (run_retry_due).
    RunStatus.SCHEDULED: Q(next_attempt_at__isnull=False, status=RunStatus.SCHEDULED),
    RunStatus.DEFERRED: Q(status=RunStatus.DEFERRED),  # run_deferred_due
}


def now_board(user, now: datetime | None = None, limit: int = 50) -> dict:
    """Running, queued, deferred (with the reason) and late runs the user may see, plus slots the
    scheduler has not turned into runs yet; at most ``limit`` of each, counts exact (a fixed
    number of queries, each on a partial index, whatever the number of runs)."""
    now = now or timezone.now()
    runs = restrict(Run.objects.all(), user)
    counts = {
        row["status"]: row["n"]
        for row in runs.filter(_ACTIVE_INDEXED).values("status").annotate(n=Count("id")).order_by()
    }
    counts[RunStatus.SCHEDULED] = runs.filter(LIVE_GROUPS[RunStatus.SCHEDULED]).count()
    counts[RunStatus.DEFERRED] = runs.filter(LIVE_GROUPS[RunStatus.DEFERRED]).count()
    counts = {status: n for status, n in counts.items() if n}

    def first_ids(status) -> list[int]:
        if not counts.get(status):
            return []
        # The oldest first, keys first from run_tenant_status_recent (tenant, status, time) alone:
        # joined to the jobs in the same query, SQLite's planner may start from the jobs and read
        # every run (its statistics know the average state, not that few runs are queued), and it
        # cannot use the partial indexes when the statuses are bound parameters.
        return list(
            runs.filter(LIVE_GROUPS[status]).order_by("scheduled_for", "id").values_list("pk", flat=True)[:limit]
        )

    ids = {status: first_ids(status) for status in LIVE_GROUPS}
    # The rows of every group in one query.
    rows = {
        run.pk: run
        for run in rows_in_order(
            Run.objects.select_related("job", "job__environment", "triggered_by").defer(
                "output", "definition", "job__command", "job__runbook", "job__description"
            ),
            [pk for group in ids.values() for pk in group],
        )
    }

    def first(status):
        return [rows[pk] for pk in ids[status] if pk in rows]

    late_before = now - LATE_AFTER
    running = first(RunStatus.RUNNING)
    waiting = sorted(first(RunStatus.QUEUED) + first(RunStatus.SCHEDULED), key=lambda r: (r.scheduled_for, r.pk))
    waiting = waiting[:limit]
    deferred = first(RunStatus.DEFERRED)
    for run in waiting:
        run.late_by = (now - run.scheduled_for) if run.scheduled_for < late_before else None
    overdue = list(
        restrict(Job.objects.filter(status=JobStatus.ENABLED, next_fire_at__lt=late_before), user)
        .select_related("environment")
        .only(
            "id", "name", "next_fire_at", "tenant_id", "team_id", "environment__slug", "environment__required_approvals"
        )
        .order_by("next_fire_at")[:limit]
    )
    for job in overdue:
        job.late_by = now - job.next_fire_at  # type: ignore[attr-defined,operator]  # due jobs have a slot
    next_due = (
        restrict(Job.objects.filter(status=JobStatus.ENABLED, next_fire_at__gte=late_before), user)
        .aggregate(at=Min("next_fire_at"))
        .get("at")
    )
    queued_count = counts.get(RunStatus.QUEUED, 0) + counts.get(RunStatus.SCHEDULED, 0)
    late = [r for r in waiting if r.late_by]
    live = bool(counts)
    return {
        "now": now,
        "running": running,
        "queued": waiting,
        "deferred": deferred,
        "late": late[:limit],
        "overdue": overdue,
        "counts": {
            "running": counts.get(RunStatus.RUNNING, 0),
            "queued": queued_count,
            "deferred": counts.get(RunStatus.DEFERRED, 0),
            "late": len(late) + len(overdue),
        },
        "live": live,
        "next_due": next_due,
        "poll": poll_delay(live, next_due or (overdue[0].next_fire_at if overdue else None), now),
    }


def poll_delay(live: bool, next_due: datetime | None, now: datetime) -> int | None:
    """Seconds until a live page asks again; None: nothing will change by itself, stop polling.

    Every 2 s while something is queued or running; otherwise once when the next slot comes due
    (so the first run of a new job appears by itself), and every 15 s while a slot is overdue."""
    if live:
        return LIVE_POLL_SECONDS
    if next_due is None:
        return None
    wait = (next_due - now).total_seconds()
    if wait < -LATE_AFTER.total_seconds():
        return OVERDUE_POLL_SECONDS
    if wait <= LIVE_POLL_SECONDS:
        return LIVE_POLL_SECONDS
    if wait <= WAKE_WITHIN.total_seconds():
        return math.ceil(wait)
    return None


def job_poll(job: Job, runs: list[Run], now: datetime | None = None) -> int | None:
    """When the job page asks again: ``runs`` are its newest runs (already on the page)."""
    now = now or timezone.now()
    live = any(r.status in ACTIVE_STATUSES for r in runs)
    return poll_delay(live, job.next_fire_at if job.status == JobStatus.ENABLED else None, now)


# --- timeline: the last 24 hours as bars ------------------------------------------------------

GANTT_WIDTH = 960
GANTT_LABEL = 230
GANTT_ROW = 22
GANTT_BAR = 14
GANTT_MAX_RUNS = 2000
GANTT_MAX_JOBS = 30
GANTT_FIELDS = (*STRIP_FIELDS, "job__name")


def timeline(user, *, job: Job | None = None, now: datetime | None = None, hours: int = 24) -> dict:
    """Runs of the last ``hours`` as Gantt bars, one row per job (most recently active first).

    One query, bounded to GANTT_MAX_RUNS runs; for the job page (``job``) one row. A bar spans
    start to finish (or now while running); a run not started yet spans its wait since its time."""
    now = now or timezone.now()
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    # Queued and running runs older than the window still show (the run_active index finds them).
    runs = Run.objects.filter(Q(scheduled_for__gte=start) | Q(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)))
    runs = runs.filter(partition="")
    # The job page has checked access to the job already.
    runs = runs.filter(job=job) if job is not None else restrict(runs, user)
    runs = runs.order_by("-scheduled_for", "-id")
    if job is None:
        # The newest GANTT_MAX_RUNS runs, of which only those of the first GANTT_MAX_JOBS jobs show:
        # with many jobs, 30 of 2,000 (turning the others' times into datetimes took 15 ms of the now
        # page). Their keys first, then the rows of those that show.
        window = list(runs.values_list("pk", "job_id")[:GANTT_MAX_RUNS])
        truncated = len(window) >= GANTT_MAX_RUNS
        shown = dict.fromkeys(job_id for _, job_id in window)
        if len(shown) > GANTT_MAX_JOBS:
            first = set(list(shown)[:GANTT_MAX_JOBS])
            runs = Run.objects.filter(pk__in=[pk for pk, job_id in window if job_id in first]).order_by(
                "-scheduled_for", "-id"
            )
    # Plain values, not model instances: up to 2,000 runs (and their jobs) per page.
    fetched = list(runs.values_list(*GANTT_FIELDS)[:GANTT_MAX_RUNS])
    if job is not None:
        truncated = len(fetched) >= GANTT_MAX_RUNS
    prefix = _run_url_prefix()
    rows: dict[int, dict] = {}
    for *values, job_name in fetched:
        run = RunRow(*values)
        row = rows.get(run.job_id)
        if row is None:
            if len(rows) >= GANTT_MAX_JOBS:
                continue
            row = rows[run.job_id] = {"job_id": run.job_id, "name": job_name, "bars": [], "failed": 0}
        run.url = f"{prefix}{run.pk}/"
        run.summary = run_summary(run)
        begin = max(run.started_at or run.scheduled_for, start)
        end = run.finished_at or now
        if run.status in ACTIVE_STATUSES:
            end = now
        end = max(min(end, now), begin)
        x = GANTT_LABEL + (begin - start).total_seconds() / span * GANTT_WIDTH
        width = max((end - begin).total_seconds() / span * GANTT_WIDTH, 2.0)
        started = run.started_at is not None
        row["failed"] += run.status in FAILED_STATUSES
        thin = run.status in (RunStatus.SKIPPED, RunStatus.CANCELLED)
        row["bars"].append(
            {
                "run": run,
                "dy": (GANTT_BAR - 4) // 2 if thin else 0,
                "height": 4 if thin else GANTT_BAR,
                "x": round(x, 1),
                "width": round(min(width, GANTT_LABEL + GANTT_WIDTH - x), 1),
                "started": started,
                "duration": (end - begin).total_seconds() if started else None,
            }
        )
    ordered = list(rows.values())
    for index, row in enumerate(ordered):
        row["y"] = index * GANTT_ROW + 6
        row["text_y"] = row["y"] + GANTT_BAR - 3
        row["bars"].reverse()
        for bar in row["bars"]:
            bar["y"] = row["y"] + bar.pop("dy")
    ticks = []
    first_tick = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    tick = first_tick
    while tick <= now:
        if tick.hour % 3 == 0:
            ticks.append({"x": round(GANTT_LABEL + (tick - start).total_seconds() / span * GANTT_WIDTH, 1), "at": tick})
        tick += timedelta(hours=1)
    height = max(len(ordered), 1) * GANTT_ROW + 24
    statuses: dict[str, int] = {}
    for row in ordered:
        for bar in row["bars"]:
            statuses[bar["run"].status] = statuses.get(bar["run"].status, 0) + 1
    return {
        "rows": ordered,
        "start": start,
        "now": now,
        "hours": hours,
        "ticks": ticks,
        "width": GANTT_LABEL + GANTT_WIDTH + 10,
        "height": height,
        "axis_y": height - 18,
        "label_width": GANTT_LABEL,
        "bar_height": GANTT_BAR,
        "now_x": GANTT_LABEL + GANTT_WIDTH,
        "total": sum(len(row["bars"]) for row in ordered),
        "truncated": truncated,
        "summary": ", ".join(f"{n} {RunStatus(s).label.lower()}" for s, n in sorted(statuses.items())),
    }
