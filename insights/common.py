"""What every Insights page shares: whose data a reader sees (``InsightScope``, ``visible_jobs``),
which tenant a page is about, query parameters (a bad one is a 400 naming it), the cache of computed
results, percentiles and sizes people write, the CSV export, and the geometry of the server-rendered
SVG charts.

Access (``InsightScope``): the pages are for the viewers of a tenant (any role in it). A reader
whose roles are narrowed to some teams and/or environments sees only the rows of the jobs those
roles cover; ``InsightScope.covers(team_id, environment_id)`` decides each row, through
``governance.access``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.utils import timezone

from governance import access
from governance.access import Action
from governance.export import csv_safe
from governance.models import Tenant
from jobs.models import Job, JobStatus, Pool

from .models import InsightCache

# A cached result older than this is recomputed when a page asks for it (the nightly refresh
# normally keeps it younger).
MAX_AGE = timedelta(hours=settings.GOVERNOR_INSIGHTS_MAX_AGE_HOURS)
# The review pages (right-sizing, zombies, overhead) read recent run history: their cached results
# are recomputed this often (and when a job or pool changes, or on "Recompute now").
PAGE_MAX_AGE = timedelta(minutes=15)
# Their kinds in the cache (one entry per tenant and kind: the last parameters asked).
PAGE_KINDS = ("rightsizing_page", "rightsizing_page_author", "zombies_page", "overhead_page")


class ParamError(ValidationError):
    """A query parameter that cannot be used: HTTP 400 naming ``field`` (the UI shows ``message``
    beside the field). A ValidationError, so the API answers it as any other 400."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field: [str(self.message)]}


# --- query parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class IntParam:
    name: str
    default: int
    low: int
    high: int
    help: str


@dataclass(frozen=True)
class FloatParam:
    name: str
    default: float
    low: float
    high: float
    help: str


WINDOW = IntParam("window", 30, 1, 366, "Days of run history to read (1-366).")
MIN_SAMPLES = IntParam("min_samples", 10, 1, 1000, "Runs with figures a job needs before a recommendation (1-1000).")
THRESHOLD = FloatParam(
    "threshold", 2.0, 1.1, 100.0, "A limit is oversized when it is at least this many times the recommendation."
)
PERIODS = IntParam("periods", 5, 1, 1000, "A job's last N runs (its last N periods) without a success (1-1000).")
TOP = IntParam("top", 10, 1, 100, "Jobs listed in each top list (1-100).")
HORIZON = IntParam("horizon", 30, 1, 366, "Days ahead, 1-366 (30 and 90 are refreshed nightly).")
HERD_THRESHOLD = FloatParam(
    "threshold", 10.0, 1.0, 100_000.0, "Starts per day at one minute above which it is a hotspot (1-100000)."
)
FORMATS = ("html", "csv")


def parse_param(params: Any, spec: IntParam | FloatParam) -> Any:
    """One parameter from a query dict (its default when absent or blank); ParamError naming it when
    it does not parse (ASCII digits only) or is out of range."""
    raw = params.get(spec.name)
    if raw is None or str(raw).strip() == "":
        return spec.default
    text = str(raw).strip()
    whole = isinstance(spec, IntParam)
    message = f"Must be {'a whole number' if whole else 'a number'} between {spec.low:g} and {spec.high:g}; got {text[:40]!r}."
    if not text.isascii() or len(text) > 40:
        raise ParamError(spec.name, message)
    try:
        value: float = int(text) if whole else float(text)
    except ValueError:
        raise ParamError(spec.name, message) from None
    if not math.isfinite(value) or not spec.low <= value <= spec.high:
        raise ParamError(spec.name, message)
    return value


def parse_params(params: Any, specs: Sequence[IntParam | FloatParam]) -> dict[str, Any]:
    """The parameters ``specs`` from a query dict, defaults for those absent; ValidationError naming
    each parameter that does not parse or is out of range (nothing else is read)."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for spec in specs:
        try:
            values[spec.name] = parse_param(params, spec)
        except ParamError as exc:
            errors.update(exc.as_dict())
    if errors:
        raise ValidationError(errors)
    return values


def parse_format(params: Any) -> str:
    """``?format=``: html (default) or csv; anything else a ParamError naming ``format``."""
    fmt = (params.get("format") or "html").strip().lower()
    if fmt not in FORMATS:
        raise ParamError("format", f"Must be one of: {', '.join(FORMATS)}.")
    return fmt


def wants_csv(params: Any) -> bool:
    return parse_format(params) == "csv"


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


def live_jobs() -> QuerySet[Job]:
    """Jobs not deleted (for ``get_object_or_404_for``, which restricts them itself and records a
    probe of another tenant's job)."""
    return Job.objects.exclude(status=JobStatus.DELETED)


def visible_jobs(user: Any) -> QuerySet[Job]:
    """The live jobs the user may see (narrowed roles: their team and environment only)."""
    return access.restrict(live_jobs(), user)


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


def is_stale(
    entry: InsightCache | None,
    *,
    now: datetime | None = None,
    params: dict | None = None,
    max_age: timedelta = MAX_AGE,
) -> bool:
    """Missing, older than ``max_age``, computed with other parameters, or a job or pool of its
    tenant changed since it was computed (two indexed EXISTS queries)."""
    if entry is None:
        return True
    now = now or timezone.now()
    if entry.computed_at < now - max_age:
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


def page_tenant(user: Any) -> Tenant | None:
    """The tenant of a review page's reader when a cached page serves them: they read exactly one
    tenant and see all of it (their page is the tenant-wide one). None: the page is worked out for
    them."""
    tenants = insight_tenants(user)
    if len(tenants) != 1 or not access.can_over(user, Action.VIEW, tenants[0].pk):
        return None
    return tenants[0]


def cached_page(tenant: Tenant, kind: str, params: dict, render: Callable[[], str]) -> str:
    """The HTML of a review page's results as a tenant-wide reader sees it, from the cache when it is
    younger than PAGE_MAX_AGE, asked with the same ``params`` and no job or pool changed since;
    else ``render()`` (which reads the run history) and stored."""
    entry = InsightCache.objects.filter(tenant=tenant, kind=kind, horizon_days=0).first()
    if entry is not None and not is_stale(entry, params=params, max_age=PAGE_MAX_AGE):
        return entry.data["html"]
    started = time.perf_counter()
    html = render()
    store(tenant, kind, 0, params=params, data={"html": html}, started=started)
    return html


def forget_pages(tenant: Tenant) -> None:
    """Drop the tenant's cached review pages ("Recompute now")."""
    InsightCache.objects.filter(tenant=tenant, kind__in=PAGE_KINDS).delete()


# --- figures ------------------------------------------------------------------------------------


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of an ascending sequence (linear interpolation; 0 when it is empty): the
    forecast's expected durations."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (q in 0..1); None when it is empty: the review
    pages' figures."""
    if not ordered:
        return None
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1]


# Sizes people write: powers of two and the steps half-way between them.
MEMORY_STEPS_MB = sorted({base * mult for base in (2**k for k in range(5, 21)) for mult in (2, 3)} | {64})
SECOND_STEPS = [30, 60, 120, 180, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600, 28800]


def round_up_mb(value: float, *, floor: int = 64) -> int:
    """The smallest memory size of MEMORY_STEPS_MB at or above ``value`` (and ``floor``)."""
    value = max(value, floor)
    for step in MEMORY_STEPS_MB:
        if step >= value:
            return int(step)
    return int(math.ceil(value / 1024) * 1024)


def round_up_seconds(value: float, *, floor: int = 30) -> int:
    """The smallest duration of SECOND_STEPS at or above ``value`` (and ``floor``); whole hours beyond."""
    value = max(value, floor)
    for step in SECOND_STEPS:
        if step >= value:
            return step
    return int(math.ceil(value / 3600) * 3600)


def utc_text(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


# --- CSV ------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return utc_text(value)
    if isinstance(value, str):
        # A cell a spreadsheet would run as a formula (job names, pools, messages come from authors).
        return csv_safe(value)
    return value


def csv_response(stem: str, header: Sequence[str], rows: Iterable[Iterable[Any]]) -> HttpResponse:
    """A CSV download named ``<stem>-<UTC time>.csv``, never stored by a cache; text cells a
    spreadsheet would evaluate (=, +, -, @ ...) are neutralised, date-times written in UTC."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    out = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    out["Content-Disposition"] = f'attachment; filename="{stem}-{stamp}.csv"'
    out["Cache-Control"] = "no-store"
    return out


# --- SVG chart geometry (templates/insights/) -------------------------------------------

CHART_LEFT = 56
CHART_RIGHT = 12
CHART_TOP = 10
CHART_BOTTOM = 24
# Line styles and markers: series differ by dash and marker shape, never by colour alone.
SERIES_STYLES = [
    {"dash": "", "marker": "square"},
    {"dash": "6 4", "marker": "circle"},
    {"dash": "2 3", "marker": "triangle"},
    {"dash": "10 3 2 3", "marker": "diamond"},
]


def _nice_top(peak: float) -> float:
    if peak <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= peak:
            return step * magnitude
    return 10 * magnitude


def scale_ticks(top: float, *, steps: int = 5) -> list[float]:
    """Round values from 0 up to ``top`` for an axis (1, 2, 5, 10, 20, 50 ... apart, at most
    ``steps`` + 1 of them)."""
    step = 1.0
    for magnitude in range(0, 7):
        for base in (1, 2, 5):
            step = base * 10**magnitude
            if top / step <= steps:
                return [i * step for i in range(int(top // step) + 1)]
    return [i * step for i in range(int(top // step) + 1)]


def _marker_path(shape: str, x: float, y: float, r: float = 3.5) -> str:
    if shape == "circle":
        return f"M{x - r:.1f},{y:.1f}a{r},{r} 0 1,0 {2 * r},0a{r},{r} 0 1,0 {-2 * r},0"
    if shape == "triangle":
        return f"M{x:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}L{x - r:.1f},{y + r:.1f}Z"
    if shape == "diamond":
        return f"M{x:.1f},{y - r:.1f}L{x + r:.1f},{y:.1f}L{x:.1f},{y + r:.1f}L{x - r:.1f},{y:.1f}Z"
    return f"M{x - r:.1f},{y - r:.1f}h{2 * r}v{2 * r}h{-2 * r}Z"


def compact(value: float) -> str:
    """An axis label: 2.5, 750, 25k, 2.5M."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def line_chart(
    days: Sequence[date], series: Sequence[dict[str, Any]], *, unit: str, width: int = 960, height: int = 220
) -> dict[str, Any]:
    """Geometry of a daily line chart: ``series`` are {"label", "values"} (one value or None per day).
    Each series has its own dash and marker shape; every point carries its number as a <title>."""
    plot_w = width - CHART_LEFT - CHART_RIGHT
    plot_h = height - CHART_TOP - CHART_BOTTOM
    peak = max((v for s in series for v in s["values"] if v is not None), default=0.0)
    top = _nice_top(peak)
    step = plot_w / max(len(days) - 1, 1)

    def xy(index: int, value: float) -> tuple[float, float]:
        return CHART_LEFT + index * step, CHART_TOP + plot_h - value / top * plot_h

    drawn = []
    for position, item in enumerate(series):
        style = SERIES_STYLES[position % len(SERIES_STYLES)]
        points = []
        markers = []
        for index, value in enumerate(item["values"]):
            if value is None:
                continue
            x, y = xy(index, value)
            points.append(f"{x:.1f},{y:.1f}")
            markers.append({"d": _marker_path(style["marker"], x, y), "day": days[index], "value": value})
        drawn.append(
            {
                "label": item["label"],
                "points": " ".join(points),
                "dash": style["dash"],
                "marker": style["marker"],
                "markers": markers,
                "legend_d": _marker_path(style["marker"], 14, 6),
                "slot": position,
            }
        )
    ticks_y = [
        {
            "y": round(CHART_TOP + plot_h - fraction * plot_h, 1),
            "value": top * fraction,
            "label": compact(top * fraction),
        }
        for fraction in (0, 0.25, 0.5, 0.75, 1)
    ]
    every = max(1, math.ceil(len(days) / 8))
    ticks_x = [{"x": round(xy(i, 0)[0], 1), "day": d} for i, d in enumerate(days) if i % every == 0]
    return {
        "width": width,
        "height": height,
        "left": CHART_LEFT,
        "right": width - CHART_RIGHT,
        "bottom": CHART_TOP + plot_h,
        "series": drawn,
        "ticks_y": ticks_y,
        "ticks_x": ticks_x,
        "tick_label_y": height - 6,
        "unit": unit,
        "days": list(days),
        "empty": peak == 0 and not any(s["markers"] for s in drawn),
    }


def bar_chart(rows: Sequence[dict[str, Any]], *, unit: str, width: int = 960, limit: float | None = None) -> dict:
    """Geometry of a horizontal bar chart: ``rows`` are {"label", "value", "text"} drawn largest first;
    the value is written beside each bar, so the chart reads without colour (and as text)."""
    label_w, text_w, bar_h, gap = 340, 250, 14, 6
    plot_w = width - label_w - text_w
    top = limit if limit is not None else max((r["value"] for r in rows), default=0.0)
    top = top or 1.0
    bars = []
    for index, row in enumerate(rows):
        y = index * (bar_h + gap) + 4
        bars.append(
            {
                **row,
                "y": y,
                "text_y": y + bar_h - 3,
                "w": round(max(min(row["value"] / top, 1.0) * plot_w, 1.5), 1) if row["value"] else 0,
            }
        )
    return {
        "width": width,
        "height": max(len(rows), 1) * (bar_h + gap) + 8,
        "label_w": label_w,
        "bar_x": label_w,
        "text_x": label_w + plot_w + 6,
        "bar_h": bar_h,
        "bars": bars,
        "unit": unit,
    }
