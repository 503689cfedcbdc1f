"""Approval policy changes: a new rule for one criticality of an environment (or its default rule)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from governance import audit
from governance.access import Action, can_over
from governance.history import save_with_history
from governance.models import AuditAction, Environment
from governance.services import AccessDenied

from .. import policies
from ..errors import ChangeError, require_justification
from ..models import ApprovalPolicy, ChangeAction, ChangeRequest, TargetKind
from .base import Actor, Definition, FlatDiff


def _environment(change: ChangeRequest) -> Environment:
    assert change.environment is not None
    return change.environment


class PolicyKind(FlatDiff):
    """Only tenant admins propose; approvers of the whole environment review (policies.WHOLE_SCOPE_KINDS),
    and at least one approval is always needed, so nobody weakens review alone."""

    label = "approval policy"

    def new_change(self, *, actor: Actor, environment: Environment, rule: object, justification: str) -> ChangeRequest:
        errors: dict[str, list[str]] = {}
        require_justification(justification, errors)
        try:
            cleaned = policies.clean_rule(environment, rule)
        except ValidationError as exc:
            errors.update(exc.message_dict)
            cleaned = {}
        if errors:
            raise ValidationError(errors)
        change = ChangeRequest(
            tenant_id=environment.tenant_id,
            team=None,
            environment=environment,
            target_kind=TargetKind.POLICY,
            action=ChangeAction.POLICY,
            proposed=cleaned,
        )
        refusal = self.proposal_refusal(actor, change)
        if refusal:
            raise AccessDenied(refusal)
        change.base_definition = policies.current_rule(environment, cleaned["criticality"])
        if change.base_definition == cleaned:
            raise ValidationError({"definition": ["The proposed rule is identical to the live one."]})
        return change

    def proposal_refusal(self, user: Actor, change: ChangeRequest) -> str | None:
        if can_over(user, Action.ADMINISTER, change.tenant_id, None, change.environment_id):
            return None
        return "Only a tenant admin may propose approval policy changes."

    def rule(self, change: ChangeRequest) -> policies.Rule:
        return policies.rule_for_policy_change(_environment(change))

    def clean(self, change: ChangeRequest, definition: Definition) -> Definition:
        cleaned = policies.clean_rule(_environment(change), definition)
        if policies.current_rule(_environment(change), cleaned["criticality"]) == cleaned:
            raise ValidationError({"definition": ["The proposed rule is identical to the live one."]})
        return cleaned

    def on_edit(self, change: ChangeRequest) -> None:
        # The edit may name another criticality: the request is then based on that rule.
        change.base_definition = self.live_version(change)

    def live_version(self, change: ChangeRequest) -> Definition | None:
        return policies.current_rule(_environment(change), (change.proposed or {}).get("criticality", ""))

    def check_not_stale(self, change: ChangeRequest) -> None:
        if self.live_version(change) != change.base_definition:
            raise ChangeError(
                "The approval policy changed after this request was made; rebase the request.",
                conflict=True,
                code="stale",
            )

    def rebase(self, change: ChangeRequest) -> list[str]:
        live_rule = self.live_version(change)
        if live_rule == change.base_definition:
            raise ChangeError("This request is already based on the live policy.", conflict=True, code="current")
        change.base_definition = live_rule
        return []

    def apply(self, change: ChangeRequest, *, actor: Actor, reason: str) -> int | None:
        rule = policies.clean_policy(change.proposed)
        policy = ApprovalPolicy.objects.filter(environment=change.environment, criticality=rule["criticality"]).first()
        if policy is None:
            policy = ApprovalPolicy(tenant_id=change.tenant_id, environment=change.environment, **rule)
        else:
            policy.required_approvals = rule["required_approvals"]
            policy.separation_of_duties = rule["separation_of_duties"]
            policy.pause_requires_change = rule["pause_requires_change"]
        policy.change_request_id = change.pk
        save_with_history(policy, actor=actor, reason=reason)
        if rule["criticality"] == "":
            # The default rule is the environment's own setting: keep `governed` truthful.
            environment = Environment.objects.select_for_update().get(pk=_environment(change).pk)
            environment.required_approvals = rule["required_approvals"]
            save_with_history(environment, actor=actor, reason=reason)
            change.environment = environment
        audit.record(
            AuditAction.POLICY_CHANGED,
            actor=actor,
            obj=policy,
            data={"change_request": change.pk, "before": change.base_definition, "after": rule},
        )
        return None


POLICY = PolicyKind()
