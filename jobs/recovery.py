"""Recovery: the sweep that notices what went quiet.

``sweep()`` runs beside the scheduler (jobs.scheduler_loop) and does three things, each a
conditional UPDATE so that several sweepers never act twice:
- a running run whose worker stopped renewing its lease becomes ``lost``
  (retried only when the job is idempotent, otherwise it waits for an operator);
- a run whose retry backoff has passed is queued again;
- a run expecting a ping past its grace is a silent failure, with an Alert.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from . import retries
from .alerts import create_alert
from .heartbeats import OPEN_STATUSES
from .models import AlertKind, Attempt, JobKind, Run, RunStatus
from .queue import enqueue_run

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


@dataclass
class SweepResult:
    lost: int = 0
    retried_lost: int = 0
    requeued: int = 0
    silent: int = 0


def sweep(now: datetime | None = None) -> SweepResult:
    now = now or timezone.now()
    result = SweepResult()
    _sweep_lost(now, result)
    _sweep_retries(now, result)
    _sweep_silent(now, result)
    return result


def _sweep_lost(now: datetime, result: SweepResult) -> None:

    expired = list(
        Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).select_related("job")[:SWEEP_BATCH]
    )
    for run in expired:
        idempotent = bool(run.definition.get("idempotent"))
        # A lost attempt may be retried even when max_attempts is 1: the job never finished.
        limit = max(retries.policy(run.definition)["max_attempts"], 2)
        retry = idempotent and run.attempt < limit
        reason = f"Worker {run.worker or '?'} stopped renewing its lease; the run was lost."
        with transaction.atomic():
            won = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, lease_expires_at__lt=now).update(
                status=RunStatus.QUEUED if retry else RunStatus.LOST,
                lease_expires_at=None,
                queued_at=now if retry else run.queued_at,
                finished_at=None if retry else now,
                reason=reason
                + (" The job is idempotent: retrying." if retry else " Not idempotent: waiting for an operator."),
            )
            if not won:
                continue
            Attempt.record_end(
                run,
                status=RunStatus.LOST,
                reason=reason,
                started_at=run.started_at,
                finished_at=now,
                worker=run.worker,
                pid=run.pid,
            )
            if retry:
                transaction.on_commit(functools.partial(enqueue_run, run.pk))
                result.retried_lost += 1
            else:
                create_alert(run, AlertKind.LOST_RUN, f"{run}: {reason} Rerun it or mark it succeeded.")
        result.lost += 1
        log.warning("run %s lost (worker %s); %s", run.pk, run.worker, "retrying" if retry else "operator needed")


def _sweep_retries(now: datetime, result: SweepResult) -> None:

    due = list(
        Run.objects.filter(status=RunStatus.SCHEDULED, next_attempt_at__lte=now).values_list("pk", flat=True)[
            :SWEEP_BATCH
        ]
    )
    for run_id in due:
        with transaction.atomic():
            won = Run.objects.filter(pk=run_id, status=RunStatus.SCHEDULED, next_attempt_at__lte=now).update(
                status=RunStatus.QUEUED, queued_at=now, next_attempt_at=None
            )
            if won:
                transaction.on_commit(functools.partial(enqueue_run, run_id))
                result.requeued += 1


def _sweep_silent(now: datetime, result: SweepResult) -> None:
    overdue = list(
        Run.objects.filter(status__in=OPEN_STATUSES, heartbeat_deadline__lt=now).select_related("job")[:SWEEP_BATCH]
    )
    for run in overdue:
        external = run.definition.get("kind") == JobKind.EXTERNAL
        with transaction.atomic():
            if external:
                reason = "No ping arrived before the grace period ended: silent failure."
                won = Run.objects.filter(pk=run.pk, heartbeat_deadline__lt=now, status__in=OPEN_STATUSES).update(
                    status=RunStatus.FAILED, finished_at=now, heartbeat_deadline=None, reason=reason
                )
                if won:
                    Attempt.record_end(
                        run,
                        status=RunStatus.FAILED,
                        reason=reason,
                        started_at=run.started_at,
                        finished_at=now,
                    )
            else:
                # A command run that stopped pinging keeps running (its timeout still applies); alert once.
                reason = "The running job stopped pinging its heartbeat URL: it may hang."
                won = Run.objects.filter(pk=run.pk, heartbeat_deadline__lt=now).update(heartbeat_deadline=None)
            if won:
                create_alert(run, AlertKind.SILENT_FAILURE, f"{run}: {reason}")
                result.silent += 1
