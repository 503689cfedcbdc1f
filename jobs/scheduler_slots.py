"""Misfires: which due slots of a job run and which are recorded as skipped, by its catch-up policy.

When a tick finds slots older than the newest due one (the scheduler was down, the job was
paused), every one is recorded as a run: skipped with the reason, or run by the job's
``catchup`` policy. The policy also bounds how many run, so an outage never ends in a burst.
Pure: no queries (jobs.scheduler writes what is decided here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from . import schedule
from .models import CatchupPolicy, Job, RunStatus

# Slots examined per job and tick when catching up; the rest wait for the next tick.
MISSED_SCAN_LIMIT = 10_000


@dataclass
class SlotPlan:
    """What a tick decided for one due slot of one job."""

    slot: datetime
    status: str
    reason: str = ""
    deferred_until: datetime | None = None


def late_seconds(now: datetime, slot: datetime) -> int:
    """Whole seconds late, rounded up: a slot 3600.4 s late is reported as 3601 s, past a 3600 s deadline."""
    return math.ceil((now - slot).total_seconds())


def past_deadline(job: Job, now: datetime, slot: datetime) -> bool:
    deadline = job.starting_deadline_seconds
    return deadline is not None and (now - slot).total_seconds() > deadline


def plan_slots(job: Job, slots: list[datetime], now: datetime, grace: float) -> list[SlotPlan]:
    """Decide run or skip for each due slot (oldest first) by the job's catch-up policy."""
    deadline = job.starting_deadline_seconds
    newest = slots[-1]
    plans: list[SlotPlan] = []
    runnable = set()
    if job.catchup == CatchupPolicy.ALL:
        within = [s for s in slots if not past_deadline(job, now, s)]
        runnable = set(within[-job.catchup_limit :])
    elif job.catchup == CatchupPolicy.LATEST:
        if not past_deadline(job, now, newest):
            runnable = {newest}
    else:
        on_time = grace if deadline is None else min(grace, deadline)
        if (now - newest).total_seconds() <= on_time:
            runnable = {newest}
    for slot in slots:
        if slot in runnable:
            plans.append(SlotPlan(slot, RunStatus.QUEUED))
            continue
        late = late_seconds(now, slot)
        if past_deadline(job, now, slot):
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


def due_slots(job: Job, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The due slots of a job (oldest first) and the first slot after them."""
    first = job.next_fire_at
    assert first is not None, "only jobs with a next slot are due"
    slots = [first]
    following = None
    for fire in schedule.iter_fires(
        job.cron, job.timezone, first, gap=job.gap, overlap=job.overlap, seed=job.schedule_seed
    ):
        if fire.at > now or len(slots) >= MISSED_SCAN_LIMIT:
            following = fire.at
            break
        slots.append(fire.at)
    return slots, following
