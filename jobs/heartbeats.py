"""Heartbeats: pings from jobs.

External jobs run elsewhere and report like healthchecks.io: ``/hb/<token>/start``,
``/hb/<token>`` (success), ``/hb/<token>/fail`` or ``/hb/<token>/<exit code>``
(jobs.heartbeat_views). Long command runs get ``GOVERNOR_HEARTBEAT_URL`` and may ping it
while they work. A run that expected a ping and got none is the recovery sweep's (jobs.recovery).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import Attempt, Job, JobKind, JobStatus, Run, RunStatus, TriggerKind
from .workflows import after_finish

log = logging.getLogger(__name__)

OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def grace_seconds(definition: dict) -> int | None:
    return (definition.get("heartbeat") or {}).get("grace_seconds")


def await_external(run: Run) -> str:
    """An external job's run: nothing to execute here; a ping must arrive within the grace."""
    grace = grace_seconds(run.definition) or 3600
    deadline = max(run.scheduled_for, run.started_at or run.scheduled_for) + timedelta(seconds=grace)
    Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        lease_expires_at=None,
        heartbeat_deadline=deadline,
        worker="",
        reason=f"Waiting for a ping from the external job (grace {grace} s).",
    )
    return RunStatus.RUNNING


class PingKind:
    START = "start"
    SUCCESS = "success"
    FAIL = "fail"


def record_ping(job: Job, kind: str, exit_code: int | None = None, body: str = "") -> Run | None:
    """Apply one ping to the job's open run (creating one for an external job that reports
    unprompted). Returns the run, or None when the job cannot take pings."""
    now = timezone.now()
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .filter(job=job, status__in=OPEN_STATUSES)
            .order_by("scheduled_for", "id")
            .first()
        )
        if run is None:
            if job.kind != JobKind.EXTERNAL or job.status == JobStatus.DELETED:
                return None
            run = Run.objects.create(
                job=job,
                tenant_id=job.tenant_id,
                scheduled_for=now,
                trigger=TriggerKind.PING,
                status=RunStatus.RUNNING,
                attempt=1,
                queued_at=now,
                started_at=now,
                job_version=job.version,
                definition=job.definition(),
            )
        is_external = run.definition.get("kind") == JobKind.EXTERNAL
        if kind == PingKind.START or not is_external:
            # A start (or a progress ping from a long command run) moves the deadline on.
            grace = grace_seconds(run.definition)
            updates: dict[str, Any] = {"heartbeat_at": now}
            if grace:
                updates["heartbeat_deadline"] = now + timedelta(seconds=grace)
            if is_external:
                updates.update(status=RunStatus.RUNNING, started_at=now, reason="Started (ping).")
                if run.status == RunStatus.QUEUED:
                    updates["attempt"] = max(run.attempt, 1)
            Run.objects.filter(pk=run.pk).update(**updates)
        else:
            succeeded = kind == PingKind.SUCCESS or (exit_code == 0)
            status = RunStatus.SUCCEEDED if succeeded else RunStatus.FAILED
            if exit_code is None:
                exit_code = 0 if succeeded else None
            Run.objects.filter(pk=run.pk).update(
                status=status,
                exit_code=exit_code,
                finished_at=now,
                heartbeat_at=now,
                heartbeat_deadline=None,
                started_at=run.started_at or now,
                output=body[:65536],
                output_bytes=len(body),
                reason="Reported by ping." if succeeded else f"Reported failure by ping (exit code {exit_code}).",
            )
            Attempt.record_end(
                run,
                status=status,
                started_at=run.started_at or now,
                finished_at=now,
                exit_code=exit_code,
                output=body[:65536],
            )
            transaction.on_commit(lambda: after_finish(run.pk))
    run.refresh_from_db()
    return run
