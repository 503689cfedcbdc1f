"""The scheduler loop: turn due slots into runs, exactly once per (job, instant).

Each tick reads only jobs whose stored ``next_fire_at`` has come (an indexed
query), so its cost grows with due jobs, not with all jobs. A slot is claimed
by a conditional UPDATE that moves ``next_fire_at`` forward; the unique
(job, scheduled_for) constraint on runs is the last line of defence when
several schedulers run at once. A leader lease keeps the other schedulers
idle while one is alive, so they do not race for every slot.

Misfires: when a tick finds slots older than the newest due one (the
scheduler was down, the job was paused), every one is recorded as a run:
skipped with the reason, or run by the job's ``catchup`` policy. The policy
also bounds how many run, so an outage never ends in a burst; under ``forbid`` (or
``max_active_runs``) a ``catchup=all`` batch runs in turn (release_turns).

Concurrency counts only runs that are really active (active_runs), and the queue
reconciler (reconcile_queue) enqueues again any queued run whose queue message is gone,
so no run is left behind and no ghost blocks a job (docs/scheduling.md).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Case, F, Min, Q, TextField, Value, When
from django.utils import timezone

from governance import secrets

from . import firing, pools, schedule
from .heartbeats import sweep
from .models import (
    DEFINITION_FIELDS,
    CatchupPolicy,
    ConcurrencyPolicy,
    HolidayCalendar,
    Job,
    JobStatus,
    MaintenanceWindow,
    Run,
    RunStatus,
    SchedulerLease,
    TriggerKind,
)
from .queue import enqueue_all

log = logging.getLogger(__name__)

# Slots examined per job and tick when catching up; the rest wait for the next tick.
MISSED_SCAN_LIMIT = 10_000
LEASE_NAME = "scheduler"


@dataclass
class TickResult:
    due: int = 0
    created: int = 0
    skipped: int = 0
    lost_race: int = 0
    deferred: int = 0
    promoted: int = 0
    run_ids: list[int] = field(default_factory=list)


@dataclass
class SlotPlan:
    """What a tick decided for one due slot of one job."""

    slot: datetime
    status: str
    reason: str = ""
    deferred_until: datetime | None = None


def _late(now: datetime, slot: datetime) -> int:
    """Whole seconds late, rounded up: a slot 3600.4 s late is reported as 3601 s, past a 3600 s deadline."""
    return math.ceil((now - slot).total_seconds())


def _past_deadline(job: Job, now: datetime, slot: datetime) -> bool:
    deadline = job.starting_deadline_seconds
    return deadline is not None and (now - slot).total_seconds() > deadline


def plan_slots(job: Job, slots: list[datetime], now: datetime, grace: float) -> list[SlotPlan]:
    """Decide run or skip for each due slot (oldest first) by the job's catch-up policy."""
    deadline = job.starting_deadline_seconds
    newest = slots[-1]
    plans: list[SlotPlan] = []
    runnable = set()
    if job.catchup == CatchupPolicy.ALL:
        within = [s for s in slots if not _past_deadline(job, now, s)]
        runnable = set(within[-job.catchup_limit :])
    elif job.catchup == CatchupPolicy.LATEST:
        if not _past_deadline(job, now, newest):
            runnable = {newest}
    else:
        on_time = grace if deadline is None else min(grace, deadline)
        if (now - newest).total_seconds() <= on_time:
            runnable = {newest}
    for slot in slots:
        if slot in runnable:
            plans.append(SlotPlan(slot, RunStatus.QUEUED))
            continue
        late = _late(now, slot)
        if _past_deadline(job, now, slot):
            reason = f"Missed: reached {late} s after its time, past the starting deadline of {deadline} s."
        elif job.catchup == CatchupPolicy.ALL:
            reason = f"Missed: beyond the catch-up limit of {job.catchup_limit} slots (catchup=all)."
        elif job.catchup == CatchupPolicy.LATEST:
            reason = f"Missed: a newer slot ({schedule.isoz(newest)}) was also due; catchup=latest runs only that one."
        elif slot != newest:
            reason = (
                f"Missed: reached {late} s after its time (scheduler down or job paused); "
                "catchup=skip records it and runs the next slot."
            )
        else:
            reason = (
                f"Missed: reached {late} s after its time, more than the {int(grace)} s grace; "
                "catchup=skip records it and runs the next slot."
            )
        plans.append(SlotPlan(slot, RunStatus.SKIPPED, reason))
    return plans


def _due_slots(job: Job, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The due slots of a job (oldest first) and the first slot after them."""
    slots = [job.next_fire_at]
    following = None
    for fire in schedule.iter_fires(
        job.cron, job.timezone, job.next_fire_at, gap=job.gap, overlap=job.overlap, seed=job.schedule_seed
    ):
        if fire.at > now or len(slots) >= MISSED_SCAN_LIMIT:
            following = fire.at
            break
        slots.append(fire.at)
    return slots, following


def _run_row(job: Job, plan: SlotPlan, now: datetime, definition: dict) -> Run:
    queued = plan.status == RunStatus.QUEUED
    finished = plan.status == RunStatus.SKIPPED
    return Run(
        job_id=job.pk,
        tenant_id=job.tenant_id,
        scheduled_for=plan.slot,
        trigger=TriggerKind.SCHEDULE,
        status=plan.status,
        reason=plan.reason,
        queued_at=now if queued else None,
        finished_at=now if finished else None,
        deferred_until=plan.deferred_until,
        job_version=job.version,
        definition=definition,
    )


def tick(now: datetime | None = None, limit: int = 1000) -> TickResult:
    """Create (and enqueue on commit) the runs of every slot due at ``now``."""
    now = now or timezone.now()
    grace = settings.GOVERNOR_MISFIRE_GRACE_SECONDS
    result = TickResult()
    due = list(
        Job.objects.filter(status=JobStatus.ENABLED, next_fire_at__lte=now)
        .order_by("next_fire_at")
        .only("id", "tenant_id", "environment_id", "version", "next_fire_at", "status", *DEFINITION_FIELDS)[:limit]
    )
    result.due = len(due)
    result.promoted = promote_deferred(now)
    if not due:
        return result
    constraints = Constraints(due, now)
    plans = []
    for job in due:
        slots, following = _due_slots(job, now)
        slot_plans = plan_slots(job, slots, now, grace)
        apply_constraints(job, slot_plans, constraints, now)
        plans.append((job, following, slot_plans))
    try:
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=True)
            _cancel_replaced(constraints, now)
    except IntegrityError:
        # A run already exists for one of the slots (a manual trigger at that
        # very instant, or another scheduler): redo row by row, losing only that one.
        result = TickResult(due=len(due), promoted=result.promoted)
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=False)
            _cancel_replaced(constraints, now)
    return result


def _cancel_replaced(constraints: Constraints, now: datetime) -> None:
    by_reason: dict[str, list[int]] = {}
    for run_id, reason in constraints.to_cancel:
        by_reason.setdefault(reason, []).append(run_id)
    for reason, ids in by_reason.items():
        # The executor notices the cancel at its next status check and kills the process group.
        Run.objects.filter(pk__in=ids, status__in=ACTIVE_STATUSES).update(
            status=RunStatus.CANCELLED, reason=reason, finished_at=now
        )


RELEASE_FIELDS = (
    "id",
    "job_id",
    "tenant_id",
    "status",
    "scheduled_for",
    "reason",
    "deferred_until",
    "job__id",
    "job__tenant_id",
    "job__environment_id",
    "job__status",
    "job__criticality",
    "job__concurrency",
    "job__max_active_runs",
    "job__pool",
    "job__priority",
)


def promote_deferred(now: datetime, limit: int = 1000) -> int:
    """Release the deferred runs that are due: windows that have ended, runs waiting for a pool
    slot or for the queue to drain. Higher priority first, then the oldest slot.

    A released run is checked again as a new slot would be: its job's
    concurrency policy (another run may have started meanwhile), its pool's
    slots and backpressure. One that may not go yet stays deferred with the
    current reason; one its concurrency policy refuses is skipped with why.
    The query count does not grow with the number of runs released.
    """
    # One query when nothing waits: deferred runs that are due, or waiting their turn (release_turns).
    if not Run.objects.filter(status=RunStatus.DEFERRED).filter(Q(deferred_until__lte=now) | WAITING_TURN).exists():
        return 0
    release_turns(now)
    due = Run.objects.filter(status=RunStatus.DEFERRED, deferred_until__lte=now)
    with transaction.atomic():
        # Locked (PostgreSQL): another scheduler skips these rows instead of releasing them twice.
        candidates = list(
            due.select_for_update(of=("self",), skip_locked=True)
            .select_related("job")
            .only(*RELEASE_FIELDS)
            .order_by("-job__priority", "scheduled_for", "pk")[:limit]
        )
        release = _Release(candidates, now)
        for run in candidates:
            release.decide(run)
        promoted = release.write(now)
        if promoted:
            transaction.on_commit(lambda: enqueue_all(promoted))
    return len(promoted)


class _Release:
    """The decisions of one promote_deferred pass, written in a constant number of queries."""

    def __init__(self, candidates: list[Run], now: datetime) -> None:
        jobs = {run.job_id: run.job for run in candidates}
        limited = [pk for pk, job in jobs.items() if job.concurrency != ConcurrencyPolicy.ALLOW or job.max_active_runs]
        self.active: dict[int, list[int]] = {}
        if limited:
            for run_id, job_id in (
                Run.objects.filter(job_id__in=limited).filter(active_runs(now)).values_list("pk", "job_id")
            ):
                self.active.setdefault(job_id, []).append(run_id)
        needs_admission = any(job.pool or pools.is_low_priority(job) for job in jobs.values())
        self.admission = pools.Admission(jobs.values()) if needs_admission else None
        self.promoted: list[int] = []
        self.skipped: dict[int, str] = {}
        self.waiting: dict[int, str] = {}
        self.to_cancel: list[tuple[int, str]] = []

    def decide(self, run: Run) -> None:
        job = run.job
        if job.status == JobStatus.DELETED:
            self.skipped[run.pk] = "Skipped at release: the job was deleted."
            return
        active = self.active.get(job.pk, [])
        if active and job.concurrency == ConcurrencyPolicy.FORBID:
            self.skipped[run.pk] = (
                f"Skipped at release: concurrency=forbid and run(s) {', '.join(f'#{i}' for i in active)} still active."
            )
            return
        if job.concurrency != ConcurrencyPolicy.REPLACE and job.max_active_runs and len(active) >= job.max_active_runs:
            self.skipped[run.pk] = (
                f"Skipped at release: {len(active)} run(s) active, the job allows at most {job.max_active_runs}."
            )
            return
        refusal = self.admission.refusal(job) if self.admission else None
        if refusal:
            if refusal != run.reason:
                self.waiting[run.pk] = refusal
            return
        if self.admission:
            self.admission.take(job)
        if active and job.concurrency == ConcurrencyPolicy.REPLACE:
            reason = f"Cancelled: replaced by the run of slot {schedule.isoz(run.scheduled_for)} (concurrency=replace)."
            for other in active:
                if other in self.promoted:
                    # Released in this very pass and not started: it simply never goes.
                    self.promoted.remove(other)
                    self.skipped[other] = f"Skipped at release: {reason.removeprefix('Cancelled: ')}"
                    if self.admission:
                        self.admission.give_back(job)
                else:
                    self.to_cancel.append((other, reason))
            self.active[job.pk] = active = []
        self.promoted.append(run.pk)
        self.active.setdefault(job.pk, []).append(run.pk)

    def write(self, now: datetime) -> list[int]:
        # The candidates are locked (PostgreSQL) or the database is (SQLite): still deferred here.
        deferred = Run.objects.filter(status=RunStatus.DEFERRED)
        if self.promoted:
            deferred.filter(pk__in=self.promoted).update(status=RunStatus.QUEUED, queued_at=now)
        if self.skipped:
            deferred.filter(pk__in=list(self.skipped)).update(
                status=RunStatus.SKIPPED, finished_at=now, reason=_reasons(self.skipped)
            )
        if self.waiting:
            deferred.filter(pk__in=list(self.waiting)).update(reason=_reasons(self.waiting))
        by_reason: dict[str, list[int]] = {}
        for run_id, reason in self.to_cancel:
            by_reason.setdefault(reason, []).append(run_id)
        for reason, ids in by_reason.items():
            # The executor notices the cancel at its next status check and kills the process group.
            Run.objects.filter(pk__in=ids, status__in=ACTIVE_STATUSES).update(
                status=RunStatus.CANCELLED, reason=reason, finished_at=now
            )
        return self.promoted


def _reasons(reasons: dict[int, str]) -> Case:
    """One UPDATE setting a different reason on each run."""
    return Case(*(When(pk=pk, then=Value(reason)) for pk, reason in reasons.items()), output_field=TextField())


CLAIM_CHUNK = 500


def _claim(claims: list[tuple[int, datetime, datetime | None]]) -> set[int]:
    """Move next_fire_at of each (job, slot, following) that still has that slot; return the jobs won.

    One conditional UPDATE per chunk instead of one per job: the query count of
    a tick does not grow with the number of due jobs.
    """
    won: set[int] = set()
    table = connection.ops.quote_name(Job._meta.db_table)
    ts = "timestamp with time zone" if connection.vendor == "postgresql" else "text"
    for start in range(0, len(claims), CLAIM_CHUNK):
        chunk = claims[start : start + CLAIM_CHUNK]
        values = ", ".join(["(%s, %s, %s)"] * len(chunk))
        params: list = []
        for job_id, slot, following in chunk:
            params += [
                job_id,
                connection.ops.adapt_datetimefield_value(slot),
                connection.ops.adapt_datetimefield_value(following),
            ]
        # Only placeholders and names from our own model are interpolated; values are parameters.
        sql = " ".join(
            [
                "WITH claim(id, slot, following) AS (VALUES",
                values,
                ") UPDATE",
                table,
                "SET next_fire_at = CAST(claim.following AS",
                ts,
                ") FROM claim WHERE",
                f"{table}.id = claim.id AND {table}.status = %s AND {table}.next_fire_at = CAST(claim.slot AS",
                ts,
                ") RETURNING",
                f"{table}.id",
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, JobStatus.ENABLED.value])
            won.update(row[0] for row in cursor.fetchall())
    return won


def _claim_and_create(plans, now: datetime, result: TickResult, *, bulk: bool) -> None:
    rows: list[Run] = []
    won = _claim([(job.pk, job.next_fire_at, following) for job, following, _ in plans])
    result.lost_race += sum(1 for job, _following, _plans in plans if job.pk not in won)
    # Copies: admission may defer a slot, and the row-by-row retry after an IntegrityError decides afresh.
    plans = [(job, [replace(p) for p in slot_plans]) for job, _following, slot_plans in plans if job.pk in won]
    _admit(plans)
    for job, slot_plans in plans:
        definition = job.definition()
        job_rows = [_run_row(job, plan, now, definition) for plan in slot_plans]
        if bulk:
            rows.extend(job_rows)
            continue
        for row in job_rows:
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
            except IntegrityError:
                result.lost_race += 1
                continue
            rows.append(row)
    if bulk:
        Run.objects.bulk_create(rows)
    queued = [row.pk for row in rows if row.status == RunStatus.QUEUED]
    result.created += len(queued)
    result.deferred += sum(1 for row in rows if row.status == RunStatus.DEFERRED)
    result.skipped += sum(1 for row in rows if row.status == RunStatus.SKIPPED)
    result.run_ids.extend(queued)
    if queued:
        transaction.on_commit(lambda: _after_tick_commit(queued))


def _after_tick_commit(run_ids: list[int]) -> None:
    crash_point("after-tick-commit")
    enqueue_all(run_ids)


def crash_point(name: str) -> None:
    """Test-only fault injection: ``GOVERNOR_TEST_CRASH_POINT=<name>`` kills this process with
    SIGKILL when it reaches ``name`` (``after-tick-commit``: the tick's runs are committed, their
    queue messages not yet sent). Never set it in production; unset, this is one dict lookup."""
    if os.environ.get("GOVERNOR_TEST_CRASH_POINT") == name:
        log.warning("GOVERNOR_TEST_CRASH_POINT=%s reached: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def _admit(plans: list[tuple[Job, list[SlotPlan]]]) -> None:
    """Pool slots and backpressure for the runnable slots of the jobs this tick won.

    Runs in the transaction that inserts the runs, after the pool rows are
    locked (jobs.pools.Admission); higher priorities take free slots first.
    """
    runnable = [(job, plan) for job, slot_plans in plans for plan in slot_plans if plan.status == RunStatus.QUEUED]
    if not any(job.pool or pools.is_low_priority(job) for job, _ in runnable):
        return
    admission = pools.Admission(job for job, _ in runnable)
    for job, plan in sorted(runnable, key=lambda item: (-item[0].priority, item[1].slot, item[0].pk)):
        reason = admission.admit(job)
        if reason:
            plan.status, plan.reason = RunStatus.DEFERRED, reason
            # Due at once: every sweep (promote_deferred) offers it the next free slot.
            plan.deferred_until = plan.slot


def seconds_until_next_due(now: datetime, max_sleep: float) -> float:
    upcoming = Job.objects.filter(status=JobStatus.ENABLED).aggregate(first=Min("next_fire_at"))["first"]
    if upcoming is None:
        return max_sleep
    return max(0.0, min(max_sleep, (upcoming - now).total_seconds()))


# --- windows, holidays, concurrency ----------------------------------------------------

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# A catch-up run waiting for the job's earlier runs to finish: deferred, with no instant of its own.
WAITING_TURN = Q(status=RunStatus.DEFERRED, deferred_until__isnull=True)


def active_runs(now: datetime) -> Q:
    """The runs that count against a job's concurrency policy (forbid, replace, max_active_runs).

    - running, unless its worker lease has expired (the sweep declares it lost in the same loop);
      a running run with no worker lease (an external job waiting for its ping, a fan-out waiting
      for its partitions) counts;
    - queued, unless the queue reconciler has given up on it: enqueued again
      GOVERNOR_REQUEUE_MAX times and still not taken by a worker one bound
      (GOVERNOR_REQUEUE_AFTER_SECONDS) after the last time. Such a run has raised a
      ``stuck_queued`` alert; it may still run if a worker ever takes it.
    A queued run whose message was lost counts until then: the reconciler enqueues it again
    within the bound, so it is about to run, not a ghost.
    """
    bound = timedelta(seconds=settings.GOVERNOR_REQUEUE_AFTER_SECONDS)
    live_lease = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__gte=now)
    given_up = Q(requeues__gte=settings.GOVERNOR_REQUEUE_MAX, requeued_at__lt=now - bound) & _this_queueing()
    return Q(status=RunStatus.RUNNING) & live_lease | Q(status=RunStatus.QUEUED) & ~given_up


def release_turns(now: datetime, limit: int = 1000) -> int:
    """Let the catch-up runs waiting their turn go, oldest slot first, as the job's earlier runs finish:
    one at a time under concurrency=forbid, up to max_active_runs otherwise. A released run becomes an
    ordinary deferred run due now, which promote_deferred then checks (pools, backpressure) and queues.
    One whose slot has meanwhile passed its starting deadline is skipped, saying so."""
    waiting = list(
        Run.objects.filter(WAITING_TURN)
        .select_related("job")
        .only(
            "id",
            "job_id",
            "scheduled_for",
            "job__concurrency",
            "job__max_active_runs",
            "job__starting_deadline_seconds",
        )
        .order_by("job_id", "scheduled_for", "pk")[:limit]
    )
    if not waiting:
        return 0
    job_ids = {run.job_id for run in waiting}
    busy: dict[int, int] = {}
    # Really active runs, and released ones not queued yet (a pool may hold them): each takes a turn.
    ahead = Run.objects.filter(job_id__in=job_ids).filter(
        active_runs(now) | Q(status=RunStatus.DEFERRED, deferred_until__isnull=False)
    )
    for job_id in ahead.values_list("job_id", flat=True):
        busy[job_id] = busy.get(job_id, 0) + 1
    release: list[int] = []
    skipped: dict[int, str] = {}
    for run in waiting:
        job = run.job
        if _past_deadline(job, now, run.scheduled_for):
            skipped[run.pk] = (
                f"Missed: reached {_late(now, run.scheduled_for)} s after its time while waiting its turn, "
                f"past the starting deadline of {job.starting_deadline_seconds} s."
            )
            continue
        if job.concurrency == ConcurrencyPolicy.FORBID:
            turns = 1
        elif job.max_active_runs:
            turns = job.max_active_runs
        else:
            turns = None  # the policy was relaxed since: no reason to wait any more
        if turns is not None and busy.get(job.pk, 0) >= turns:
            continue
        busy[job.pk] = busy.get(job.pk, 0) + 1
        release.append(run.pk)
    with transaction.atomic():
        if release:
            Run.objects.filter(WAITING_TURN, pk__in=release).update(
                deferred_until=now, reason="Released: the job's earlier runs have finished (catch-up, in turn)."
            )
        if skipped:
            Run.objects.filter(WAITING_TURN, pk__in=list(skipped)).update(
                status=RunStatus.SKIPPED, finished_at=now, reason=_reasons(skipped)
            )
    return len(release)


MAX_WINDOW_CHAIN = firing.MAX_WINDOW_CHAIN
_STATUS_OF = {firing.SKIP: RunStatus.SKIPPED, firing.DEFER: RunStatus.DEFERRED}


class Constraints:
    """What a tick needs to know besides the jobs: windows, calendars and active runs, read once per tick."""

    def __init__(self, jobs: list[Job], now: datetime) -> None:
        tenant_ids = {job.tenant_id for job in jobs}
        self.windows: dict[int, list[MaintenanceWindow]] = {}
        for window in MaintenanceWindow.objects.filter(tenant_id__in=tenant_ids):
            self.windows.setdefault(window.tenant_id, []).append(window)
        names = {job.holiday_calendar for job in jobs if job.holiday_calendar}
        self.holidays: dict[tuple[int, str], set[str]] = {}
        if names:
            for cal in HolidayCalendar.objects.filter(tenant_id__in=tenant_ids, name__in=names):
                self.holidays[(cal.tenant_id, cal.name)] = set(cal.dates)
        limited = [job.pk for job in jobs if job.concurrency != ConcurrencyPolicy.ALLOW or job.max_active_runs]
        # Runs really active (see active_runs), and catch-up runs waiting their turn, per job.
        self.active: dict[int, list[int]] = {}
        self.waiting: dict[int, list[int]] = {}
        if limited:
            rows = Run.objects.filter(job_id__in=limited).filter(active_runs(now) | WAITING_TURN)
            for run_id, job_id, status in rows.values_list("pk", "job_id", "status"):
                target = self.waiting if status == RunStatus.DEFERRED else self.active
                target.setdefault(job_id, []).append(run_id)
        # This tick's own runnable slots, per job (their runs do not exist yet).
        self.pending: dict[int, list[SlotPlan]] = {}
        self.to_cancel: list[tuple[int, str]] = []

    def rules(self, job: Job) -> firing.Rules:
        """The job's calendars and windows as jobs.firing decides with them (no query)."""
        windows = firing.applicable(self.windows.get(job.tenant_id, []), job.tenant_id, job.environment_id)
        holidays = self.holidays.get((job.tenant_id, job.holiday_calendar), frozenset())
        return firing.Rules(
            timezone=job.timezone,
            holiday_calendar=job.holiday_calendar or "",
            holidays=holidays,
            windows=job.windows or [],
            window_policy=job.window_policy,
            maintenance=windows,
        )

    def maintenance(self, job: Job, instant: datetime) -> tuple[datetime, list[MaintenanceWindow]] | None:
        """The end of the maintenance windows covering ``instant`` (back-to-back ones chained) and those windows."""
        return firing.maintenance_end(self.rules(job).maintenance, instant)


def apply_constraints(job: Job, plans: list[SlotPlan], constraints: Constraints, now: datetime) -> None:
    """Turn runnable slots into skipped or deferred ones: holidays and windows as jobs.firing
    decides them (the previews decide the same way), then concurrency against live runs."""
    rules = None
    for plan in plans:
        if plan.status != RunStatus.QUEUED:
            continue
        rules = rules or constraints.rules(job)
        decision = firing.decide(rules, plan.slot, now)
        if decision.action != firing.FIRE:
            plan.status, plan.reason = _STATUS_OF[decision.action], decision.reason
            plan.deferred_until = decision.deferred_to
            continue
        _apply_concurrency(job, plan, constraints, in_line=job.catchup == CatchupPolicy.ALL and len(plans) > 1)


def _ids(run_ids: list[int]) -> str:
    return ", ".join(f"#{i}" for i in run_ids)


def _apply_concurrency(job: Job, plan: SlotPlan, constraints: Constraints, *, in_line: bool) -> None:
    """The job's concurrency policy for one runnable slot. ``in_line``: a catch-up batch
    (catchup=all, several slots due at once), whose slots wait their turn instead of being skipped."""
    active = constraints.active.get(job.pk, [])
    waiting = constraints.waiting.get(job.pk, [])
    pending = constraints.pending.setdefault(job.pk, [])
    if job.concurrency == ConcurrencyPolicy.FORBID:
        if waiting:
            plan.status = RunStatus.SKIPPED
            plan.reason = f"Skipped: concurrency=forbid and catch-up run(s) {_ids(waiting)} still wait their turn" + (
                f" behind run(s) {_ids(active)}." if active else "."
            )
            return
        if active or pending:
            if in_line:
                _wait_turn(plan, active, pending, "concurrency=forbid runs one at a time")
                return
            plan.status = RunStatus.SKIPPED
            plan.reason = f"Skipped: concurrency=forbid and run(s) {_ids(active)} still active."
            return
    if job.concurrency == ConcurrencyPolicy.REPLACE:
        reason = f"Cancelled: replaced by the run of slot {schedule.isoz(plan.slot)} (concurrency=replace)."
        constraints.to_cancel.extend((run_id, reason) for run_id in active)
        for older in pending:
            # An older slot of this very tick: its run is never started.
            older.status, older.reason = RunStatus.SKIPPED, f"Skipped: {reason.removeprefix('Cancelled: ')}"
        constraints.active[job.pk] = active = []
        pending.clear()
    if job.max_active_runs and len(active) + len(pending) + len(waiting) >= job.max_active_runs:
        if in_line:
            _wait_turn(plan, active, pending, f"the job allows at most {job.max_active_runs} active run(s)")
            return
        plan.status = RunStatus.SKIPPED
        counted = f"{len(active)} run(s) active" + (f", {len(waiting)} waiting their turn" if waiting else "")
        plan.reason = f"Skipped: {counted}, the job allows at most {job.max_active_runs}."
        return
    pending.append(plan)


def _wait_turn(plan: SlotPlan, active: list[int], pending: list[SlotPlan], why: str) -> None:
    """A catch-up slot that starts when the job's earlier runs have finished (released by promote_deferred)."""
    ahead = [f"run {_ids(active)}"] if active else []
    ahead += [f"the run of slot {schedule.isoz(p.slot)}" for p in pending[-1:]]
    plan.status, plan.deferred_until = RunStatus.DEFERRED, None
    plan.reason = (
        f"Waiting its turn after {' and '.join(ahead)}: {why}, and catchup=all runs the missed slots one after another."
    )
    pending.append(plan)


# --- end windows, holidays, concurrency ----------------------------------------------------


# --- queue reconciler ------------------------------------------------------------------


@dataclass
class ReconcileResult:
    stale: int = 0
    requeued: list[int] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)


RECONCILE_BATCH = 500
RECONCILE_FIELDS = (
    "id",
    "tenant_id",
    "job_id",
    "queued_at",
    "created_at",
    "requeued_at",
    "requeues",
    "queue_note",
    "job__name",
    "job__team_id",
    "job__environment_id",
)
STUCK = "stuck:"


def _this_queueing() -> Q:
    """The reconciler's marks (requeues, requeued_at, queue_note) belong to the run's current stay in
    the queue: a retry, a rerun or a lost-run retry sets queued_at anew and starts from zero."""
    return Q(requeued_at__isnull=False, queued_at__isnull=False, requeued_at__gte=F("queued_at"))


def _requeues(run: Run) -> int:
    if run.requeued_at and run.queued_at and run.requeued_at >= run.queued_at:
        return run.requeues
    return 0


def reconcile_queue(now: datetime | None = None, limit: int = RECONCILE_BATCH) -> ReconcileResult:
    """Enqueue again every run ``queued`` longer than GOVERNOR_REQUEUE_AFTER_SECONDS (since it was
    queued, or last enqueued again) that no worker has claimed and that has no live queue message
    (jobs.tasks.live_queue_messages says what is live on each broker). This covers a scheduler killed
    between its commit and the enqueue, and messages a killed cluster had taken but not run.

    Each re-enqueue is a conditional UPDATE of the run (still queued, unchanged since read) with its
    note and an audit event, then one message: the worker's claim (queued -> running) keeps the run
    exactly-once whichever copy arrives first. After GOVERNOR_REQUEUE_MAX re-enqueues, a run still
    without a worker one bound later raises a ``stuck_queued`` alert (once) and stops counting as
    active for its job's concurrency policy (see active_runs). Runs that wait for a reason (deferred:
    windows, pools, their turn; scheduled: retry backoff) are not queued, and are not touched.
    """
    from governance import audit
    from governance.models import AuditAction

    from . import tasks
    from .heartbeats import create_alert
    from .models import AlertKind

    now = now or timezone.now()
    bound = settings.GOVERNOR_REQUEUE_AFTER_SECONDS
    cut = now - timedelta(seconds=bound)
    result = ReconcileResult()
    stale = list(
        Run.objects.filter(status=RunStatus.QUEUED)
        .filter(Q(queued_at__lt=cut) | Q(queued_at__isnull=True, created_at__lt=cut))
        .filter(Q(requeued_at__isnull=True) | Q(requeued_at__lt=cut))
        .exclude(_this_queueing() & Q(queue_note__startswith=STUCK))
        .select_related("job")
        .only(*RECONCILE_FIELDS)
        .order_by("queued_at", "pk")[:limit]
    )
    result.stale = len(stale)
    if not stale:
        return result
    live = tasks.live_queue_messages(bound, now)
    if live is None:
        log.warning("queue reconciler: the broker's queue is too long to read; no run re-enqueued this pass")
        return result
    for run in stale:
        if run.pk in live:
            continue
        since = run.requeued_at if _requeues(run) else (run.queued_at or run.created_at)
        waited = int((now - since).total_seconds())
        unchanged = Run.objects.filter(
            pk=run.pk,
            status=RunStatus.QUEUED,
            requeues=run.requeues,
            requeued_at=run.requeued_at,
            queued_at=run.queued_at,
        )
        count = _requeues(run)
        if count >= settings.GOVERNOR_REQUEUE_MAX:
            note = f"{STUCK} no worker took it after {count} re-enqueues (no queue message after {waited} s)"
            with transaction.atomic():
                if unchanged.update(queue_note=note):
                    create_alert(
                        run,
                        AlertKind.STUCK_QUEUED,
                        f"{run.job.name} run #{run.pk}: queued since "
                        f"{schedule.isoz(run.queued_at or run.created_at)}; {note}. Check the workers "
                        "(manage.py cluster_status), then cancel or rerun it. It no longer blocks the "
                        "job's next slots.",
                    )
                    result.given_up.append(run.pk)
            log.error("queue reconciler gave up on run %s: %s", run.pk, note)
            continue
        note = f"re-enqueued: no queue message after {waited} s"
        with transaction.atomic():
            if not unchanged.update(requeues=count + 1, requeued_at=now, queue_note=note):
                continue  # claimed, cancelled or re-enqueued by someone else meanwhile
            audit.record(
                AuditAction.RUN_REQUEUED,
                obj=run,
                team_id=run.job.team_id,
                environment_id=run.job.environment_id,
                data={"job": run.job.name, "note": note, "requeues": count + 1},
                actor_repr="scheduler",
            )
        result.requeued.append(run.pk)
        log.warning("run %s %s (re-enqueue %s)", run.pk, note, count + 1)
    if result.requeued:
        enqueue_all(list(result.requeued))
    return result


# --- end queue reconciler --------------------------------------------------------------


# --- leader lease ----------------------------------------------------------------------


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def hold_lease(holder: str, ttl: float, now: datetime | None = None) -> bool:
    """Acquire or renew the leader lease; True while ``holder`` is the leader."""
    now = now or timezone.now()
    expires = now + timedelta(seconds=ttl)
    renewed = SchedulerLease.objects.filter(name=LEASE_NAME, holder=holder, expires_at__gt=now).update(
        expires_at=expires
    )
    if renewed:
        return True
    taken = SchedulerLease.objects.filter(name=LEASE_NAME, expires_at__lte=now).update(
        holder=holder, expires_at=expires, acquired_at=now, term=F("term") + 1
    )
    if taken:
        log.info("scheduler %s took over the leader lease", holder)
        return True
    if SchedulerLease.objects.filter(name=LEASE_NAME).exists():
        return False
    try:
        with transaction.atomic():
            SchedulerLease.objects.create(name=LEASE_NAME, holder=holder, expires_at=expires, acquired_at=now)
    except IntegrityError:
        return False
    log.info("scheduler %s holds the new leader lease", holder)
    return True


def release_lease(holder: str) -> None:
    """Give the lease up at a clean shutdown so a follower takes over at once."""
    SchedulerLease.objects.filter(name=LEASE_NAME, holder=holder).update(expires_at=timezone.now())


def reconcile_vault_policy(next_check: float) -> float:
    """Every VAULT_POLICY_RECONCILE_SECONDS, make the Vault policy cover every tenant (when this
    process holds a policy token); a failure is retried within a minute. Returns the next check time."""
    period = settings.VAULT_POLICY_RECONCILE_SECONDS
    if not period or not secrets.policy_token() or time.monotonic() < next_check:
        return next_check
    outcome = secrets.reconcile_policy(reason="scheduler reconcile")
    return time.monotonic() + (min(period, 60) if outcome == "failed" else period)


def run_forever(stop: threading.Event, max_sleep: float | None = None, lease_seconds: float | None = None) -> None:
    """While leader: tick, then sleep until the next due instant (at most ``max_sleep``, so changes are seen)."""
    max_sleep = settings.GOVERNOR_SCHEDULER_MAX_SLEEP if max_sleep is None else max_sleep
    ttl = settings.GOVERNOR_SCHEDULER_LEASE_SECONDS if lease_seconds is None else lease_seconds
    # Renew well before expiry; a follower polls at the same pace so handover takes at most ttl + this.
    beat = min(max_sleep, ttl / 3)
    holder = holder_id()
    leading = False
    next_policy_check = 0.0
    # A run is re-enqueued at most a quarter of the bound late. A pass is one query over queued runs; it reads
    # the broker's queue only when some queued run is older than the bound (a backlog, or an orphan).
    reconcile_every = max(0.5, settings.GOVERNOR_REQUEUE_AFTER_SECONDS / 4)
    next_reconcile = 0.0
    try:
        while not stop.is_set():
            try:
                now = timezone.now()
                if not hold_lease(holder, ttl, now):
                    if leading:
                        log.warning("scheduler %s lost the leader lease", holder)
                    leading = False
                    stop.wait(beat)
                    continue
                leading = True
                result = tick()
                # Lost workers, due retries and missed pings (jobs.heartbeats).
                sweep()
                # Queued runs whose queue message is gone (a crash between commit and enqueue, a killed cluster).
                if time.monotonic() >= next_reconcile:
                    reconcile_queue()
                    next_reconcile = time.monotonic() + reconcile_every
                next_policy_check = reconcile_vault_policy(next_policy_check)
                if result.created or result.skipped or result.deferred or result.promoted or result.lost_race:
                    log.info(
                        "tick: %s due, %s runs created, %s skipped, %s deferred, %s promoted, %s taken by another",
                        result.due,
                        result.created,
                        result.skipped,
                        result.deferred,
                        result.promoted,
                        result.lost_race,
                    )
                if result.due:
                    continue
                delay = seconds_until_next_due(timezone.now(), beat)
            except Exception:
                log.exception("scheduler tick failed; retrying")
                close_old_connections()
                delay = beat
            stop.wait(delay)
    finally:
        if leading:
            try:
                release_lease(holder)
            except Exception:  # pragma: no cover - shutting down anyway
                log.exception("could not release the leader lease")


# --- end leader lease ------------------------------------------------------------------
