"""The scheduler's tick: turn due slots into runs, exactly once per (job, instant).

Each tick reads only jobs whose stored ``next_fire_at`` has come (an indexed
query), so its cost grows with due jobs, not with all jobs. A slot is claimed
by a conditional UPDATE that moves ``next_fire_at`` forward; the unique
(job, scheduled_for) constraint on runs is the last line of defence when
several schedulers run at once (the leader lease of jobs.scheduler_loop keeps
the others idle while one is alive, so they do not race for every slot).

What happens to each due slot: misfires and catch-up in jobs.scheduler_slots; windows,
holidays and concurrency in jobs.scheduler_constraints; pools and backpressure in
jobs.pools. Deferred runs are released here too (promote_deferred). Queued runs whose
message is gone are the queue reconciler's (jobs.scheduler_reconcile).
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from . import pools, schedule
from .models import DEFINITION_FIELDS, ConcurrencyPolicy, Job, JobStatus, Run, RunStatus, TriggerKind
from .queue import enqueue_all
from .scheduler_constraints import (
    ACTIVE_STATUSES,
    WAITING_TURN,
    Constraints,
    active_runs,
    apply_constraints,
    reasons_case,
    release_turns,
)
from .scheduler_slots import SlotPlan, due_slots, plan_slots

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    due: int = 0
    created: int = 0
    skipped: int = 0
    lost_race: int = 0
    deferred: int = 0
    promoted: int = 0
    run_ids: list[int] = field(default_factory=list)


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
        slots, following = due_slots(job, now)
        slot_plans = plan_slots(job, slots, now, grace)
        apply_constraints(job, slot_plans, constraints, now)
        plans.append((job, following, slot_plans))
    try:
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=True)
            _cancel_replaced(constraints.to_cancel, now)
    except IntegrityError:
        # A run already exists for one of the slots (a manual trigger at that
        # very instant, or another scheduler): redo row by row, losing only that one.
        result = TickResult(due=len(due), promoted=result.promoted)
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=False)
            _cancel_replaced(constraints.to_cancel, now)
    return result


def _cancel_replaced(to_cancel: list[tuple[int, str]], now: datetime) -> None:
    """Cancel the active runs a newer one replaces, one UPDATE per reason."""
    by_reason: dict[str, list[int]] = {}
    for run_id, reason in to_cancel:
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
                status=RunStatus.SKIPPED, finished_at=now, reason=reasons_case(self.skipped)
            )
        if self.waiting:
            deferred.filter(pk__in=list(self.waiting)).update(reason=reasons_case(self.waiting))
        _cancel_replaced(self.to_cancel, now)
        return self.promoted


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
