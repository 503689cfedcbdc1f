"""What a reviewer should know before approving an open change request: maintenance-window
collisions of the proposed schedule, a freeze that will hold it, and non-standard lifecycle traits.

``change_warnings`` loads the windows and freezes of all given requests' tenants in two queries,
so a page of a list costs the same whatever its length; the rest is computed in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import models
from django.utils import timezone

from jobs import schedule
from jobs.lifecycle import nonstandard_reasons
from jobs.models import MaintenanceWindow
from jobs.preview import window_warnings

from .models import OPEN_STATUSES, ChangeAction, ChangeRequest, FreezeWindow


class WarningKind(models.TextChoices):
    MAINTENANCE_WINDOW = "maintenance_window", "A proposed run falls in a maintenance window"
    FREEZE = "freeze", "A freeze holds the change"
    NONSTANDARD = "nonstandard", "The job is non-standard"


def change_warnings(changes: Iterable[ChangeRequest], *, now: datetime | None = None) -> dict[int, list[dict]]:
    """{change pk: [{kind, message}]}; closed requests have none (nothing is left to decide)."""
    changes = list(changes)
    result: dict[int, list[dict]] = {change.pk: [] for change in changes}
    open_changes = [c for c in changes if c.status in OPEN_STATUSES]
    if not open_changes:
        return result
    now = now or timezone.now()
    tenants = {c.tenant_id for c in open_changes}
    windows = list(MaintenanceWindow.objects.filter(tenant_id__in=tenants))
    freezes = list(FreezeWindow.objects.filter(tenant_id__in=tenants, ends_at__gt=now).order_by("ends_at"))
    for change in open_changes:
        warnings = result[change.pk]
        freeze = _freeze_for(change, freezes, now)
        if freeze is not None:
            if change.emergency:
                message = (
                    f"Freeze until {schedule.isoz(freeze.ends_at)} ({freeze.reason}): this emergency change may "
                    "still apply and then needs a review after the fact."
                )
            else:
                message = (
                    f"Freeze until {schedule.isoz(freeze.ends_at)} ({freeze.reason}): once approved, the change "
                    "waits until the freeze ends."
                )
            warnings.append({"kind": WarningKind.FREEZE.value, "message": message})
        if change.action in (ChangeAction.CREATE, ChangeAction.UPDATE) and change.proposed:
            where = {"tenant_id": change.tenant_id, "environment_id": change.environment_id}
            for message in window_warnings(change.proposed, now=now, windows=windows, **where):
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
    return covering[-1] if covering else None
