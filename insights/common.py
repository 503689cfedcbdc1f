"""What every Insights page shares: whose data a reader sees, which tenant a page is about, bad
parameters as 400s naming the parameter, the cache of computed results, and the CSV export.

Access (``InsightScope``): the pages are for the viewers of a tenant (any role in it). A reader
whose roles are narrowed to some teams and/or environments sees only the rows of the jobs those
roles cover; ``InsightScope.covers(team_id, environment_id)`` decides each row, through
``governance.access``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone

from governance import access
from governance.access import Action
from governance.export import csv_safe
from governance.models import Tenant
from jobs.models import Job, Pool

from .models import InsightCache

# A cached result older than this is recomputed when a page asks for it (the nightly refresh
# normally keeps it younger).
MAX_AGE = timedelta(hours=settings.GOVERNOR_INSIGHTS_MAX_AGE_HOURS)


class ParamError(ValueError):
    """A query parameter that cannot be used: HTTP 400 naming ``field`` (the UI shows ``message``
    beside the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field: [self.message]}


@dataclass(frozen=True)
class InsightScope:
    """What one reader may see of one tenant's insights."""

    user: Any
    tenant: Tenant
    # True when a grant covers the whole tenant (or a superuser): no row needs checking.
    full: bool

    def covers(self, team_id: Any, environment_id: Any) -> bool:
        return self.full or access.can_in(self.user, Action.VIEW, self.tenant.pk, team_id, environment_id)

    def visible(self, rows: Iterable[dict], team: str = "team", environment: str = "env") -> list[dict]:
        """The rows (dicts with team and environment ids) this reader may see."""
        if self.full:
            return list(rows)
        return [row for row in rows if self.covers(row.get(team), row.get(environment))]


def insight_tenants(user: Any) -> list[Tenant]:
    """The tenants whose insights the user may read (any role in them), by slug."""
    return list(access.restrict(Tenant.objects.all(), user).order_by("slug"))


def scope_for(user: Any, params: Any) -> InsightScope:
    """The tenant a page is about (``?tenant=<slug>``, else the reader's first) and the reader's
    scope in it. A tenant the reader may not see is the same 404 as one that does not exist."""
    tenants = insight_tenants(user)
    slug = (params.get("tenant") or "").strip()
    if slug:
        tenants = [t for t in tenants if t.slug == slug]
    if not tenants:
        raise Http404("No such tenant.")
    tenant = tenants[0]
    return InsightScope(user, tenant, access.can_over(user, Action.VIEW, tenant.pk))


# --- the cache -----------------------------------------------------------------------------


def is_stale(entry: InsightCache | None, *, now: datetime | None = None, params: dict | None = None) -> bool:
    """Missing, older than MAX_AGE, computed with other parameters, or a job or pool of its tenant
    changed since it was computed (two indexed EXISTS queries)."""
    if entry is None:
        return True
    now = now or timezone.now()
    if entry.computed_at < now - MAX_AGE:
        return True
    if params is not None and entry.params != params:
        return True
    changed = Job.objects.filter(tenant_id=entry.tenant_id, updated_at__gt=entry.computed_at).exists()
    return changed or Pool.objects.filter(tenant_id=entry.tenant_id, updated_at__gt=entry.computed_at).exists()


def cached(
    tenant: Tenant,
    kind: str,
    horizon_days: int,
    compute: Callable[[], InsightCache],
    *,
    refresh: bool = False,
    params: dict | None = None,
) -> InsightCache:
    """The cached result of ``kind`` for the tenant, recomputed (``compute()`` saves and returns it)
    when asked (``refresh``) or stale."""
    entry = InsightCache.objects.filter(tenant=tenant, kind=kind, horizon_days=horizon_days).first()
    if entry is None or refresh or is_stale(entry, params=params):
        return compute()
    return entry


def store(tenant: Tenant, kind: str, horizon_days: int, *, params: dict, data: dict, started: float) -> InsightCache:
    """Save a computed result (replacing the previous one of its tenant, kind and horizon)."""
    import time

    entry, _ = InsightCache.objects.update_or_create(
        tenant=tenant,
        kind=kind,
        horizon_days=horizon_days,
        defaults={
            "params": params,
            "computed_at": timezone.now(),
            "compute_ms": round((time.perf_counter() - started) * 1000, 1),
            "data": data,
        },
    )
    return entry


# --- CSV -----------------------------------------------------------------------------------


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> HttpResponse:
    """A CSV download; text cells a spreadsheet would evaluate (=, +, -, @ ...) are neutralised,
    since job names and pools are written by tenant authors."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_safe(v) if isinstance(v, str) else ("" if v is None else v) for v in row])
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def wants_csv(params: Any) -> bool:
    return (params.get("format") or "").lower() == "csv"
