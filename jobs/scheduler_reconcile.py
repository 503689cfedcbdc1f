"""The queue reconciler: queued runs whose queue message is gone are enqueued again.

This covers a scheduler killed between its commit and the enqueue, and messages a killed cluster
had taken but not run, so no run is left behind and no ghost blocks a job (docs/scheduling.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import schedule
from .models import Run, RunStatus
from .queue import enqueue_all

log = logging.getLogger("jobs.scheduler")


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


def this_queueing() -> Q:
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
    from .alerts import create_alert
    from .models import AlertKind

    now = now or timezone.now()
    bound = settings.GOVERNOR_REQUEUE_AFTER_SECONDS
    cut = now - timedelta(seconds=bound)
    result = ReconcileResult()
    stale = list(
        Run.objects.filter(status=RunStatus.QUEUED)
        .filter(Q(queued_at__lt=cut) | Q(queued_at__isnull=True, created_at__lt=cut))
        .filter(Q(requeued_at__isnull=True) | Q(requeued_at__lt=cut))
        .exclude(this_queueing() & Q(queue_note__startswith=STUCK))
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
        since = (run.requeued_at if _requeues(run) else None) or run.queued_at or run.created_at
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
