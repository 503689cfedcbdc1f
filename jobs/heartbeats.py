"""Heartbeats and recovery: pings from jobs, and the sweep that notices what went quiet.

External jobs run elsewhere and report like healthchecks.io: ``/hb/<token>/start``,
``/hb/<token>`` (success), ``/hb/<token>/fail`` or ``/hb/<token>/<exit code>``.
Long command runs get ``GOVERNOR_HEARTBEAT_URL`` and may ping it while they work.

``sweep()`` runs beside the scheduler and does three things, each a
conditional UPDATE so that several sweepers never act twice:
- a running run whose worker stopped renewing its lease becomes ``lost``
  (retried only when the job is idempotent, otherwise it waits for an operator);
- a run whose retry backoff has passed is queued again;
- a run expecting a ping past its grace is a silent failure, with an Alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import retries
from .models import Alert, AlertKind, Attempt, Job, JobKind, JobStatus, Run, RunStatus, TriggerKind

log = logging.getLogger(__name__)

OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
SWEEP_BATCH = 500


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
            updates = {"heartbeat_at": now}
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
            Attempt.objects.create(
                run=run,
                tenant_id=run.tenant_id,
                number=max(run.attempt, 1),
                status=status,
                started_at=run.started_at or now,
                finished_at=now,
                exit_code=exit_code,
                output=body[:65536],
            )
            transaction.on_commit(lambda: _after_finish(run.pk))
    run.refresh_from_db()
    return run


def _after_finish(run_id: int) -> None:
    from .executor import _after_finish as after

    after(run_id)


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


def create_alert(run: Run, kind: str, message: str) -> None:
    """One alert per run and kind; a second call for the same run is a no-op."""
    try:
        with transaction.atomic():
            Alert.objects.create(tenant_id=run.tenant_id, job_id=run.job_id, run=run, kind=kind, message=message)
    except IntegrityError:
        pass  # already alerted for this run


def _sweep_lost(now: datetime, result: SweepResult) -> None:
    from .queue import enqueue_run

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
            Attempt.objects.create(
                run=run,
                tenant_id=run.tenant_id,
                number=max(run.attempt, 1),
                status=RunStatus.LOST,
                reason=reason,
                started_at=run.started_at,
                finished_at=now,
                worker=run.worker,
                pid=run.pid,
            )
            if retry:
                transaction.on_commit(lambda run_id=run.pk: enqueue_run(run_id))
                result.retried_lost += 1
            else:
                create_alert(run, AlertKind.LOST_RUN, f"{run}: {reason} Rerun it or mark it succeeded.")
        result.lost += 1
        log.warning("run %s lost (worker %s); %s", run.pk, run.worker, "retrying" if retry else "operator needed")


def _sweep_retries(now: datetime, result: SweepResult) -> None:
    from .queue import enqueue_run

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
                transaction.on_commit(lambda run_id=run_id: enqueue_run(run_id))
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
                    Attempt.objects.create(
                        run=run,
                        tenant_id=run.tenant_id,
                        number=max(run.attempt, 1),
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


# --- HTTP endpoints: /hb/<token>, /hb/<token>/start, /hb/<token>/fail, /hb/<token>/<exit code> ---


def _ping(request, token, kind: str, exit_code: int | None = None):
    from django.http import HttpResponse, HttpResponseNotAllowed

    if request.method not in ("GET", "POST", "HEAD"):
        return HttpResponseNotAllowed(["GET", "POST", "HEAD"])
    job = Job.objects.filter(ping_token=token).exclude(status=JobStatus.DELETED).first()
    if job is None:
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    body = request.body[:65536].decode("utf-8", errors="replace") if request.method == "POST" else ""
    run = record_ping(job, kind, exit_code, body)
    if run is None:
        return HttpResponse("no running run to ping\n", status=409, content_type="text/plain")
    return HttpResponse("OK\n", content_type="text/plain")


def _csrf_exempt(view):
    from django.views.decorators.csrf import csrf_exempt

    return csrf_exempt(view)


@_csrf_exempt
def ping_success(request, token):
    return _ping(request, token, PingKind.SUCCESS)


@_csrf_exempt
def ping_start(request, token):
    return _ping(request, token, PingKind.START)


@_csrf_exempt
def ping_fail(request, token):
    return _ping(request, token, PingKind.FAIL)


@_csrf_exempt
def ping_exit_code(request, token, exit_code: int):
    from django.http import HttpResponse

    if not 0 <= exit_code <= 255:
        return HttpResponse("exit code must be 0..255\n", status=400, content_type="text/plain")
    return _ping(request, token, PingKind.SUCCESS if exit_code == 0 else PingKind.FAIL, exit_code)
