"""Maintenance windows and holiday calendars: validation, their live definitions, and the writes
that make a reviewed change live.

Windows and calendars are governed like jobs: they change only through change requests
(``approvals.config_changes``). The ``apply_*`` and ``delete_*`` functions here are what an
approved request calls, like ``jobs.services.apply_definition`` for jobs; nothing else calls them.
"""

from __future__ import annotations

from datetime import date, datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from governance import audit
from governance.actors import Actor
from governance.history import delete_with_history, save_with_history
from governance.models import AuditAction, Environment, Tenant

from . import schedule
from .models import HolidayCalendar, Job, JobStatus, MaintenanceWindow, WindowPolicy

WINDOW_FIELDS = ("name", "starts_at", "ends_at", "cron", "timezone", "duration_minutes", "policy")
CALENDAR_FIELDS = ("name", "dates", "country")
# Accepted on input only: build the dates from the holidays package for these years.
CALENDAR_INPUT_FIELDS = (*CALENDAR_FIELDS, "years", "subdivision")
MAX_CALENDAR_DATES = 2000


def window_definition(window: MaintenanceWindow) -> dict:
    """The live window as a JSON-able dict (the base of a change request, the diff's left side)."""
    return {
        "name": window.name,
        "starts_at": schedule.isoz(window.starts_at) if window.starts_at else None,
        "ends_at": schedule.isoz(window.ends_at) if window.ends_at else None,
        "cron": window.cron,
        "timezone": window.timezone,
        "duration_minutes": window.duration_minutes,
        "policy": window.policy,
    }


def calendar_definition(calendar: HolidayCalendar) -> dict:
    return {"name": calendar.name, "dates": list(calendar.dates or []), "country": calendar.country}


def _unknown(data: dict, allowed: tuple[str, ...], errors: dict) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        errors["definition"] = [f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(allowed)}."]


def _instant(data: dict, field: str, errors: dict) -> datetime | None:
    value = data.get(field)
    if value in (None, ""):
        return None
    parsed: datetime | None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    else:
        parsed = None
    if parsed is None:
        errors[field] = ["Give an instant in ISO 8601, e.g. 2026-06-01T22:00:00Z."]
        return None
    if parsed.tzinfo is None:
        errors[field] = ["Give the instant with a time zone (UTC, ISO 8601 with Z)."]
        return None
    return parsed


def clean_window(
    data, *, tenant: Tenant, environment: Environment | None, window: MaintenanceWindow | None = None
) -> dict:
    """Validate a proposed maintenance window or raise ValidationError({field: [messages]}).

    One-off: ``starts_at`` and ``ends_at``; recurring: ``cron``, ``timezone`` and ``duration_minutes``.
    ``window``, the live one an update changes, is accepted like every kind's live object and not
    consulted: no check of a window depends on what it was.
    """
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["Must be an object with the window's fields."]})
    errors: dict[str, list[str]] = {}
    _unknown(data, WINDOW_FIELDS, errors)
    if environment is not None and environment.tenant_id != tenant.pk:
        errors["environment"] = ["This environment belongs to another tenant."]
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["Name the window (e.g. 'db upgrade')."]
        name = ""
    elif len(name.strip()) > 200:
        errors["name"] = ["At most 200 characters."]
    name = name.strip()
    cron = data.get("cron") or ""
    if not isinstance(cron, str):
        errors["cron"] = ["Must be a cron expression such as '0 2 * * SUN'."]
        cron = ""
    cron = " ".join(cron.split())
    if len(cron) > 120:
        errors["cron"] = ["At most 120 characters."]
    zone = data.get("timezone") or "UTC"
    if not isinstance(zone, str):
        errors["timezone"] = ["Must be an IANA time zone such as Europe/Berlin."]
        zone = "UTC"
    duration = data.get("duration_minutes")
    if duration in ("", None):
        duration = None
    elif isinstance(duration, bool) or not isinstance(duration, int):
        errors["duration_minutes"] = ["Must be a whole number of minutes."]
        duration = None
    elif duration < 1:
        errors["duration_minutes"] = ["A recurring window lasts at least one minute."]
        duration = None
    policy = data.get("policy") or WindowPolicy.DEFER.value
    if policy not in WindowPolicy.values:
        errors["policy"] = [f"Must be one of: {', '.join(WindowPolicy.values)}."]
        policy = WindowPolicy.DEFER.value
    starts_at = _instant(data, "starts_at", errors)
    ends_at = _instant(data, "ends_at", errors)
    if cron:
        for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
            if value is not None:
                errors.setdefault(field, ["A recurring window opens at each cron fire; give no start or end."])
    elif duration is not None and "duration_minutes" not in errors:
        errors["duration_minutes"] = ["Only a recurring window (with cron) has a duration."]
    window = MaintenanceWindow(
        tenant=tenant,
        environment=environment,
        name=name,
        starts_at=starts_at,
        ends_at=ends_at,
        cron=cron,
        timezone=zone,
        duration_minutes=duration,
        policy=policy,
    )
    try:
        if "cron" not in errors:
            window.clean()
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            # A field already refused for its shape keeps its more specific message.
            errors.setdefault(field, messages)
    if errors:
        raise ValidationError(errors)
    if not cron:
        # A one-off window is two UTC instants; a zone would only suggest otherwise.
        window.timezone = "UTC"
    return window_definition(window)


def holiday_dates(country: str, years: list[int], subdivision: str | None = None) -> list[str]:
    """Public holidays of a country (and subdivision) from the ``holidays`` package, as ISO dates."""
    import holidays

    try:
        found = holidays.country_holidays(country, subdiv=subdivision or None, years=years)
    except (NotImplementedError, KeyError, ValueError, TypeError):
        raise ValidationError(
            {"country": [f"No holiday data for country {country!r} (use ISO codes like DE)."]}
        ) from None
    return sorted(d.isoformat() for d in found)


def calendar_references(tenant_id: int, name: str) -> list[str]:
    """Names of live jobs (any environment of the tenant) that skip the holidays of calendar ``name``."""
    return list(
        Job.objects.filter(tenant_id=tenant_id, holiday_calendar=name)
        .exclude(status=JobStatus.DELETED)
        .order_by("name")
        .values_list("name", flat=True)[:20]
    )


def clean_calendar(data, *, tenant: Tenant, calendar: HolidayCalendar | None = None) -> dict:
    """Validate a proposed holiday calendar or raise ValidationError({field: [messages]}).

    ``years`` (with ``country``) adds the country's public holidays from the holidays package.
    A calendar that live jobs name keeps its name: they refer to it by name.
    """
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["Must be an object with name and dates (or country and years)."]})
    errors: dict[str, list[str]] = {}
    _unknown(data, CALENDAR_INPUT_FIELDS, errors)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["Name the calendar (lower-case letters, digits and dashes, e.g. de-bank)."]
        name = ""
    name = name.strip()
    if name:
        try:
            HolidayCalendar._meta.get_field("name").run_validators(name)
        except ValidationError:
            errors["name"] = ["Use lower-case letters, digits, dashes and underscores only (e.g. de-bank)."]
        if len(name) > 100:
            errors["name"] = ["At most 100 characters."]
    renamed = calendar is not None and name != calendar.name
    if name and "name" not in errors and (calendar is None or renamed):
        users = calendar_references(calendar.tenant_id, calendar.name) if calendar is not None and renamed else []
        if calendar is not None and users:
            errors["name"] = [f"Jobs refer to {calendar.name} by name ({', '.join(users)}): it keeps its name."]
        elif HolidayCalendar.objects.filter(tenant=tenant, name=name).exists():
            errors["name"] = [f"This tenant already has a holiday calendar named {name!r}."]
    country = data.get("country") or ""
    if not isinstance(country, str) or len(country.strip()) > 8:
        errors["country"] = ["Must be an ISO country code such as DE."]
        country = ""
    country = country.strip().upper()
    dates_in = data.get("dates") if data.get("dates") is not None else []
    cleaned: set[str] = set()
    if not isinstance(dates_in, list):
        errors["dates"] = ["Must be a list of ISO dates such as 2026-12-25."]
    else:
        for value in dates_in:
            try:
                cleaned.add(date.fromisoformat(str(value).strip()).isoformat())
            except ValueError:
                errors["dates"] = [f"{value!r} is not an ISO date such as 2026-12-25."]
                break
    years = data.get("years")
    if years not in (None, []):
        if not country:
            errors["country"] = ["Give the country whose public holidays to add for these years."]
        elif not isinstance(years, list) or not all(
            isinstance(y, int) and not isinstance(y, bool) and 1900 <= y <= 2200 for y in years
        ):
            errors["years"] = ["Must be a list of years such as [2026, 2027]."]
        elif len(years) > 10:
            errors["years"] = ["At most 10 years at once."]
        else:
            subdivision = data.get("subdivision")
            try:
                cleaned.update(holiday_dates(country, years, subdivision if isinstance(subdivision, str) else None))
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if len(cleaned) > MAX_CALENDAR_DATES:
        errors["dates"] = [f"At most {MAX_CALENDAR_DATES} dates."]
    if errors:
        raise ValidationError(errors)
    return {"name": name, "dates": sorted(cleaned), "country": country}


def _reason(change_request_id: int | None, change_reason: str | None) -> str:
    return change_reason or (f"change request #{change_request_id}" if change_request_id else "direct change")


def _record(obj, *, actor: Actor, kind: str, operation: str, change_request_id, environment_id=None) -> None:
    audit.record(
        AuditAction.CONFIG_CHANGED,
        actor=actor,
        obj=obj,
        tenant=obj.tenant_id,
        environment_id=environment_id,
        data={"kind": kind, "operation": operation, "name": obj.name, "change_request": change_request_id},
    )


def apply_maintenance_window(
    *,
    actor: Actor,
    tenant: Tenant,
    environment: Environment | None,
    definition: dict,
    window: MaintenanceWindow | None = None,
    change_request_id: int | None = None,
    change_reason: str | None = None,
) -> MaintenanceWindow:
    """Make a validated window definition live (create when ``window`` is None). Change control only."""
    with transaction.atomic():
        if window is None:
            window = MaintenanceWindow(tenant=tenant, environment=environment)
            operation = "create"
        else:
            window = MaintenanceWindow.objects.select_for_update().get(pk=window.pk)
            operation = "update"
        for field in WINDOW_FIELDS:
            value = definition.get(field)
            if field in ("starts_at", "ends_at") and value:
                value = parse_datetime(value)
            setattr(window, field, value)
        window.full_clean()
        window.change_request_id = change_request_id
        save_with_history(window, actor=actor, reason=_reason(change_request_id, change_reason))
        _record(
            window,
            actor=actor,
            kind="maintenance_window",
            operation=operation,
            change_request_id=change_request_id,
            environment_id=window.environment_id,
        )
    return window


def delete_maintenance_window(
    *, actor: Actor, window: MaintenanceWindow, change_request_id: int | None = None, change_reason: str | None = None
) -> None:
    with transaction.atomic():
        window = MaintenanceWindow.objects.select_for_update().get(pk=window.pk)
        window.change_request_id = change_request_id
        _record(
            window,
            actor=actor,
            kind="maintenance_window",
            operation="delete",
            change_request_id=change_request_id,
            environment_id=window.environment_id,
        )
        # The history keeps the deleted window, stamped with the request that removed it.
        delete_with_history(window, actor=actor, reason=_reason(change_request_id, change_reason))


def apply_holiday_calendar(
    *,
    actor: Actor,
    tenant: Tenant,
    definition: dict,
    calendar: HolidayCalendar | None = None,
    change_request_id: int | None = None,
    change_reason: str | None = None,
) -> HolidayCalendar:
    """Make a validated calendar definition live (create when ``calendar`` is None). Change control only."""
    with transaction.atomic():
        if calendar is None:
            calendar = HolidayCalendar(tenant=tenant)
            operation = "create"
        else:
            calendar = HolidayCalendar.objects.select_for_update().get(pk=calendar.pk)
            operation = "update"
        calendar.name = definition["name"]
        calendar.dates = list(definition.get("dates") or [])
        calendar.country = definition.get("country") or ""
        calendar.full_clean(validate_unique=False)
        calendar.change_request_id = change_request_id
        save_with_history(calendar, actor=actor, reason=_reason(change_request_id, change_reason))
        _record(
            calendar, actor=actor, kind="holiday_calendar", operation=operation, change_request_id=change_request_id
        )
    return calendar


def delete_holiday_calendar(
    *, actor: Actor, calendar: HolidayCalendar, change_request_id: int | None = None, change_reason: str | None = None
) -> None:
    with transaction.atomic():
        calendar = HolidayCalendar.objects.select_for_update().get(pk=calendar.pk)
        users = calendar_references(calendar.tenant_id, calendar.name)
        if users:
            raise ValidationError(
                {"name": [f"Jobs still skip the holidays of {calendar.name}: {', '.join(users)}. Change them first."]}
            )
        calendar.change_request_id = change_request_id
        _record(calendar, actor=actor, kind="holiday_calendar", operation="delete", change_request_id=change_request_id)
        delete_with_history(calendar, actor=actor, reason=_reason(change_request_id, change_reason))
