"""What a reviewer should know before approving an open change request: maintenance-window
collisions of the proposed schedule, a freeze that will hold it, and non-standard lifecycle traits.

``with_warning_facts`` annotates a queryset of requests with the freeze that holds each one and
whether any maintenance window could concern it, inside the query that loads them; then
``change_warnings`` needs at most two more queries (the windows, only when some exist, and the
holiday calendars the proposals name, only then) for a whole page, and computes the rest in memory
(jobs.firing decides each upcoming run as the scheduler will). Without the annotations it loads both itself (two queries).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import DateTimeField, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from jobs import firing, schedule
from jobs.lifecycle import nonstandard_reasons
from jobs.models import MaintenanceWindow
from jobs.preview import window_warnings

from .models import OPEN_STATUSES, ChangeAction, ChangeRequest, FreezeWindow


class WarningKind(models.TextChoices):
    MAINTENANCE_WINDOW = "maintenance_window", "A proposed run falls in a maintenance window"
    FREEZE = "freeze", "A freeze holds the change"
    NONSTANDARD = "nonstandard", "The job is non-standard"


def with_warning_facts(queryset: QuerySet[ChangeRequest], *, now: datetime | None = None) -> QuerySet:
    """Annotate each request with the freeze in force when it would apply (now, or its apply time;
    the one ending last, as ``services.active_freeze``) and whether a maintenance window exists for
    its environment or tenant."""
    now = now or timezone.now()
    at = Greatest(Value(now), Coalesce(OuterRef("apply_after"), Value(now)), output_field=DateTimeField())
    covering = (
        FreezeWindow.objects.filter(tenant_id=OuterRef("tenant_id"), starts_at__lte=at, ends_at__gt=at)
        .filter(Q(environment__isnull=True) | Q(environment_id=OuterRef("environment_id")))
        .order_by("-ends_at", "-id")
    )
    windows = MaintenanceWindow.objects.filter(tenant_id=OuterRef("tenant_id")).filter(
        Q(environment__isnull=True) | Q(environment_id=OuterRef("environment_id"))
    )
    return queryset.annotate(
        warning_freeze_reason=Subquery(covering.values("reason")[:1]),
        warning_freeze_ends_at=Subquery(covering.values("ends_at")[:1]),
        warning_has_windows=Exists(windows),
    )


def _is_job_proposal(change: ChangeRequest) -> bool:
    # Scheduling configuration changes (windows, calendars, pools) propose no job schedule.
    return (
        getattr(change, "target_kind", "job") == "job"
        and change.action in (ChangeAction.CREATE, ChangeAction.UPDATE)
        and bool(change.proposed)
    )


def change_warnings(changes: Iterable[ChangeRequest], *, now: datetime | None = None) -> dict[int, list[dict]]:
    """{change pk: [{kind, message}]}; closed requests have none (nothing is left to decide)."""
    changes = list(changes)
    result: dict[int, list[dict]] = {change.pk: [] for change in changes}
    # Rows of ``with_warning_data`` carry annotations (warning_*) besides the model's fields.
    open_changes: list[Any] = [c for c in changes if c.status in OPEN_STATUSES]
    if not open_changes:
        return result
    now = now or timezone.now()
    if all(hasattr(c, "warning_has_windows") for c in open_changes):
        tenants = {c.tenant_id for c in open_changes if c.warning_has_windows and _is_job_proposal(c)}
        windows = list(MaintenanceWindow.objects.filter(tenant_id__in=tenants)) if tenants else []
        freezes = {
            c.pk: (c.warning_freeze_ends_at, c.warning_freeze_reason)
            for c in open_changes
            if c.warning_freeze_ends_at is not None
        }
    else:
        tenants = {c.tenant_id for c in open_changes}
        windows = list(MaintenanceWindow.objects.filter(tenant_id__in=tenants))
        candidates = list(FreezeWindow.objects.filter(tenant_id__in=tenants, ends_at__gt=now).order_by("ends_at"))
        freezes = {}
        for change in open_changes:
            found = _freeze_for(change, candidates, now)
            if found is not None:
                freezes[change.pk] = (found.ends_at, found.reason)
    # The holiday calendars the proposals name (a holiday skips a slot before any window): one query, if any.
    calendars = firing.load_calendars(
        (c.tenant_id, (c.proposed or {}).get("holiday_calendar") or "")
        for c in open_changes
        if windows and _is_job_proposal(c)
    )
    for change in open_changes:
        warnings = result[change.pk]
        freeze = freezes.get(change.pk)
        if freeze is not None:
            ends_at, reason = freeze
            if change.emergency:
                message = (
                    f"Freeze until {schedule.isoz(ends_at)} ({reason}): this emergency change may "
                    "still apply and then needs a review after the fact."
                )
            else:
                message = (
                    f"Freeze until {schedule.isoz(ends_at)} ({reason}): once approved, the change "
                    "waits until the freeze ends."
                )
            warnings.append({"kind": WarningKind.FREEZE.value, "message": message})
        if _is_job_proposal(change):
            where: dict[str, Any] = {"tenant_id": change.tenant_id, "environment_id": change.environment_id}
            for message in window_warnings(change.proposed, now=now, windows=windows, calendars=calendars, **where):
                warnings.append({"kind": WarningKind.MAINTENANCE_WINDOW.value, "message": message})
            seed = schedule.job_seed(change.tenant_id, change.environment_id, change.proposed.get("name", ""))
            for reason in nonstandard_reasons(change.proposed, seed=seed):
                rationale = (change.proposed.get("rationale") or "").strip()
                message = f"Non-standard job: it {reason}." + (f" Rationale: {rationale}" if rationale else "")
                warnings.append({"kind": WarningKind.NONSTANDARD.value, "message": message})
    return result


def _freeze_for(change: ChangeRequest, freezes: list[FreezeWindow], now: datetime) -> FreezeWindow | None:
    """The freeze in force when the change would apply (now, or its apply time), if any."""
    at = max(now, change.apply_after) if change.apply_after else now
    covering = [
        f
        for f in freezes
        if f.tenant_id == change.tenant_id
        and f.environment_id in (None, change.environment_id)
        and f.starts_at <= at < f.ends_at
    ]
    return max(covering, key=lambda f: (f.ends_at, f.pk)) if covering else None
