"""Change control: propose, submit, approve, reject, withdraw and apply.

Every path that changes a job (API, UI, admin, commands) goes through these
functions. Each runs in one transaction that also writes the audit events.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import audit
from governance.access import Action, can, can_in
from governance.models import AuditAction, Environment, Team
from governance.services import AccessDenied
from jobs import services as job_services
from jobs.definitions import clean_definition, diff
from jobs.models import Job, JobStatus

from .models import ChangeAction, ChangeRequest, ChangeStatus, Review, ReviewDecision


class ChangeError(Exception):
    """A change-control rule refused the operation; nothing was changed."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


def propose_change(
    *,
    actor,
    action: ChangeAction | str,
    justification: str,
    definition: dict | None = None,
    job: Job | None = None,
    team: Team | None = None,
    environment: Environment | None = None,
    ticket: str = "",
    submit: bool = True,
) -> ChangeRequest:
    """Create a change request (and submit it unless ``submit`` is False).

    Raises ValidationError for bad fields, AccessDenied when the actor may not
    propose for that team and environment, ChangeError for workflow rules.
    """
    action = ChangeAction(action)
    errors: dict[str, list[str]] = {}
    if not (justification or "").strip():
        errors["justification"] = ["A justification is required: say why this change is needed."]
    if action == ChangeAction.CREATE:
        if job is not None:
            errors["job"] = ["A create request must not name an existing job."]
        if team is None:
            errors["team"] = ["Choose the owning team."]
        if environment is None:
            errors["environment"] = ["Choose the environment."]
        if team is not None and environment is not None and team.tenant_id != environment.tenant_id:
            errors["environment"] = ["The environment belongs to another tenant than the team."]
    else:
        if job is None:
            errors["job"] = ["Name the job to change."]
        elif job.status == JobStatus.DELETED:
            errors["job"] = ["This job is deleted."]
        else:
            team, environment = job.team, job.environment
    if errors:
        raise ValidationError(errors)
    assert team is not None and environment is not None
    if not can_in(actor, Action.PROPOSE, team.tenant_id, team.pk, environment.pk):
        raise AccessDenied("You need the author role for this team and environment to propose changes.")

    proposed: dict = {}
    if action != ChangeAction.DELETE:
        proposed = clean_definition(definition or {}, tenant=team.tenant, team=team, environment=environment, job=job)
        if job is not None and not diff(job.definition(), proposed):
            raise ValidationError({"definition": ["The proposed definition is identical to the live one."]})

    with transaction.atomic():
        change = ChangeRequest.objects.create(
            tenant_id=team.tenant_id,
            team=team,
            environment=environment,
            job=job,
            action=action,
            proposed=proposed,
            base_version=job.version if job else None,
            base_definition=job.definition() if job else None,
            author=actor,
            justification=justification.strip(),
            ticket=(ticket or "").strip(),
            status=ChangeStatus.DRAFT,
        )
        audit.record(AuditAction.CHANGE_CREATED, actor=actor, obj=change, data={"action": action.value})
        if submit:
            change = submit_change(change, actor=actor)
    return change


def _locked(change: ChangeRequest) -> ChangeRequest:
    return (
        ChangeRequest.objects.select_for_update(of=("self",))
        .select_related("environment", "job", "team", "tenant")
        .get(pk=change.pk)
    )


def submit_change(change: ChangeRequest, *, actor) -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        if change.author_id != actor.pk:
            raise AccessDenied("Only the author can submit this change request.")
        if change.status != ChangeStatus.DRAFT:
            raise ChangeError(
                f"Only a draft can be submitted; this request is {change.get_status_display().lower()}.", conflict=True
            )
        change.status = ChangeStatus.SUBMITTED
        change.submitted_at = timezone.now()
        change.required_approvals = change.environment.required_approvals
        change.save()
        audit.record(
            AuditAction.CHANGE_SUBMITTED,
            actor=actor,
            obj=change,
            data={"required_approvals": change.required_approvals},
        )
        if change.required_approvals == 0:
            # Ungoverned environment: applies at once, still recorded as a change request.
            _apply(change, actor=actor)
    return change


def _check_not_stale(change: ChangeRequest) -> None:
    if change.action == ChangeAction.CREATE:
        return
    live = Job.objects.get(pk=change.job_id)
    if live.status == JobStatus.DELETED:
        raise ChangeError("The job was deleted after this request was made; it can no longer apply.", conflict=True)
    if live.version != change.base_version:
        raise ChangeError(
            f"The job changed after this request was made (based on v{change.base_version}, live is v{live.version}); "
            "rebase the request before it can be reviewed.",
            conflict=True,
        )


def approve_change(change: ChangeRequest, *, actor, comment: str = "") -> ChangeRequest:
    return _review(change, actor=actor, decision=ReviewDecision.APPROVE, comment=comment)


def reject_change(change: ChangeRequest, *, actor, comment: str = "") -> ChangeRequest:
    return _review(change, actor=actor, decision=ReviewDecision.REJECT, comment=comment)


def _review(change: ChangeRequest, *, actor, decision: ReviewDecision, comment: str) -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        if change.author_id == actor.pk:
            raise AccessDenied("Nobody reviews their own change, administrators included.")
        if not can(actor, Action.REVIEW, change):
            raise AccessDenied("You need the approver role for this team and environment to review changes.")
        if change.status != ChangeStatus.SUBMITTED:
            raise ChangeError(
                f"Only a submitted request can be reviewed; this one is {change.get_status_display().lower()}.",
                conflict=True,
            )
        if Review.objects.filter(change_request=change, revision=change.revision, reviewer=actor).exists():
            raise ChangeError("You have already reviewed this revision.", conflict=True)
        if decision == ReviewDecision.APPROVE:
            _check_not_stale(change)
        Review.objects.create(
            change_request=change,
            revision=change.revision,
            reviewer=actor,
            change_author_id=change.author_id,
            decision=decision,
            comment=(comment or "").strip(),
        )
        now = timezone.now()
        if decision == ReviewDecision.REJECT:
            change.status = ChangeStatus.REJECTED
            change.decided_at = now
            change.save()
            audit.record(AuditAction.CHANGE_REJECTED, actor=actor, obj=change, data={"comment": comment})
            return change
        audit.record(AuditAction.CHANGE_APPROVED, actor=actor, obj=change, data={"comment": comment})
        approvals = change.reviews.filter(revision=change.revision, decision=ReviewDecision.APPROVE).count()
        if approvals >= change.required_approvals:
            change.status = ChangeStatus.APPROVED
            change.decided_at = now
            change.save()
            _apply(change, actor=actor)
    return change


def withdraw_change(change: ChangeRequest, *, actor, reason: str = "") -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        if change.author_id != actor.pk:
            raise AccessDenied("Only the author can withdraw this change request.")
        if change.status not in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED):
            raise ChangeError(
                f"Only a draft or submitted request can be withdrawn; this one is {change.get_status_display().lower()}.",
                conflict=True,
            )
        change.status = ChangeStatus.WITHDRAWN
        change.decided_at = timezone.now()
        change.save()
        audit.record(AuditAction.CHANGE_WITHDRAWN, actor=actor, obj=change, data={"reason": reason})
    return change


def _apply(change: ChangeRequest, *, actor) -> None:
    """Make the change live in one savepoint; on failure nothing of it is applied and the request
    is marked failed with the reason."""
    try:
        with transaction.atomic():
            _check_not_stale(change)
            if change.action == ChangeAction.DELETE:
                job = job_services.delete_job(actor=actor, job=change.job, change_request_id=change.pk)
            else:
                # Validate again against the live state: names may have been taken meanwhile.
                definition = clean_definition(
                    change.proposed,
                    tenant=change.tenant,
                    team=change.team,
                    environment=change.environment,
                    job=change.job,
                )
                job = job_services.apply_definition(
                    actor=actor,
                    team=change.team,
                    environment=change.environment,
                    definition=definition,
                    job=change.job,
                    change_request_id=change.pk,
                )
            change.job = job
            change.status = ChangeStatus.APPLIED
            change.applied_at = timezone.now()
            change.applied_version = job.version
            change.save()
            audit.record(
                AuditAction.CHANGE_APPLIED, actor=actor, obj=change, data={"job": job.pk, "version": job.version}
            )
    except (ChangeError, ValidationError, IntegrityError) as exc:
        reason = exc.message if isinstance(exc, ChangeError) else _describe(exc)
        change.status = ChangeStatus.FAILED
        change.failure_reason = reason
        change.save()
        audit.record(AuditAction.CHANGE_FAILED, actor=actor, obj=change, data={"reason": reason})


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "message_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return "The change conflicts with the live data (for example a job name that was taken meanwhile)."
