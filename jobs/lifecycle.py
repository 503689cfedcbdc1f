"""Lifecycle fields of a job definition: the rationale non-standard jobs need, and the sunset date.

A job is *non-standard* when one of ``NONSTANDARD_CHECKS`` finds a reason; such a
job needs a written rationale before a change to it can be proposed. To add a
rule, append a function ``(definition, seed) -> reason or None`` to the list; it
sees the cleaned definition (a check whose field is absent or invalid simply
finds nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, timedelta

from django.utils import timezone

from . import schedule

FREQUENT_SECONDS = 300
_SAMPLE_FIRES = 64

Check = Callable[[dict, str | None], str | None]


def _fires_too_often(definition: dict, seed: str | None) -> str | None:
    """More than 12 fires within any hour. Counting per hour rather than the shortest gap keeps
    ``*/7`` (whose last gap before the hour is 4 minutes) standard and ``* 3 * * *`` not."""
    cron = definition.get("cron")
    if not cron:
        return None
    limit = 3600 // FREQUENT_SECONDS
    if schedule.minutes_per_hour(cron, seed=seed) <= limit:
        return None  # each minute of an hour fires at most once within any hour (UTC)
    fires = schedule.next_n(cron, "UTC", timezone.now(), _SAMPLE_FIRES, seed=seed)
    for i in range(len(fires) - limit):
        if (fires[i + limit] - fires[i]).total_seconds() < 3600:
            return f"runs more often than every 5 minutes (more than {limit} runs within an hour)"
    return None


def _fires_in_dst_transition(definition: dict, seed: str | None) -> str | None:
    """Fixed-hour schedules are ambiguous in a DST transition hour (a skipped or repeated wall-clock
    time); ``*`` schedules follow elapsed time and are not (see jobs/schedule.py)."""
    cron, tz_name = definition.get("cron"), definition.get("timezone")
    if not cron or not tz_name or tz_name == "UTC":
        return None
    minute, hour = cron.split()[:2]
    if minute.startswith("*") or hour.startswith("*"):
        return None
    now = timezone.now()
    for instant, before, after in schedule.transitions(tz_name, now, now + timedelta(days=366)):
        # The wall-clock window that is skipped (spring) or repeated (autumn), evaluated as naive UTC.
        start = (instant + min(before, after)).replace(tzinfo=UTC)
        end = start + abs(after - before)
        fire = schedule.next_after(cron, "UTC", start - timedelta(seconds=1), seed=seed)
        if fire is not None and fire < end:
            local = start.strftime("%Y-%m-%d %H:%M")
            kind = "skipped" if after > before else "repeated"
            return f"fires in a daylight-saving transition hour ({local} local is {kind})"
    return None


def _allows_overlap(definition: dict, seed: str | None) -> str | None:
    if definition.get("concurrency") == "allow":
        return "allows overlapping runs (concurrency allow)"
    return None


def _has_no_timeout(definition: dict, seed: str | None) -> str | None:
    if "timeout_seconds" in definition and not definition["timeout_seconds"]:
        return "has no timeout"
    return None


def _critical_without_heartbeat(definition: dict, seed: str | None) -> str | None:
    if (
        definition.get("criticality") == "critical"
        and "heartbeat" in definition
        and not (definition["heartbeat"] or {}).get("grace_seconds")
    ):
        return "is critical without a heartbeat"
    return None


NONSTANDARD_CHECKS: list[Check] = [
    _fires_too_often,
    _fires_in_dst_transition,
    _allows_overlap,
    _has_no_timeout,
    _critical_without_heartbeat,
]


def nonstandard_reasons(definition: dict, *, seed: str | None = None) -> list[str]:
    """Why a cleaned definition is non-standard ([] when it is standard)."""
    reasons = []
    for check in NONSTANDARD_CHECKS:
        try:
            reason = check(definition, seed)
        except (schedule.ScheduleError, ValueError, TypeError, AttributeError):
            reason = None  # The field's own validation reports the problem.
        if reason:
            reasons.append(reason)
    return reasons


def clean_lifecycle(merged: dict, cleaned: dict, errors: dict, *, seed: str | None, live: dict) -> dict:
    """Validate ``rationale`` and ``sunset_on``; ``cleaned`` holds the other cleaned fields,
    ``live`` the live definition (empty when creating)."""
    rationale = merged.get("rationale") or ""
    if not isinstance(rationale, str):
        errors["rationale"] = ["Must be a string."]
        rationale = ""
    elif len(rationale) > 5000:
        errors["rationale"] = ["At most 5000 characters."]
    relevant = {"cron", "timezone", "timeout_seconds", "criticality", "heartbeat", "concurrency"}
    if not rationale.strip() and not relevant & set(errors):
        reasons = nonstandard_reasons(cleaned, seed=seed)
        if reasons:
            errors["rationale"] = [
                "This job is non-standard (it " + "; it ".join(reasons) + "): explain why in a rationale."
            ]

    sunset = merged.get("sunset_on")
    if sunset in (None, ""):
        sunset_value = None
    elif isinstance(sunset, date):
        sunset_value = sunset.isoformat()
    elif isinstance(sunset, str):
        try:
            sunset_value = date.fromisoformat(sunset).isoformat()
        except ValueError:
            errors["sunset_on"] = ["Must be a date (YYYY-MM-DD) or empty."]
            sunset_value = None
    else:
        errors["sunset_on"] = ["Must be a date (YYYY-MM-DD) or empty."]
        sunset_value = None
    if sunset_value and sunset_value != live.get("sunset_on") and sunset_value <= timezone.now().date().isoformat():
        errors["sunset_on"] = ["A new sunset date must be in the future."]
    return {"rationale": rationale.strip(), "sunset_on": sunset_value}
