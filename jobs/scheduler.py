"""The scheduler loop: turn due slots into runs, exactly once per (job, instant).

Each tick reads only jobs whose stored ``next_fire_at`` has come (an indexed
query), so its cost grows with due jobs, not with all jobs. A slot is claimed
by a conditional UPDATE that moves ``next_fire_at`` forward; the unique
(job, scheduled_for) constraint on runs is the last line of defence when
several schedulers run at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Min
from django.utils import timezone

from . import schedule
from .models import DEFINITION_FIELDS, Job, JobStatus, Run, RunStatus, TriggerKind
from .services import enqueue_run

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    due: int = 0
    created: int = 0
    lost_race: int = 0


def tick(now: datetime | None = None, limit: int = 1000) -> TickResult:
    """Create and enqueue the runs of every slot due at ``now``."""
    now = now or timezone.now()
    result = TickResult()
    due = list(
        Job.objects.filter(status=JobStatus.ENABLED, next_fire_at__lte=now)
        .order_by("next_fire_at")
        .only("id", "tenant_id", "version", "next_fire_at", "status", *DEFINITION_FIELDS)[:limit]
    )
    result.due = len(due)
    for job in due:
        slot = job.next_fire_at
        following = schedule.next_after(job.cron, job.timezone, max(now, slot))
        with transaction.atomic():
            won = Job.objects.filter(pk=job.pk, status=JobStatus.ENABLED, next_fire_at=slot).update(
                next_fire_at=following
            )
            if not won:
                result.lost_race += 1
                continue
            try:
                with transaction.atomic():
                    run = Run.objects.create(
                        job_id=job.pk,
                        tenant_id=job.tenant_id,
                        scheduled_for=slot,
                        trigger=TriggerKind.SCHEDULE,
                        status=RunStatus.QUEUED,
                        queued_at=timezone.now(),
                        job_version=job.version,
                        definition=job.definition(),
                    )
            except IntegrityError:
                # Another scheduler already created this slot's run.
                result.lost_race += 1
                continue
            transaction.on_commit(lambda run_id=run.pk: enqueue_run(run_id))
            result.created += 1
    return result


def seconds_until_next_due(now: datetime, max_sleep: float) -> float:
    upcoming = Job.objects.filter(status=JobStatus.ENABLED).aggregate(first=Min("next_fire_at"))["first"]
    if upcoming is None:
        return max_sleep
    return max(0.0, min(max_sleep, (upcoming - now).total_seconds()))


def run_forever(stop: threading.Event, max_sleep: float | None = None) -> None:
    """Tick, then sleep until the next due instant (at most ``max_sleep`` so new changes are seen)."""
    max_sleep = settings.GOVERNOR_SCHEDULER_MAX_SLEEP if max_sleep is None else max_sleep
    while not stop.is_set():
        try:
            result = tick()
            if result.created or result.lost_race:
                log.info(
                    "tick: %s due, %s runs created, %s taken by another scheduler",
                    result.due,
                    result.created,
                    result.lost_race,
                )
            if result.due:
                continue
            delay = seconds_until_next_due(timezone.now(), max_sleep)
        except Exception:
            log.exception("scheduler tick failed; retrying")
            close_old_connections()
            delay = max_sleep
        stop.wait(delay)
