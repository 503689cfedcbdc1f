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
also bounds how many run, so an outage never ends in a burst.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Min
from django.utils import timezone

from . import schedule
from .heartbeats import sweep
from .models import (
    DEFINITION_FIELDS,
    CatchupPolicy,
    Job,
    JobStatus,
    Run,
    RunStatus,
    SchedulerLease,
    TriggerKind,
)
from .services import enqueue_run

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
    run_ids: list[int] = field(default_factory=list)


@dataclass
class SlotPlan:
    """What a tick decided for one due slot of one job."""

    slot: datetime
    status: str
    reason: str = ""


def _late(now: datetime, slot: datetime) -> int:
    return int((now - slot).total_seconds())


def plan_slots(job: Job, slots: list[datetime], now: datetime, grace: float) -> list[SlotPlan]:
    """Decide run or skip for each due slot (oldest first) by the job's catch-up policy."""
    deadline = job.starting_deadline_seconds
    newest = slots[-1]
    plans: list[SlotPlan] = []
    runnable = set()
    if job.catchup == CatchupPolicy.ALL:
        within = [s for s in slots if deadline is None or (now - s).total_seconds() <= deadline]
        runnable = set(within[-job.catchup_limit :])
    elif job.catchup == CatchupPolicy.LATEST:
        if deadline is None or (now - newest).total_seconds() <= deadline:
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
        if deadline is not None and late > deadline:
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
    return Run(
        job_id=job.pk,
        tenant_id=job.tenant_id,
        scheduled_for=plan.slot,
        trigger=TriggerKind.SCHEDULE,
        status=plan.status,
        reason=plan.reason,
        queued_at=now if queued else None,
        finished_at=None if queued else now,
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
    if not due:
        return result
    plans = []
    for job in due:
        slots, following = _due_slots(job, now)
        plans.append((job, following, plan_slots(job, slots, now, grace)))
    try:
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=True)
    except IntegrityError:
        # A run already exists for one of the slots (a manual trigger at that
        # very instant, or another scheduler): redo row by row, losing only that one.
        result = TickResult(due=len(due))
        with transaction.atomic():
            _claim_and_create(plans, now, result, bulk=False)
    return result


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
    for job, _following, slot_plans in plans:
        if job.pk not in won:
            result.lost_race += 1
            continue
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
        Run.objects.bulk_create(rows, batch_size=500)
    queued = [row.pk for row in rows if row.status == RunStatus.QUEUED]
    result.created += len(queued)
    result.skipped += len(rows) - len(queued)
    result.run_ids.extend(queued)
    if queued:
        transaction.on_commit(lambda: _enqueue_all(queued))


def _enqueue_all(run_ids: list[int]) -> None:
    for run_id in run_ids:
        enqueue_run(run_id)


def seconds_until_next_due(now: datetime, max_sleep: float) -> float:
    upcoming = Job.objects.filter(status=JobStatus.ENABLED).aggregate(first=Min("next_fire_at"))["first"]
    if upcoming is None:
        return max_sleep
    return max(0.0, min(max_sleep, (upcoming - now).total_seconds()))


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


def run_forever(stop: threading.Event, max_sleep: float | None = None, lease_seconds: float | None = None) -> None:
    """While leader: tick, then sleep until the next due instant (at most ``max_sleep``, so changes are seen)."""
    max_sleep = settings.GOVERNOR_SCHEDULER_MAX_SLEEP if max_sleep is None else max_sleep
    ttl = settings.GOVERNOR_SCHEDULER_LEASE_SECONDS if lease_seconds is None else lease_seconds
    # Renew well before expiry; a follower polls at the same pace so handover takes at most ttl + this.
    beat = min(max_sleep, ttl / 3)
    holder = holder_id()
    leading = False
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
                if result.created or result.skipped or result.lost_race:
                    log.info(
                        "tick: %s due, %s runs created, %s skipped, %s taken by another scheduler",
                        result.due,
                        result.created,
                        result.skipped,
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
