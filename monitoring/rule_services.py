"""Writes of alert rules: only approved change requests call these (``approvals.config_changes``)."""

from __future__ import annotations

from django.db import transaction

from governance import audit
from governance.actors import Actor
from governance.history import delete_with_history, save_with_history
from governance.models import AuditAction, Environment, Team, Tenant
from jobs.models import Job, JobStatus

from .models import AlertRule, RuleScope, RuleState
from .rule_params import COMMON_FIELDS, KIND_PARAMS


def apply_alert_rule(
    *,
    actor: Actor,
    tenant: Tenant,
    environment: Environment | None,
    definition: dict,
    rule: AlertRule | None = None,
    change_request_id: int | None = None,
    change_reason: str | None = None,
) -> AlertRule:
    """Make a validated rule definition (``rule_params.clean_rule``) live; create when ``rule`` is None."""
    with transaction.atomic():
        if rule is None:
            rule = AlertRule(tenant=tenant, environment=environment)
            operation = "create"
        else:
            rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
            operation = "update"
        old_kind = rule.kind
        rule.name = definition["name"]
        rule.kind = definition["kind"]
        rule.scope = definition["scope"]
        rule.severity = definition["severity"]
        rule.for_seconds = definition["for_seconds"]
        rule.enabled = definition["enabled"]
        rule.params = {p: definition[p] for p in KIND_PARAMS[rule.kind] if definition.get(p) is not None}
        rule.job = rule.team = None
        rule.tag = ""
        if rule.scope == RuleScope.JOB:
            # Access follows the job: its team and environment are the rule's.
            job = Job.objects.exclude(status=JobStatus.DELETED).get(
                tenant=tenant, environment=environment, name=definition["job"]
            )
            rule.job, rule.team_id, rule.environment_id = job, job.team_id, job.environment_id
        elif rule.scope == RuleScope.TEAM:
            rule.team = Team.objects.get(tenant=tenant, slug=definition["team"])
        else:
            rule.tag = definition["tag"]
        rule.full_clean()
        rule.change_request_id = change_request_id
        save_with_history(rule, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        if operation == "update":
            # A changed rule starts its debounce again; an open incident stays until its condition clears.
            RuleState.objects.filter(tenant=tenant, fingerprint__startswith=f"rule:{rule.pk}:", fired_at=None).delete()
            if old_kind != rule.kind:
                RuleState.objects.filter(tenant=tenant, fingerprint__startswith=f"rule:{rule.pk}:").delete()
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=rule,
            data={
                "kind": "alert_rule",
                "operation": operation,
                "name": rule.name,
                "rule": {f: definition.get(f) for f in COMMON_FIELDS},
                "change_request": change_request_id,
            },
        )
    return rule


def delete_alert_rule(
    *, actor: Actor, rule: AlertRule, change_request_id: int | None = None, change_reason: str | None = None
) -> None:
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
        rule.change_request_id = change_request_id
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=rule,
            data={"kind": "alert_rule", "operation": "delete", "name": rule.name, "change_request": change_request_id},
        )
        RuleState.objects.filter(tenant_id=rule.tenant_id, fingerprint__startswith=f"rule:{rule.pk}:").delete()
        delete_with_history(rule, actor=actor, reason=change_reason or f"change request #{change_request_id}")
