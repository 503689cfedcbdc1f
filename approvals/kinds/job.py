"""Job changes: a job's definition (create, update, delete) and its paused state (pause, resume)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from governance.access import Action, can, can_in
from governance.models import Environment, Team
from governance.services import AccessDenied
from jobs import services as job_services
from jobs.definitions import clean_definition, diff
from jobs.models import DEFINITION_FIELDS, Job, JobStatus

from .. import policies
from ..errors import ChangeError, check_apply_after, require_justification
from ..models import OPEN_STATUSES, STATE_ACTIONS, ChangeAction, ChangeRequest
from .base import Actor, Definition, FlatDiff


def _job(change: ChangeRequest) -> Job:
    assert change.job is not None
    return change.job


def _live_job(change: ChangeRequest, *, lock: bool = False) -> Job:
    """The job as it is now (re-read: the request's own copy may be older)."""
    assert change.job_id is not None
    jobs = Job.objects.select_for_update() if lock else Job.objects.all()
    return jobs.get(pk=change.job_id)


def _live_undeleted_job(change: ChangeRequest) -> Job:
    """The live job; ChangeError (409, ``deleted``) when it was deleted after the request was made."""
    live = _live_job(change)
    if live.status == JobStatus.DELETED:
        raise ChangeError(
            "The job was deleted after this request was made; it can no longer apply.",
            conflict=True,
            code="deleted",
        )
    return live


def _place(change: ChangeRequest) -> tuple[Team, Environment]:
    assert change.team is not None and change.environment is not None
    return change.team, change.environment


class JobDefinitionKind:
    """Create, update or delete a job: the proposal is a complete job definition."""

    label = "job"

    def new_change(
        self,
        *,
        actor: Actor,
        action: ChangeAction,
        justification: str,
        definition: Definition | None,
        job: Job | None,
        team: Team | None,
        environment: Environment | None,
        apply_after: datetime | None,
        emergency: bool,
    ) -> ChangeRequest:
        """Validate a proposal and return it as an unsaved request (ValidationError, AccessDenied)."""
        if action == ChangeAction.POLICY:
            raise ValidationError({"action": ["Use propose_policy_change for approval policies."]})
        if action in STATE_ACTIONS:
            raise ValidationError({"action": ["Use propose_pause_change to pause or resume a job."]})
        errors: dict[str, list[str]] = {}
        require_justification(justification, errors)
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
        check_apply_after(apply_after, errors)
        if errors:
            raise ValidationError(errors)
        assert team is not None and environment is not None
        change = ChangeRequest(
            tenant_id=team.tenant_id,
            team=team,
            environment=environment,
            job=job,
            action=action,
            base_version=job.version if job else None,
            base_definition=job.definition() if job else None,
            emergency=bool(emergency),
            apply_after=apply_after,
        )
        refusal = self.proposal_refusal(actor, change)
        if refusal:
            raise AccessDenied(refusal)
        if action != ChangeAction.DELETE:
            change.proposed = clean_definition(
                definition or {}, tenant=team.tenant, team=team, environment=environment, job=job
            )
            if job is not None and not diff(job.definition(), change.proposed):
                raise ValidationError({"definition": ["The proposed definition is identical to the live one."]})
        return change

    def proposal_refusal(self, user: Actor, change: ChangeRequest) -> str | None:
        if can_in(user, Action.PROPOSE, change.tenant_id, change.team_id, change.environment_id):
            return None
        return "You need the author role for this team and environment to propose changes."

    def rule(self, change: ChangeRequest) -> policies.Rule:
        # A change that lowers a job's criticality is still reviewed under the rule of the old one.
        criticalities = set()
        if change.action != ChangeAction.DELETE and change.proposed.get("criticality"):
            criticalities.add(change.proposed["criticality"])
        if (change.base_definition or {}).get("criticality"):
            criticalities.add((change.base_definition or {})["criticality"])
        assert change.environment is not None
        return policies.rule_for(change.environment, sorted(criticalities))

    def clean(self, change: ChangeRequest, definition: Definition) -> Definition:
        job = _live_job(change) if change.job_id else None
        team, environment = _place(change)
        cleaned = clean_definition(definition, tenant=change.tenant, team=team, environment=environment, job=job)
        if job is not None and not diff(job.definition(), cleaned):
            raise ValidationError({"definition": ["The proposed definition is identical to the live one."]})
        return cleaned

    def on_edit(self, change: ChangeRequest) -> None:
        return None

    def live_version(self, change: ChangeRequest) -> Definition | None:
        if change.job_id is None:
            return None
        job = _live_job(change)
        return None if job.status == JobStatus.DELETED else job.definition()

    def check_not_stale(self, change: ChangeRequest) -> None:
        if change.action == ChangeAction.CREATE:
            return
        live = _live_undeleted_job(change)
        if live.version != change.base_version:
            raise ChangeError(
                f"The job changed after this request was made (based on v{change.base_version}, live is "
                f"v{live.version}); rebase the request before it can be reviewed.",
                conflict=True,
                code="stale",
            )

    def diff(self, change: ChangeRequest) -> list[dict[str, Any]]:
        return diff(change.base_definition, {} if change.action == ChangeAction.DELETE else change.proposed)

    def rebase(self, change: ChangeRequest) -> list[str]:
        live = _live_job(change, lock=True)
        if live.status == JobStatus.DELETED:
            raise ChangeError(
                "The job was deleted; a request for it cannot be rebased. Withdraw it.",
                conflict=True,
                code="deleted",
            )
        if live.version == change.base_version:
            raise ChangeError(
                f"This request is already based on the live version v{live.version}.",
                conflict=True,
                code="current",
            )
        conflicts: list[str] = []
        old_base = change.base_definition or {}
        live_definition = live.definition()
        if change.action != ChangeAction.DELETE:
            merged = dict(live_definition)
            for field in DEFINITION_FIELDS:
                if change.proposed.get(field) != old_base.get(field):
                    if live_definition.get(field) != old_base.get(field) and live_definition.get(
                        field
                    ) != change.proposed.get(field):
                        conflicts.append(field)
                    merged[field] = change.proposed.get(field)
            team, environment = _place(change)
            proposed = clean_definition(merged, tenant=change.tenant, team=team, environment=environment, job=live)
            if not diff(live_definition, proposed):
                raise ChangeError(
                    "After rebasing nothing is left to change: the live job already has this definition. "
                    "Withdraw the request.",
                    conflict=True,
                    code="empty",
                )
            change.proposed = proposed
        change.base_version = live.version
        change.base_definition = live_definition
        return conflicts

    def apply(self, change: ChangeRequest, *, actor: Actor, reason: str) -> int | None:
        if change.action == ChangeAction.DELETE:
            job = job_services.delete_job(actor=actor, job=_job(change), authority=change, change_reason=reason)
        else:
            team, environment = _place(change)
            # Validate again against the live state: names may have been taken meanwhile.
            definition = clean_definition(
                change.proposed, tenant=change.tenant, team=team, environment=environment, job=change.job
            )
            job = job_services.apply_definition(
                actor=actor,
                team=team,
                environment=environment,
                definition=definition,
                job=change.job,
                authority=change,
                change_reason=reason,
            )
        change.job = job
        return job.version

    def applies_before_review(self, change: ChangeRequest) -> bool:
        return False


def _state(job: Job) -> Definition:
    return {"name": job.name, "criticality": job.criticality, "status": job.status}


class JobStateKind(FlatDiff):
    """Pause or resume a job whose policy puts that under change control. The proposal is the job's
    name, criticality and new status; an emergency pause applies before review (post-review)."""

    label = "job state"

    def new_change(
        self,
        job: Job,
        *,
        actor: Actor,
        paused: bool,
        justification: str,
        emergency: bool,
        apply_after: datetime | None,
    ) -> ChangeRequest:
        """Validate a proposal and return it as an unsaved request; call inside a transaction (the job
        is locked, so two proposals for one job do not both pass the pending check)."""
        action = ChangeAction.PAUSE if paused else ChangeAction.RESUME
        errors: dict[str, list[str]] = {}
        require_justification(
            justification,
            errors,
            f"A justification is required: say why the job should be {'paused' if paused else 'resumed'}.",
        )
        if emergency and not paused:
            errors["emergency"] = ["Only a pause can be an emergency; resuming waits for its approvals."]
        if emergency and apply_after is not None:
            errors["apply_after"] = ["An emergency pause applies at once; it takes no apply time."]
        check_apply_after(apply_after, errors)
        if errors:
            raise ValidationError(errors)
        refusal = self.proposal_refusal(actor, ChangeRequest(job=job, action=action))
        if refusal:
            raise AccessDenied(refusal)
        job = Job.objects.select_for_update(of=("self",)).select_related("team", "environment").get(pk=job.pk)
        expected = JobStatus.ENABLED if paused else JobStatus.PAUSED
        if job.status != expected:
            raise ChangeError(
                f"The job is {job.get_status_display().lower()}; "
                + ("only an enabled job can be paused." if paused else "only a paused job can be resumed."),
                conflict=True,
                code=f"not_{expected}",
            )
        pending = (
            ChangeRequest.objects.filter(job=job, action__in=STATE_ACTIONS, status__in=OPEN_STATUSES)
            .values_list("pk", flat=True)
            .first()
        )
        if pending is not None:
            raise ChangeError(
                f"CR-{pending} already proposes to pause or resume this job; review or withdraw it first.",
                conflict=True,
                code="pending",
            )
        return ChangeRequest(
            tenant_id=job.tenant_id,
            team=job.team,
            environment=job.environment,
            job=job,
            action=action,
            # Name and criticality ride along so queues and pages rank and label it like other job changes.
            proposed={**_state(job), "status": JobStatus.PAUSED if paused else JobStatus.ENABLED},
            base_version=job.version,
            base_definition=_state(job),
            emergency=bool(emergency),
            apply_after=apply_after,
        )

    def proposal_refusal(self, user: Actor, change: ChangeRequest) -> str | None:
        paused = change.action == ChangeAction.PAUSE
        if can(user, Action.PAUSE if paused else Action.RESUME, _job(change)):
            return None
        return f"You need the operator role for this job to propose to {'pause' if paused else 'resume'} it."

    def rule(self, change: ChangeRequest) -> policies.Rule:
        # Reviewed like an update of the job as it is now.
        assert change.environment is not None
        return policies.rule_for(change.environment, [_job(change).criticality])

    def clean(self, change: ChangeRequest, definition: Definition) -> Definition:
        raise ValidationError({"definition": [f"A {change.action} request has no definition to edit."]})

    def live_version(self, change: ChangeRequest) -> Definition | None:
        job = _live_job(change)
        return None if job.status == JobStatus.DELETED else _state(job)

    def check_not_stale(self, change: ChangeRequest) -> None:
        live = _live_undeleted_job(change)
        # Only the job's state matters: an update of its definition meanwhile does not stale a pause.
        if live.status != (change.base_definition or {}).get("status"):
            raise ChangeError(
                f"The job is {live.get_status_display().lower()} now; this request to "
                f"{change.action} it can no longer apply. Withdraw it.",
                conflict=True,
                code="state_changed",
            )

    def rebase(self, change: ChangeRequest) -> list[str]:
        raise ChangeError(
            f"A {change.action} request does not depend on the job's version; there is nothing to rebase.",
            conflict=True,
            code="no_base",
        )

    def apply(self, change: ChangeRequest, *, actor: Actor, reason: str) -> int | None:
        # The approved request is the authorisation; history and audit name it.
        job_services.set_paused(
            _job(change),
            actor=actor,
            paused=change.action == ChangeAction.PAUSE,
            reason=change.justification,
            authority=change,
        )
        return None

    def applies_before_review(self, change: ChangeRequest) -> bool:
        """An emergency pause stops the job at once; its approvals come after the fact (post-review)."""
        return change.action == ChangeAction.PAUSE and change.emergency


JOB = JobDefinitionKind()
JOB_STATE = JobStateKind()
