"""Recovery rules as governed configuration: validation of a proposal, the definition change control
compares, and the services that make an approved request live (``approvals.config_changes``, kind
``recovery_rule``).

A definition names what it refers to, never by id:

    {"name": "restart-on-lock", "job": "payments.ledger.reconcile", "team": "",
     "exit_codes": [3], "output_pattern": "lock held", "http_statuses": [],
     "action": "retry", "retry_attempts": 3, "retry_delay_seconds": 30, "retry_factor": 2.0,
     "remediation_job": "", "severity": "high", "max_actions": 3, "window_minutes": 60}

The author is assumed hostile: the job, the team and the remediation job must be live objects of
the rule's own tenant, and the job and the remediation job of the rule's own environment; the
pattern must compile in RE2 (linear time). The remediation job runs its applied definition only.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance import audit
from governance.actors import Actor
from governance.history import delete_with_history, save_with_history
from governance.models import AuditAction, Environment, Team, Tenant
from governance.patterns import pattern_problem
from jobs.models import Job, JobStatus

from .models import RECOVERY_RULE_FIELDS, RecoveryActionKind, RecoveryRule, Severity

RULE_FIELDS = RECOVERY_RULE_FIELDS
DEFAULTS: dict[str, Any] = {
    "job": "",
    "team": "",
    "exit_codes": [],
    "output_pattern": "",
    "http_statuses": [],
    "retry_attempts": 3,
    "retry_delay_seconds": 30,
    "retry_factor": 2.0,
    "remediation_job": "",
    "severity": Severity.HIGH.value,
    "max_actions": 3,
    "window_minutes": 60,
}
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
MAX_RETRY_ATTEMPTS = 10
MAX_DELAY_SECONDS = 24 * 3600
MAX_OUTPUT_PATTERN = 1000


def _int(value: Any, field: str, low: int, high: int, errors: dict) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[field] = [f"A whole number from {low} to {high}."]
        return None
    return value


def _codes(value: Any, field: str, low: int, high: int, errors: dict) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        errors[field] = ["A list of whole numbers, e.g. [3, 75]."]
        return []
    if any(not low <= v <= high for v in value) or len(value) > 50:
        errors[field] = [f"At most 50 numbers, each from {low} to {high}."]
        return []
    return sorted(set(value))


def _live_job(tenant: Tenant, environment: Environment, name: Any, field: str, errors: dict) -> Job | None:
    if not isinstance(name, str) or not name:
        errors[field] = ["Name a job."]
        return None
    job = (
        Job.objects.filter(tenant_id=tenant.pk, environment_id=environment.pk, name=name)
        .exclude(status=JobStatus.DELETED)
        .first()
    )
    if job is None:
        errors[field] = [
            f"No live job {name!r} in {tenant.slug}/{environment.slug}: a recovery rule names an approved job "
            "of its own environment."
        ]
    return job


def clean_rule(data: Any, *, tenant: Tenant, environment: Environment | None, rule: RecoveryRule | None) -> dict:
    """The validated definition, or ValidationError({field: [...]}) naming every bad field."""
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["A recovery rule is an object of fields."]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        errors["definition"] = [f"Unknown field(s): {', '.join(unknown)}."]
    if environment is None:
        raise ValidationError({"environment": ["A recovery rule belongs to one environment: choose it."]})
    if environment.tenant_id != tenant.pk:
        errors["environment"] = ["The environment belongs to another tenant."]
    base = definition_of(rule) if rule is not None else dict(DEFAULTS)
    merged = {**base, **{k: v for k, v in data.items() if k in RULE_FIELDS}}
    cleaned: dict[str, Any] = {}

    name = merged.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        errors["name"] = ["A lower-case slug such as 'restart-on-lock' (letters, digits, dashes)."]
    elif (
        RecoveryRule.objects.filter(environment_id=environment.pk, name=name)
        .exclude(pk=rule.pk if rule else 0)
        .exists()
    ):
        errors["name"] = [f"A recovery rule named {name!r} already exists in {environment.slug}."]
    cleaned["name"] = name

    job_name, team_slug = merged.get("job") or "", merged.get("team") or ""
    if bool(job_name) == bool(team_slug):
        errors["job"] = ["Name either one job or one team (not both) the rule applies to."]
    elif job_name:
        _live_job(tenant, environment, job_name, "job", errors)
    elif not isinstance(team_slug, str) or not Team.objects.filter(tenant_id=tenant.pk, slug=team_slug).exists():
        errors["team"] = [f"No team {team_slug!r} in {tenant.slug}."]
    cleaned["job"], cleaned["team"] = job_name, team_slug

    cleaned["exit_codes"] = _codes(merged.get("exit_codes"), "exit_codes", -255, 255, errors)
    cleaned["http_statuses"] = _codes(merged.get("http_statuses"), "http_statuses", 100, 599, errors)
    pattern = merged.get("output_pattern") or ""
    if not isinstance(pattern, str):
        errors["output_pattern"] = ["A regular expression (text)."]
    else:
        problem = pattern_problem(pattern) if pattern else None
        if problem:
            errors["output_pattern"] = [problem]
    cleaned["output_pattern"] = pattern
    if not (cleaned["exit_codes"] or cleaned["http_statuses"] or pattern) and not errors.keys() & {
        "exit_codes",
        "http_statuses",
        "output_pattern",
    }:
        errors["exit_codes"] = [
            "Name the failures the rule matches: exit codes, an output pattern or HTTP statuses (any one or more)."
        ]

    action = merged.get("action")
    if action not in RecoveryActionKind.values:
        errors["action"] = [f"One of {', '.join(RecoveryActionKind.values)}."]
    cleaned["action"] = action
    cleaned["retry_attempts"] = _int(merged.get("retry_attempts"), "retry_attempts", 1, MAX_RETRY_ATTEMPTS, errors)
    cleaned["retry_delay_seconds"] = _int(
        merged.get("retry_delay_seconds"), "retry_delay_seconds", 0, MAX_DELAY_SECONDS, errors
    )
    factor = merged.get("retry_factor")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 10:
        errors["retry_factor"] = ["A number from 1 to 10 (1: the same delay each time)."]
    else:
        factor = float(factor)
    cleaned["retry_factor"] = factor

    remediation = merged.get("remediation_job") or ""
    if action == RecoveryActionKind.REMEDIATE:
        job = _live_job(tenant, environment, remediation, "remediation_job", errors)
        if job is not None and job.name == job_name:
            errors["remediation_job"] = ["A job cannot be its own remediation: use the retry action."]
    elif remediation:
        errors["remediation_job"] = ["Only the remediate action runs a remediation job."]
    cleaned["remediation_job"] = remediation

    severity = merged.get("severity")
    if severity not in Severity.values:
        errors["severity"] = [f"One of {', '.join(Severity.values)}."]
    cleaned["severity"] = severity
    cleaned["max_actions"] = _int(merged.get("max_actions"), "max_actions", 1, 100, errors)
    cleaned["window_minutes"] = _int(merged.get("window_minutes"), "window_minutes", 1, 7 * 24 * 60, errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def definition_of(rule: RecoveryRule) -> dict:
    return {
        "name": rule.name,
        "job": rule.job.name if rule.job_id and rule.job else "",
        "team": rule.team.slug if rule.team_id and rule.team else "",
        "exit_codes": list(rule.exit_codes),
        "output_pattern": rule.output_pattern,
        "http_statuses": list(rule.http_statuses),
        "action": rule.action,
        "retry_attempts": rule.retry_attempts,
        "retry_delay_seconds": rule.retry_delay_seconds,
        "retry_factor": rule.retry_factor,
        "remediation_job": rule.remediation_job.name if rule.remediation_job_id and rule.remediation_job else "",
        "severity": rule.severity,
        "max_actions": rule.max_actions,
        "window_minutes": rule.window_minutes,
    }


def apply_rule(
    *,
    actor: Actor,
    tenant: Tenant,
    environment: Environment,
    definition: dict,
    rule: RecoveryRule | None = None,
    change_request_id: int | None = None,
    change_reason: str | None = None,
) -> RecoveryRule:
    """Make a validated definition live (create when ``rule`` is None). Change control only; the
    caller validated ``definition`` against the live state in the same transaction."""
    with transaction.atomic():
        if rule is None:
            rule = RecoveryRule(tenant=tenant, environment=environment)
            operation = "create"
        else:
            rule = RecoveryRule.objects.select_for_update().get(pk=rule.pk)
            operation = "update"

        def job_named(name: str) -> Job | None:
            if not name:
                return None
            return (
                Job.objects.exclude(status=JobStatus.DELETED)
                .filter(tenant_id=tenant.pk, environment_id=environment.pk, name=name)
                .get()
            )

        rule.name = definition["name"]
        rule.job = job_named(definition["job"])
        rule.team = Team.objects.get(tenant_id=tenant.pk, slug=definition["team"]) if definition["team"] else None
        rule.remediation_job = job_named(definition["remediation_job"])
        for field in (
            "exit_codes",
            "output_pattern",
            "http_statuses",
            "action",
            "retry_attempts",
            "retry_delay_seconds",
            "retry_factor",
            "severity",
            "max_actions",
            "window_minutes",
        ):
            setattr(rule, field, definition[field])
        rule.change_request_id = change_request_id
        save_with_history(rule, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            obj=rule,
            data={
                "kind": "recovery_rule",
                "operation": operation,
                "name": rule.name,
                "change_request": change_request_id,
            },
        )
    return rule


def delete_rule(
    *, actor: Actor, rule: RecoveryRule, change_request_id: int | None = None, change_reason: str | None = None
) -> None:
    with transaction.atomic():
        name, tenant_id, environment_id = rule.name, rule.tenant_id, rule.environment_id
        delete_with_history(rule, actor=actor, reason=change_reason or f"change request #{change_request_id}")
        audit.record(
            AuditAction.CONFIG_CHANGED,
            actor=actor,
            tenant=tenant_id,
            environment_id=environment_id,
            data={"kind": "recovery_rule", "operation": "delete", "name": name, "change_request": change_request_id},
        )
