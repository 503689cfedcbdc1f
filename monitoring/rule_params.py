"""Is a proposed alert rule valid: its scope, its kind and the settings of that kind.

A rule's definition (what a change request proposes) is one flat object: the common fields
(``RULE_FIELDS``) and the settings of its kind (``KIND_PARAMS``). Every error names its field and
nothing is saved (``approvals.config_changes`` calls ``clean_rule`` before any write).
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

from governance.models import Environment, Team, Tenant
from jobs import schedule
from jobs.models import Job, JobStatus

from .models import AlertRule, RuleKind, RuleScope, Severity

NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
TIME_PATTERN = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
COMMON_FIELDS = ("name", "kind", "scope", "job", "team", "tag", "severity", "for_seconds", "enabled")
MAX_FOR_SECONDS = 24 * 3600
MAX_SAMPLES = 100
DAYS = ("business", "daily")

# The settings of each kind, in the order they are shown.
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    RuleKind.RUN_FAILED: (),
    RuleKind.LATE_START: ("grace_seconds",),
    RuleKind.LONG_RUNNING: ("seconds", "k", "samples", "min_samples"),
    RuleKind.FAILURE_RATE: ("threshold", "window_seconds", "min_runs"),
    RuleKind.DEADLINE_MISSED: ("time", "timezone", "days"),
    RuleKind.DEADLINE_PREDICTED: ("time", "timezone", "days", "samples", "min_samples"),
    RuleKind.HEARTBEAT_SILENCE: ("seconds",),
}
PARAM_FIELDS = tuple(dict.fromkeys(p for params in KIND_PARAMS.values() for p in params))
RULE_FIELDS = (*COMMON_FIELDS, *PARAM_FIELDS)


def _int(data: dict, field: str, errors: dict, *, low: int, high: int, default: int | None, unit: str) -> int | None:
    value = data.get(field)
    if value is None:
        if default is None:
            errors[field] = [f"Required for this kind of rule: a whole number of {unit} from {low} to {high}."]
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[field] = [f"Must be a whole number of {unit} from {low} to {high}, got {value!r}."]
        return None
    return value


def _number(data: dict, field: str, errors: dict, *, low: float, high: float, low_open: bool = False) -> float | None:
    value: Any = data.get(field)
    number = None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)
    if number is None or not (low < number <= high if low_open else low <= number <= high):
        bound = f"above {low}" if low_open else f"from {low}"
        errors[field] = [f"Must be a number {bound} up to {high}, got {value!r}."]
        return None
    return number


def clean_params(kind: str, data: dict, errors: dict) -> dict[str, Any]:
    """The kind's settings from ``data`` (defaults filled in), or field errors."""
    params: dict[str, Any] = {}
    allowed = KIND_PARAMS[kind]
    for field in PARAM_FIELDS:
        if field not in allowed and data.get(field) not in (None, ""):
            errors[field] = [f"Not a setting of a {kind} rule (its settings: {', '.join(allowed) or 'none'})."]
    if kind == RuleKind.LATE_START:
        params["grace_seconds"] = _int(data, "grace_seconds", errors, low=0, high=86400, default=600, unit="seconds")
    elif kind == RuleKind.HEARTBEAT_SILENCE:
        params["seconds"] = _int(data, "seconds", errors, low=60, high=30 * 86400, default=None, unit="seconds")
    elif kind == RuleKind.FAILURE_RATE:
        params["threshold"] = _number(data, "threshold", errors, low=0.0, high=1.0, low_open=True)
        params["window_seconds"] = _int(
            data, "window_seconds", errors, low=300, high=30 * 86400, default=86400, unit="seconds"
        )
        params["min_runs"] = _int(data, "min_runs", errors, low=1, high=1000, default=5, unit="runs")
    elif kind == RuleKind.LONG_RUNNING:
        has_seconds, has_k = data.get("seconds") is not None, data.get("k") is not None
        if has_seconds == has_k:
            errors["seconds" if has_seconds else "k"] = [
                "Give either seconds (an absolute limit) or k (k x p95 of the last successful runs), not both."
                if has_seconds
                else "Give either seconds (an absolute limit) or k (k x p95 of the last successful runs)."
            ]
        elif has_seconds:
            params["seconds"] = _int(data, "seconds", errors, low=60, high=7 * 86400, default=None, unit="seconds")
        else:
            params["k"] = _number(data, "k", errors, low=1.0, high=100.0)
            params.update(_samples(data, errors))
    elif kind in (RuleKind.DEADLINE_MISSED, RuleKind.DEADLINE_PREDICTED):
        params.update(_deadline(data, errors))
        if kind == RuleKind.DEADLINE_PREDICTED:
            params.update(_samples(data, errors))
    return params


def _samples(data: dict, errors: dict) -> dict[str, Any]:
    samples = _int(data, "samples", errors, low=5, high=MAX_SAMPLES, default=20, unit="runs")
    minimum = _int(data, "min_samples", errors, low=3, high=MAX_SAMPLES, default=5, unit="runs")
    if samples is not None and minimum is not None and minimum > samples:
        errors["min_samples"] = [f"Must not exceed samples ({samples}), got {minimum}."]
    return {"samples": samples, "min_samples": minimum}


def _deadline(data: dict, errors: dict) -> dict[str, Any]:
    time = data.get("time")
    if not isinstance(time, str) or not TIME_PATTERN.fullmatch(time):
        errors["time"] = [f"Must be a local time HH:MM from 00:00 to 23:59, got {time!r}."]
    zone = data.get("timezone")
    if not isinstance(zone, str) or not zone:
        errors["timezone"] = ["Required: the IANA time zone of the deadline, e.g. Europe/Berlin."]
    else:
        try:
            schedule.validate_zone(zone)
        except schedule.ScheduleError as exc:
            errors["timezone"] = [str(exc)]
    days = data.get("days") or "business"
    if days not in DAYS:
        errors["days"] = [f"Must be one of: {', '.join(DAYS)}, got {days!r}."]
    return {"time": time, "timezone": zone, "days": days}


def _choice(data: dict, field: str, choices: type, default: str | None, errors: dict) -> str:
    value: Any = data.get(field) or default
    if value not in choices.values:  # type: ignore[attr-defined]
        errors[field] = [f"Must be one of: {', '.join(choices.values)}, got {value!r}."]  # type: ignore[attr-defined]
        return ""
    return value


def clean_rule(data: Any, *, tenant: Tenant, environment: Environment | None, rule: AlertRule | None) -> dict:
    """A normalised rule definition, or ValidationError({field: [messages]}).

    ``environment`` is the change request's: a job rule names a job of that environment; a team or
    tag rule given one applies only there."""
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["Must be an object with the rule's fields."]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        errors["definition"] = [f"Unknown field(s): {', '.join(unknown)}."]
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        errors["name"] = ["Required: a slug (lower-case letters, digits and dashes, at most 100 characters)."]
    elif AlertRule.objects.filter(tenant=tenant, name=name).exclude(pk=rule.pk if rule else 0).exists():
        errors["name"] = [f"This tenant already has an alert rule named {name!r}."]
    kind = _choice(data, "kind", RuleKind, None, errors)
    scope = _choice(data, "scope", RuleScope, None, errors)
    severity = _choice(data, "severity", Severity, Severity.HIGH, errors)
    for_seconds = _int(data, "for_seconds", errors, low=0, high=MAX_FOR_SECONDS, default=0, unit="seconds")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        errors["enabled"] = ["Must be true or false."]
    target = _clean_scope(scope, data, errors, tenant=tenant, environment=environment)
    params = clean_params(kind, data, errors) if kind else {}
    if errors:
        raise ValidationError(errors)
    return {
        "name": name,
        "kind": kind,
        "scope": scope,
        **target,
        "severity": severity,
        "for_seconds": for_seconds,
        "enabled": enabled,
        **params,
    }


def _clean_scope(scope: str, data: dict, errors: dict, *, tenant: Tenant, environment: Environment | None) -> dict:
    target: dict[str, Any] = {"job": "", "team": "", "tag": ""}
    for field in ("job", "team", "tag"):
        if field != scope and data.get(field) not in (None, ""):
            errors[field] = [f"A {scope or '?'}-scoped rule names no {field}."]
    value = data.get(scope) if scope else None
    if scope and (not isinstance(value, str) or not value):
        errors[scope] = [f"Required for a {scope}-scoped rule: the {scope}'s name."]
        return target
    if scope == RuleScope.JOB:
        if environment is None:
            errors["environment"] = ["A job rule belongs to the job's environment: choose it."]
        elif (
            not Job.objects.filter(tenant=tenant, environment=environment, name=value)
            .exclude(status=JobStatus.DELETED)
            .exists()
        ):
            errors["job"] = [f"No job named {value!r} in {environment.slug}."]
    elif scope == RuleScope.TEAM:
        if not Team.objects.filter(tenant=tenant, slug=value).exists():
            errors["team"] = [f"No team {value!r} in this tenant."]
    elif scope == RuleScope.TAG:
        jobs = Job.objects.filter(tenant=tenant).exclude(status=JobStatus.DELETED).exclude(tags=[])
        if environment is not None:
            jobs = jobs.filter(environment=environment)
        # SQLite has no JSON containment lookup: the tag lists are read, not searched in the database.
        if not any(value in (tags or []) for tags in jobs.values_list("tags", flat=True).iterator()):
            where = f" in {environment.slug}" if environment is not None else ""
            errors["tag"] = [f"No job{where} has the tag {value!r}."]
    if scope:
        target[scope] = value
    return target


def rule_definition(rule: AlertRule) -> dict:
    """The live rule as a definition (what a change request is based on and compared with)."""
    return {
        "name": rule.name,
        "kind": rule.kind,
        "scope": rule.scope,
        "job": rule.job.name if rule.job_id else "",  # type: ignore[union-attr]
        "team": rule.team.slug if rule.team_id and rule.scope == RuleScope.TEAM else "",  # type: ignore[union-attr]
        "tag": rule.tag,
        "severity": rule.severity,
        "for_seconds": rule.for_seconds,
        "enabled": rule.enabled,
        **rule.params,
    }
