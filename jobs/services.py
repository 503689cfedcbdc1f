"""Verb-named writes for jobs and runs. Each is atomic and writes its audit event."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.access import Action, can, restrict
from governance.actors import Actor, require_actor, user_of
from governance.errors import ServiceError
from governance.history import save_with_history
from governance.models import AuditAction, Environment, Team
from governance.services import AccessDenied

from . import hooks
from .authority import ChangeAuthority, check_authority
from .models import Job, JobStatus, Run, RunStatus, TriggerKind
from .queue import enqueue_run

log = logging.getLogger(__name__)


class JobStateError(ServiceError):
    """The job or run is not in a state that allows this."""

    # Read by the API's error mapping (governance.api): a state conflict answers 409.
    conflict = True


class ChangeRequired(JobStateError):
    """The environment's approval policy puts this operator action under change control: it goes
    through a change request (``approvals.services.propose_pause_change``), not directly."""


def _require_reason(reason: str) -> str:
    """Every operator action (trigger, pause, resume, cancel, rerun, mark succeeded) says why."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise ValidationError({"reason": ["Give a reason: operator actions are recorded with it in the audit trail."]})
    return reason


def compute_next_fire(job: Job, after: datetime | None = None) -> datetime | None:
    if job.status != JobStatus.ENABLED:
        return None
    return job.next_fire_after(after or timezone.now())


def apply_definition(
    *,
    actor: Actor,
    authority: ChangeAuthority,
    team: Team,
    environment: Environment,
    definition: dict[str, Any],
    job: Job | None = None,
    change_reason: str | None = None,
) -> Job:
    """Make a validated definition live (create when ``job`` is None). Change control only: the
    approved request being applied (``authority``) must be a create or update of this job.

    ``change_reason`` lands in the job's history (change control names the request and its approvers)."""
    actor = require_actor(actor)
    change_request_id = check_authority(
        authority,
        operations=("update",) if job is not None else ("create",),
        tenant_id=team.tenant_id,
        job=job,
        team_id=team.pk,
        environment_id=environment.pk,
    )
    with transaction.atomic():
        if job is None:
            job = Job(tenant_id=team.tenant_id, team=team, environment=environment, version=1)
            action = AuditAction.JOB_CREATED
        else:
            job = Job.objects.select_for_update().get(pk=job.pk)
            job.version += 1
            action = AuditAction.JOB_UPDATED
        for field, value in definition.items():
            setattr(job, field, value)
        job.change_request_id = change_request_id
        job.next_fire_at = compute_next_fire(job)
        save_with_history(job, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        audit.record(action, actor=actor, obj=job, data={"version": job.version, "change_request": change_request_id})
    return job


def delete_job(*, actor: Actor, job: Job, authority: ChangeAuthority, change_reason: str | None = None) -> Job:
    """Retire a job: it stops being scheduled; its runs and history stay. Change control only: the
    approved request being applied (``authority``) must be this job's delete."""
    actor = require_actor(actor)
    change_request_id = check_authority(authority, operations=("delete",), tenant_id=job.tenant_id, job=job)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        job.status = JobStatus.DELETED
        job.version += 1
        job.next_fire_at = None
        job.change_request_id = change_request_id
        save_with_history(job, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        audit.record(AuditAction.JOB_DELETED, actor=actor, obj=job, data={"change_request": change_request_id})
    return job


def trigger_run(job: Job, *, actor: Actor, reason: str) -> Run:
    """Start a run now, outside the schedule (operators and above), for the reason given."""
    if not can(actor, Action.TRIGGER, job):
        raise AccessDenied("You need the operator role for this job to trigger it.")
    reason = _require_reason(reason)
    if job.status == JobStatus.DELETED:
        raise JobStateError("This job is deleted and cannot run.")
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            job=job,
            tenant_id=job.tenant_id,
            scheduled_for=now,
            trigger=TriggerKind.MANUAL,
            triggered_by=user_of(actor),
            reason=reason,
            trigger_reason=reason,
            status=RunStatus.QUEUED,
            queued_at=now,
            job_version=job.version,
            definition=job.definition(),
        )
        audit.record(
            AuditAction.RUN_TRIGGERED,
            actor=actor,
            obj=run,
            team_id=job.team_id,
            environment_id=job.environment_id,
            data={"job": job.name, "reason": reason},
        )
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return run


def pause_requires_change(job: Job) -> bool:
    """Does the approval policy of the job's environment and criticality put pausing and resuming
    under change control? (Policies live in ``approvals``, which builds on this app and registers
    the rule in ``jobs.hooks``.)"""
    return hooks.pause_requires_change(job)


def set_paused(job: Job, *, actor: Actor, paused: bool, reason: str, authority: ChangeAuthority | None = None) -> Job:
    """Pause or resume a job's schedule for the reason given.

    Operators do it directly unless the policy puts it under change control (then ChangeRequired,
    409). Change control calls it with ``authority``, the approved pause or resume request of this
    job it applies: that request is then the authorisation, and history and audit name it.
    """
    action = Action.PAUSE if paused else Action.RESUME
    change_request_id = None
    if authority is not None:
        change_request_id = check_authority(authority, operations=(action.value,), tenant_id=job.tenant_id, job=job)
    elif not can(actor, action, job):
        raise AccessDenied(f"You need the operator role for this job to {action.value} it.")
    reason = _require_reason(reason)
    if authority is None and pause_requires_change(job):
        raise ChangeRequired(
            f"{'Pausing' if paused else 'Resuming'} {job.criticality} jobs in {job.environment.slug} needs an approved "
            f"change request under the environment's approval policy: propose a {action.value} "
            f'(change request with action "{action.value}") with your justification.'
        )
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status == JobStatus.DELETED:
            raise JobStateError("This job is deleted.")
        target = JobStatus.PAUSED if paused else JobStatus.ENABLED
        if job.status == target:
            raise JobStateError(f"The job is already {target.label.lower()}.")
        if not paused and job.sunset_on is not None and job.sunset_on <= timezone.now().date():
            # Lifecycle: past its sunset a job stays disabled; a change request must move the date.
            raise JobStateError(f"The job reached its sunset date {job.sunset_on}; propose a new sunset date first.")
        job.status = target
        if not paused:
            # The slot pending at pause time is kept: the scheduler then records
            # the slots missed while paused by the job's catch-up policy.
            job.next_fire_at = job.next_fire_at or compute_next_fire(job)
        verb = "paused" if paused else "resumed"
        via = f" through change request #{change_request_id}" if change_request_id else ""
        save_with_history(job, actor=actor, reason=f"{verb}{via}: {reason}")
        audit.record(
            AuditAction.JOB_PAUSED if paused else AuditAction.JOB_RESUMED,
            actor=actor,
            obj=job,
            data={"reason": reason, "change_request": change_request_id},
        )
    return job


def cancel_run(run: Run, *, actor: Actor, reason: str) -> Run:
    if not can(actor, Action.CANCEL, run):
        raise AccessDenied("You need the operator role for this job to cancel its runs.")
    reason = _require_reason(reason)
    with transaction.atomic():
        updated = Run.objects.filter(
            pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.SCHEDULED, RunStatus.DEFERRED, RunStatus.RUNNING]
        ).update(status=RunStatus.CANCELLED, reason=reason, finished_at=timezone.now())
        if not updated:
            raise JobStateError("Only a queued, deferred or running run can be cancelled.")
        run.refresh_from_db()
        audit.record(
            AuditAction.RUN_CANCELLED,
            actor=actor,
            obj=run,
            team_id=run.job.team_id,
            environment_id=run.job.environment_id,
            data={"reason": reason},
        )
    # A running process notices the cancel at its next status check (see executor).
    return run


# --- operator actions on finished runs (execution) -------------------------------------

RERUNNABLE = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.LOST, RunStatus.SUCCEEDED)
FAILED_STEP = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.LOST)


def refuse_unless_runnable(job: Job) -> None:
    """A rerun executes the job's live definition, so it needs a job that may run now: not deleted,
    not paused (a pause, possibly approved, stops runs) and not past its sunset date (409)."""
    if job.status == JobStatus.DELETED:
        raise JobStateError("This job is deleted and cannot run.")
    if job.status == JobStatus.PAUSED:
        raise JobStateError(
            f"The job {job.name} is paused: resume it before rerunning its runs (a rerun executes the live definition)."
        )
    if job.sunset_on is not None and job.sunset_on <= timezone.now().date():
        raise JobStateError(f"The job {job.name} reached its sunset date {job.sunset_on} and cannot run.")


def _requeue(run: Run, *, actor: Actor, reason: str, statuses: Iterable[str], operation: str) -> bool:
    """Queue a finished run again as its next attempt (same run, same key), on the job's live definition.

    The run's snapshot is replaced by the job's current approved version: executing an older version
    would be a rollback, which only a change request may do. The job row is locked, so the version
    checked here is the one the attempt executes, and a job paused meanwhile does not run."""
    job = Job.objects.select_for_update().get(pk=run.job_id)
    refuse_unless_runnable(job)
    now = timezone.now()
    updated = Run.objects.filter(pk=run.pk, status__in=statuses).update(
        status=RunStatus.QUEUED,
        queued_at=now,
        finished_at=None,
        next_attempt_at=None,
        reason=f"{operation} by {actor}: {reason}",
        trigger_reason=f"{operation} by {actor}: {reason}",
        job_version=job.version,
        definition=job.definition(),
    )
    if updated:
        audit.record(
            AuditAction.RUN_RERUN,
            actor=actor,
            obj=run,
            team_id=job.team_id,
            environment_id=job.environment_id,
            data={
                "reason": reason,
                "operation": operation,
                "previous_status": run.status,
                "previous_job_version": run.job_version,
                "job_version": job.version,
            },
        )
        transaction.on_commit(lambda: enqueue_run(run.pk))
    return bool(updated)


def rerun_run(run: Run, *, actor: Actor, reason: str) -> Run:
    """Run a finished (or lost) run again as a new attempt of the same run, on the job's live
    (approved) definition; refused (409) while the job is paused, deleted or past its sunset."""
    reason = _require_reason(reason)
    if not can(actor, Action.TRIGGER, run):
        raise AccessDenied("You need the operator role for this job to rerun its runs.")
    with transaction.atomic():
        if not _requeue(run, actor=actor, reason=reason, statuses=RERUNNABLE, operation="Rerun"):
            raise JobStateError("Only a finished or lost run can be rerun.")
    run.refresh_from_db()
    return run


@dataclass(frozen=True)
class RerunFailedResult:
    """What ``rerun_failed_steps`` did: the steps queued again, and how many failed steps of the slot
    were left alone because the operator may not act on them (not named: they may be invisible)."""

    requeued: list[Run]
    not_in_scope: int

    @property
    def message(self) -> str:
        steps = "step" if len(self.requeued) == 1 else "steps"
        text = f"{len(self.requeued)} failed {steps} of this workflow queued again."
        if self.not_in_scope == 1:
            text += " 1 other failed step is outside your scope and was left alone."
        elif self.not_in_scope:
            text += f" {self.not_in_scope} other failed steps are outside your scope and were left alone."
        return text


def rerun_failed_steps(run: Run, *, actor: Actor, reason: str) -> RerunFailedResult:
    """Rerun the failed steps of the workflow instance ``run`` belongs to (same tenant, environment
    and slot) that ``actor`` may trigger; steps that were skipped because of them are re-evaluated
    when they finish. Failed steps of jobs outside the actor's scope are left alone and only counted.
    Each step runs its job's live definition; a paused (or deleted) job refuses the whole action."""
    reason = _require_reason(reason)
    if not can(actor, Action.TRIGGER, run):
        raise AccessDenied("You need the operator role for this job to rerun its runs.")
    with transaction.atomic():
        failed = (
            Run.objects.select_related("job")
            .filter(
                tenant_id=run.tenant_id,
                job__environment_id=run.job.environment_id,
                scheduled_for=run.scheduled_for,
                # Partition runs are rerun by their slot's run, which fans out again.
                partition="",
                status__in=FAILED_STEP,
            )
            .exclude(job__status=JobStatus.DELETED)
        )
        in_scope = restrict(failed, actor, Action.TRIGGER)
        steps = list(in_scope.order_by("id"))
        not_in_scope = failed.count() - len(steps)
        # Check every job first: one paused step refuses the action before anything is queued.
        for job in Job.objects.select_for_update().filter(pk__in={s.job_id for s in steps}).order_by("pk"):
            refuse_unless_runnable(job)
        requeued = [
            step
            for step in steps
            if _requeue(step, actor=actor, reason=reason, statuses=FAILED_STEP, operation="Rerun from the failed step")
        ]
        if not requeued:
            detail = f" ({not_in_scope} failed steps are outside your scope)" if not_in_scope else ""
            raise JobStateError(f"No step of this workflow run that you may rerun failed{detail}.")
    return RerunFailedResult(requeued=requeued, not_in_scope=not_in_scope)


def mark_run_succeeded(run: Run, *, actor: Actor, reason: str) -> Run:
    """Record that an operator settled a failed or lost run by hand; downstream steps may proceed."""
    reason = _require_reason(reason)
    if not can(actor, Action.TRIGGER, run):
        raise AccessDenied("You need the operator role for this job to settle its runs.")
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status__in=FAILED_STEP + (RunStatus.SKIPPED,)).update(
            status=RunStatus.SUCCEEDED,
            finished_at=timezone.now(),
            reason=f"Marked succeeded by {actor}: {reason}",
        )
        if not updated:
            raise JobStateError("Only a failed, timed-out, cancelled, lost or skipped run can be marked succeeded.")
        audit.record(
            AuditAction.RUN_MARKED_SUCCEEDED,
            actor=actor,
            obj=run,
            team_id=run.job.team_id,
            environment_id=run.job.environment_id,
            data={"reason": reason, "previous_status": run.status},
        )
        from .workflows import on_run_finished

        transaction.on_commit(lambda: on_run_finished(run.pk))
    run.refresh_from_db()
    return run


# --- end operator actions ---------------------------------------------------------------
