"""Validation of proposed job definitions, shared by the API, the UI and manifests."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from governance.models import Environment, Team, Tenant
from governance.patterns import compile_user_pattern, pattern_problem
from governance.secrets import SecretScope, clean_secret_map, reference_problems

from . import schedule
from .execution_spec import clean_execution
from .lifecycle import clean_lifecycle
from .models import (
    DEFAULT_PRIORITY,
    DEFINITION_FIELDS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    CatchupPolicy,
    ConcurrencyPolicy,
    Criticality,
    GapPolicy,
    HolidayCalendar,
    Job,
    JobKind,
    JobStatus,
    OverlapPolicy,
    Pool,
    WindowPolicy,
)

MAX_COMMAND_ITEMS = 256
MAX_ARG_LENGTH = 8192
MAX_TIMEOUT = 7 * 24 * 3600
MAX_CATCHUP_LIMIT = 100
MAX_STARTING_DEADLINE = 31 * 24 * 3600
MAX_TAGS = 20
TAG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")


def _str(data: dict, field: str, errors: dict, *, required: bool = False, max_length: int = 10000) -> str:
    value = data.get(field, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[field] = ["Must be a string."]
        return ""
    if required and not value.strip():
        errors[field] = ["This field is required."]
    elif len(value) > max_length:
        errors[field] = [f"At most {max_length} characters."]
    return value


def clean_definition(
    data: Any,
    *,
    tenant: Tenant,
    team: Team,
    environment: Environment,
    job: Job | None = None,
) -> dict:
    """Return a normalised definition or raise ValidationError({field: [messages]}).

    ``job`` is the live job being changed (None when creating).
    """
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["Must be an object with the job's fields."]})
    unknown = sorted(set(data) - set(DEFINITION_FIELDS) - {"network"})
    errors: dict[str, list[str]] = {}
    if unknown:
        errors["definition"] = [f"Unknown field(s): {', '.join(unknown)}."]
    if "network" in data:
        # The sandbox cannot route a job to the network without also exposing the worker's
        # loopback services (web server, OpenBao): command jobs get none (docs/execution.md).
        errors["network"] = [
            "Command jobs run with no network access (their sandbox has only its own loopback); "
            "call HTTP services through an HTTP job (kind: http), whose hosts the environment's policy allows."
        ]
    base = job.definition() if job else {}
    merged = {**base, **{k: v for k, v in data.items() if k in DEFINITION_FIELDS}}

    name = _str(merged, "name", errors, required=True, max_length=200)
    if name and "name" not in errors:
        # RE2, linear in the name; a pattern stored before RE2 was required is refused, never
        # handed to a backtracking engine.
        problem = pattern_problem(tenant.naming_pattern)
        match = None if problem else compile_user_pattern(tenant.naming_pattern).fullmatch(name)
        if problem:
            errors["name"] = [f"The tenant's naming pattern is refused: {problem}"]
        elif not match:
            errors["name"] = [
                f"{name!r} does not follow the naming convention <team>.<system>.<job> "
                "(lower-case letters, digits and dashes, separated by dots)."
            ]
        elif match.groupdict().get("team") not in (None, team.slug):
            errors["name"] = [f"Job names of team {team.slug!r} must start with '{team.slug}.'."]
        else:
            clash = Job.objects.filter(tenant=tenant, environment=environment, name=name).exclude(
                status=JobStatus.DELETED
            )
            if job is not None:
                clash = clash.exclude(pk=job.pk)
            if clash.exists():
                errors["name"] = [f"A job named {name!r} already exists in {environment.slug}."]

    description = _str(merged, "description", errors, max_length=5000)
    runbook = _str(merged, "runbook", errors, max_length=50000)

    criticality = merged.get("criticality", Criticality.MEDIUM)
    if criticality not in Criticality.values:
        errors["criticality"] = [f"Must be one of: {', '.join(Criticality.values)}."]

    tags = clean_tags(merged.get("tags"), errors)

    # Execution fields (kind, command and its parameters, limits, retries, HTTP, heartbeats, edges).
    execution = clean_execution(
        merged,
        tenant=tenant,
        environment=environment,
        errors=errors,
        max_items=MAX_COMMAND_ITEMS,
        max_len=MAX_ARG_LENGTH,
        job=job,
    )

    tz_name = _str(merged, "timezone", errors, required=True, max_length=64) or ""
    if tz_name and "timezone" not in errors:
        try:
            schedule.validate_zone(tz_name)
        except schedule.ScheduleError as exc:
            errors["timezone"] = [str(exc)]

    cron = _str(merged, "cron", errors, required=True, max_length=120)
    if cron and "cron" not in errors:
        try:
            cron = schedule.validate_cron(cron)
        except schedule.ScheduleError as exc:
            errors["cron"] = [str(exc)]

    timeout = merged.get("timeout_seconds", 3600)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        errors["timeout_seconds"] = ["Must be a whole number of seconds."]
    elif not 1 <= timeout <= MAX_TIMEOUT:
        errors["timeout_seconds"] = [f"Must be between 1 and {MAX_TIMEOUT} seconds."]

    scheduling = _clean_scheduling(merged, errors, tenant=tenant, environment=environment)

    # Lifecycle: rationale for non-standard jobs, sunset date (jobs/lifecycle.py).
    lifecycle = clean_lifecycle(
        merged,
        {
            "criticality": criticality,
            "cron": cron,
            "timezone": tz_name,
            "timeout_seconds": timeout,
            **scheduling,
            **execution,
        },
        errors,
        seed=schedule.job_seed(tenant.pk, environment.pk, name),
        live=base,
    )

    try:
        # The job's own tenant/environment(/team) prefix: a dev job can never name a prod secret.
        secret_refs = clean_secret_map(merged.get("secrets"), SecretScope.of(tenant, environment, team))
    except ValidationError as exc:
        errors.update(exc.message_dict)
        secret_refs = {}
    if secret_refs and execution.get("kind", JobKind.COMMAND) != JobKind.COMMAND:
        # Only command jobs receive secrets (as environment variables); accepting them elsewhere
        # would let an author believe a request carries credentials that never arrive.
        errors.setdefault("secrets", []).append(
            f"Secrets are injected into command jobs only; remove them from this {execution.get('kind')} job."
        )

    if errors:
        raise ValidationError(errors)
    return {
        "name": name,
        "description": description,
        "runbook": runbook,
        "criticality": criticality,
        "tags": tags,
        "cron": cron,
        "timezone": tz_name,
        "timeout_seconds": timeout,
        **scheduling,
        **execution,
        **lifecycle,
        "secrets": secret_refs,
    }


def stored_secret_problems(*, tenant: str | None = None) -> tuple[int, list[dict]]:
    """Live jobs whose stored secret references their scope no longer allows (written before the
    per-environment layout, or before their tenant switched to team scoping): how many jobs with
    secrets were checked, and one row per bad reference (tenant, environment, team, job, field,
    reference, allowed prefix, error). Reads only; nothing is rewritten."""
    jobs = (
        Job.objects.exclude(status=JobStatus.DELETED)
        .exclude(secrets={})
        .select_related("tenant", "environment", "team")
        .order_by("tenant__slug", "environment__order", "name")
    )
    if tenant:
        jobs = jobs.filter(tenant__slug=tenant)
    checked, rows = 0, []
    for job in jobs.iterator():
        checked += 1
        for problem in reference_problems(job.secrets, SecretScope.of(job.tenant, job.environment, job.team)):
            rows.append(
                {
                    "tenant": job.tenant.slug,
                    "environment": job.environment.slug,
                    "team": job.team.slug,
                    "job": job.name,
                    **problem,
                }
            )
    return checked, rows


# --- scheduling policies ---------------------------------------------------------------


def _choice(data: dict, field: str, choices: type[models.TextChoices], default: str, errors: dict) -> str:
    value = data.get(field, default)
    if value is None:
        value = default
    if value not in choices.values:
        errors[field] = [f"Must be one of: {', '.join(choices.values)} (got {value!r})."]
    return value


def _whole(data: dict, field: str, default: int | None, low: int, high: int, errors: dict, unit: str) -> int | None:
    value = data.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = [f"Must be a whole number of {unit}."]
    elif not low <= value <= high:
        errors[field] = [f"Must be between {low} and {high} {unit}."]
    return value


MAX_WINDOWS = 20
MAX_WINDOW_MINUTES = 7 * 24 * 60


def _clean_windows(data: dict, errors: dict) -> list[dict]:
    windows = data.get("windows") or []
    if not isinstance(windows, list) or len(windows) > MAX_WINDOWS:
        errors["windows"] = [f'Must be a list of at most {MAX_WINDOWS} {{"cron": ..., "duration_minutes": ...}}.']
        return []
    cleaned = []
    for i, window in enumerate(windows, start=1):
        if not isinstance(window, dict) or set(window) - {"cron", "duration_minutes", "timezone"}:
            errors["windows"] = [f'Window {i}: must be {{"cron": ..., "duration_minutes": ..., "timezone"?: ...}}.']
            return []
        try:
            cron = schedule.validate_cron(window.get("cron") or "", seed=None)
            if window.get("timezone"):
                schedule.validate_zone(window["timezone"])
        except schedule.ScheduleError as exc:
            errors["windows"] = [f"Window {i}: {exc}"]
            return []
        minutes = window.get("duration_minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_WINDOW_MINUTES:
            errors["windows"] = [f"Window {i}: duration_minutes must be between 1 and {MAX_WINDOW_MINUTES}."]
            return []
        cleaned.append(
            {
                "cron": cron,
                "duration_minutes": minutes,
                **({"timezone": window["timezone"]} if window.get("timezone") else {}),
            }
        )
    return cleaned


def clean_tags(value: Any, errors: dict) -> list[str]:
    """Tags: a list of slugs (lower-case letters, digits, dashes), sorted and without repeats."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        errors["tags"] = ['Must be a list of slugs, e.g. ["payments", "nightly"].']
        return []
    bad = [tag for tag in value if not TAG_PATTERN.fullmatch(tag)]
    if bad:
        errors["tags"] = [
            f"Not a slug: {', '.join(repr(t) for t in bad[:5])} (lower-case letters, digits and dashes, "
            "at most 50 characters)."
        ]
        return []
    tags = sorted(set(value))
    if len(tags) > MAX_TAGS:
        errors["tags"] = [f"At most {MAX_TAGS} tags, got {len(tags)}."]
        return []
    return tags


def _clean_calendar(data: dict, errors: dict, tenant: Tenant) -> str:
    name = data.get("holiday_calendar") or ""
    if not isinstance(name, str):
        errors["holiday_calendar"] = ["Must be the name of one of the tenant's holiday calendars."]
        return ""
    if name and not HolidayCalendar.objects.filter(tenant=tenant, name=name).exists():
        errors["holiday_calendar"] = [f"No holiday calendar named {name!r} in this tenant."]
    return name


def _clean_pool_name(data: dict, errors: dict, environment: Environment) -> str:
    name = data.get("pool") or ""
    if not isinstance(name, str):
        errors["pool"] = [f"Must be the name of a pool of {environment.slug} (or empty for none)."]
        return ""
    if name and not Pool.objects.filter(environment=environment, name=name).exists():
        errors["pool"] = [f"No pool named {name!r} in {environment.slug}."]
    return name


def _clean_priority(data: dict, errors: dict) -> int:
    value = data.get("priority", DEFAULT_PRIORITY)
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        errors["priority"] = [
            f"Must be a whole number from {MIN_PRIORITY} (lowest) to {MAX_PRIORITY} (highest), got {value!r}."
        ]
        return DEFAULT_PRIORITY
    return value


def _clean_scheduling(data: dict, errors: dict, *, tenant: Tenant, environment: Environment) -> dict:
    return {
        "gap": _choice(data, "gap", GapPolicy, GapPolicy.SHIFT.value, errors),
        "overlap": _choice(data, "overlap", OverlapPolicy, OverlapPolicy.ONCE.value, errors),
        "catchup": _choice(data, "catchup", CatchupPolicy, CatchupPolicy.SKIP.value, errors),
        "catchup_limit": _whole(data, "catchup_limit", 10, 1, MAX_CATCHUP_LIMIT, errors, "slots"),
        "starting_deadline_seconds": _whole(
            data, "starting_deadline_seconds", None, 1, MAX_STARTING_DEADLINE, errors, "seconds"
        ),
        "windows": _clean_windows(data, errors),
        "window_policy": _choice(data, "window_policy", WindowPolicy, WindowPolicy.DEFER.value, errors),
        "holiday_calendar": _clean_calendar(data, errors, tenant),
        "concurrency": _choice(data, "concurrency", ConcurrencyPolicy, ConcurrencyPolicy.FORBID.value, errors),
        "max_active_runs": _whole(data, "max_active_runs", 0, 0, 1000, errors, "runs"),
        "pool": _clean_pool_name(data, errors, environment),
        "priority": _clean_priority(data, errors),
    }


# --- end scheduling policies -----------------------------------------------------------


def diff(before: dict | None, after: dict | None) -> list[dict]:
    """Field-by-field differences: [{field, before, after}] for fields that change."""
    before = before or {}
    after = after or {}
    rows = []
    for field in DEFINITION_FIELDS:
        old, new = before.get(field), after.get(field)
        if old != new:
            rows.append({"field": field, "before": old, "after": new})
    return rows
