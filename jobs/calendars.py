"""Verb-named writes for maintenance windows and holiday calendars (tenant admins only)."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction

from governance import audit
from governance.access import Action, can_in
from governance.models import AuditAction, Environment, Tenant
from governance.services import AccessDenied

from .models import HolidayCalendar, MaintenanceWindow, WindowPolicy


def _require_admin(actor, tenant: Tenant, environment: Environment | None) -> None:
    if not can_in(actor, Action.ADMINISTER, tenant.pk, None, environment.pk if environment else None):
        raise AccessDenied("You need the tenant admin role to change maintenance windows and calendars.")


def create_maintenance_window(
    *,
    actor,
    tenant: Tenant,
    name: str,
    environment: Environment | None = None,
    starts_at=None,
    ends_at=None,
    cron: str = "",
    timezone: str = "UTC",
    duration_minutes: int | None = None,
    policy: str = WindowPolicy.DEFER,
) -> MaintenanceWindow:
    """A one-off (starts_at..ends_at) or recurring (cron + duration) window; ValidationError names the field."""
    _require_admin(actor, tenant, environment)
    if environment is not None and environment.tenant_id != tenant.pk:
        raise ValidationError({"environment": ["This environment belongs to another tenant."]})
    window = MaintenanceWindow(
        tenant=tenant,
        environment=environment,
        name=name,
        starts_at=starts_at,
        ends_at=ends_at,
        cron=" ".join(cron.split()),
        timezone=timezone,
        duration_minutes=duration_minutes,
        policy=policy,
    )
    window.full_clean()
    with transaction.atomic():
        window.save()
        audit.record(
            AuditAction.POLICY_CHANGED,
            actor=actor,
            obj=window,
            environment_id=window.environment_id,
            data={"maintenance_window": name, "policy": policy, "cron": window.cron, "created": True},
        )
    return window


def set_holiday_calendar(*, actor, tenant: Tenant, name: str, dates: list, country: str = "") -> HolidayCalendar:
    """Create or replace a tenant's calendar of dates to skip (ISO dates, in each job's own zone)."""
    _require_admin(actor, tenant, None)
    if not isinstance(dates, list):
        raise ValidationError({"dates": ["Must be a list of ISO dates such as 2026-12-25."]})
    cleaned = set()
    for value in dates:
        try:
            cleaned.add(date.fromisoformat(str(value)).isoformat())
        except ValueError:
            raise ValidationError({"dates": [f"{value!r} is not an ISO date such as 2026-12-25."]}) from None
    calendar = HolidayCalendar.objects.filter(tenant=tenant, name=name).first() or HolidayCalendar(
        tenant=tenant, name=name
    )
    calendar.dates = sorted(cleaned)
    calendar.country = country
    calendar.full_clean(validate_unique=False)
    with transaction.atomic():
        calendar.save()
        audit.record(
            AuditAction.POLICY_CHANGED,
            actor=actor,
            obj=calendar,
            data={"holiday_calendar": name, "dates": len(cleaned), "country": country},
        )
    return calendar


def build_holiday_calendar(
    *, actor, tenant: Tenant, name: str, country: str, years: list[int], subdivision: str | None = None
) -> HolidayCalendar:
    """A calendar from the ``holidays`` package's public holidays of a country (and subdivision)."""
    import holidays

    try:
        found = holidays.country_holidays(country, subdiv=subdivision, years=years)
    except NotImplementedError:
        raise ValidationError(
            {"country": [f"No holiday data for country {country!r} (use ISO codes like DE)."]}
        ) from None
    return set_holiday_calendar(
        actor=actor, tenant=tenant, name=name, dates=[d.isoformat() for d in found], country=country
    )
