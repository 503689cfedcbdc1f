"""Insights pages (/insights/...): the index with a tab per page, the capacity forecast and the
thundering herds (with "propose stagger"). Pages read the cache (insights.models); a stale or
missing entry is computed on the way, ``Refresh`` recomputes on demand."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.access import Action, record_denied, tenant_ids

from . import capacity, forecast, herds
from .common import (
    InsightScope,
    ParamError,
    cached,
    csv_response,
    forget_pages,
    insight_tenants,
    scope_for,
    wants_csv,
)
from .models import InsightCache
from .services import propose_stagger

# Every Insights page: (url name, tab label, what it answers). Pages of other parts of issue 21
# appear once their url names exist.
PAGES = [
    (
        "insights_capacity",
        "Capacity forecast",
        "Expected concurrency per pool, month-end and holiday peaks, overflows.",
    ),
    ("insights_herds", "Thundering herds", "Minutes where many runs start, and H rewrites that spread them."),
    ("insights_rightsizing", "Right-sizing", "Limits and timeouts against what runs really use."),
    ("insights_zombies", "Zombie jobs", "Jobs that fail, run for nobody or belong to no one."),
    ("insights_overhead", "Overhead", "Queue wait, startup and recording per run; the scheduler's lag."),
]
# Someone may ask for a recomputation at most this often per tenant and horizon.
REFRESH_COOLDOWN = timedelta(minutes=1)


def tabs(current: str, tenant_slug: str = "") -> list[dict]:
    """The Insights tabs whose pages exist (by url name), the current one marked."""
    found = []
    for name, label, about in PAGES:
        try:
            url = reverse(name)
        except NoReverseMatch:
            continue
        if tenant_slug:
            url += f"?tenant={tenant_slug}"
        found.append({"name": name, "label": label, "about": about, "url": url, "current": name == current})
    return found


def _common(request, scope: InsightScope | None, current: str) -> dict:
    tenants = insight_tenants(request.user)
    return {
        "tabs": tabs(current, scope.tenant.slug if scope and len(tenants) > 1 else ""),
        "tenants": tenants,
        "tenant": scope.tenant if scope else None,
        "narrowed": bool(scope and not scope.full),
    }


def _scope_or_none(request) -> InsightScope | None:
    """The reader's scope, or None for a reader of no tenant (the pages say so); a named tenant the
    reader cannot see is a 404."""
    if not request.GET.get("tenant") and not insight_tenants(request.user):
        return None
    return scope_for(request.user, request.GET)


@login_required
def index(request):
    scope = _scope_or_none(request)
    context = _common(request, scope, "insights_index")
    if scope is not None:
        context["entries"] = {
            (e.kind, e.horizon_days): e
            for e in InsightCache.objects.filter(tenant=scope.tenant).only(
                "kind", "horizon_days", "computed_at", "compute_ms", "tenant_id"
            )
        }
        context["capacity_entry"] = context["entries"].get((forecast.KIND, capacity.DEFAULT_HORIZON))
        context["herds_entry"] = context["entries"].get((herds.KIND, herds.HORIZON_DAYS))
    return render(request, "insights/index.html", context)


@login_required
def capacity_page(request):
    scope = _scope_or_none(request)
    context = _common(request, scope, "insights_capacity")
    params = request.GET
    context["filters"] = {k: params.get(k, "") for k in ("horizon", "pool", "environment")}
    if scope is None:
        return render(request, "insights/capacity.html", context)
    errors: dict[str, list[str]] = {}
    horizon = capacity.DEFAULT_HORIZON
    pool = environment = None
    csv_wanted = False
    try:
        horizon = capacity.parse_horizon(params)
    except ParamError as exc:
        errors.update(exc.as_dict())
    try:
        pool, environment = capacity.parse_filters(scope, params)
    except ParamError as exc:
        errors.update(exc.as_dict())
    try:
        csv_wanted = wants_csv(params)
    except ParamError as exc:
        errors.update(exc.as_dict())
    context.update(_choices(scope))
    if errors:
        context["errors"] = errors
        return render(request, "insights/capacity.html", context, status=400)
    entry = capacity.entry_for(scope, horizon)
    found = capacity.read(entry, scope, pool, environment, detail=None if csv_wanted else capacity.MAX_CHARTS)
    if csv_wanted:
        return _capacity_csv(scope, found)
    for group in found["groups"][: capacity.MAX_CHARTS]:
        group["chart"] = capacity.chart(group, found["start"], found["days_all"])
    context.update(found)
    context["horizon"] = horizon
    context["charted"] = found["groups"][: capacity.MAX_CHARTS]
    return render(request, "insights/capacity.html", context)


def _choices(scope: InsightScope) -> dict:
    from governance.models import Environment
    from jobs.models import Pool

    envs = [e for e in Environment.objects.filter(tenant=scope.tenant).order_by("order") if scope.covers(None, e.pk)]
    visible = {e.pk for e in envs}
    pools = sorted({p.name for p in Pool.objects.filter(tenant=scope.tenant) if p.environment_id in visible})
    return {"environments": envs, "pools": pools, "horizons": forecast.HORIZONS}


def _capacity_csv(scope: InsightScope, found: dict) -> HttpResponse:
    days = found["days_all"]

    def rows():
        for group in found["groups"]:
            for index, (low, high) in enumerate(zip(group["p50"], group["p90"], strict=True)):
                at = found["start"] + timedelta(seconds=index * forecast.BUCKET_S)
                day = (at.date() - found["start"].date()).days
                flags = days[day]["flags"] if day < len(days) else []
                yield [
                    at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    group["pool"],
                    group["environment"],
                    round(low, 3),
                    round(high, 3),
                    group["slots"],
                    "yes" if group["slots"] is not None and low > group["slots"] + 1e-9 else "",
                    " ".join(flags),
                ]

    name = f"capacity-{scope.tenant.slug}-{found['horizon_days']}d"
    header = ["bucket_start", "pool", "environment", "expected_p50", "expected_p90", "slots", "over", "peaks"]
    return csv_response(name, header, rows())


@login_required
def herds_page(request):
    scope = _scope_or_none(request)
    context = _common(request, scope, "insights_herds")
    context["filters"] = {"threshold": request.GET.get("threshold", "")}
    if scope is None:
        return render(request, "insights/herds.html", context)
    try:
        threshold = herds.parse_threshold(request.GET)
        csv_wanted = wants_csv(request.GET)
    except ParamError as exc:
        context["errors"] = exc.as_dict()
        return render(request, "insights/herds.html", context, status=400)
    if csv_wanted:
        return _herds_csv(scope, herds.analyse(herds_entry(scope), scope, threshold))
    if scope.full and threshold == herds.DEFAULT_THRESHOLD:
        view = cached(
            scope.tenant,
            herds.VIEW_KIND,
            herds.HORIZON_DAYS,
            lambda: herds.store_view(herds_entry(scope)),
            params=herds.VIEW_PARAMS,
        )
        context.update(view.data)
        context["computed_at"] = view.computed_at
    elif scope.full:
        view = cached(
            scope.tenant,
            herds.ASKED_VIEW_KIND,
            herds.HORIZON_DAYS,
            lambda: herds.store_asked_view(herds_entry(scope), threshold),
            params=herds.asked_view_params(threshold, herds.analysed_at(scope.tenant)),
        )
        context.update(view.data)
        context["computed_at"] = view.computed_at
    else:
        context.update(herds.page(herds_entry(scope), scope, threshold))
    context["can_propose"] = request.user.is_superuser or scope.tenant.pk in tenant_ids(request.user, Action.PROPOSE)
    context["job_url"] = reverse("job_detail", args=[0]).removesuffix("0/")
    return render(request, "insights/herds.html", context)


def herds_entry(scope: InsightScope, *, refresh: bool = False):
    return cached(
        scope.tenant,
        herds.KIND,
        herds.HORIZON_DAYS,
        lambda: forecast.compute(scope.tenant, herds.HORIZON_DAYS, herds=True)[herds.KIND],
        refresh=refresh,
        params={"horizon_days": herds.HORIZON_DAYS},
    )


def _herds_csv(scope: InsightScope, found: dict) -> HttpResponse:
    def rows():
        for spot in found["hotspots"]:
            for job in spot["jobs"]:
                yield [
                    spot["at"],
                    spot["starts"],
                    spot["after"],
                    job["job"],
                    job["name"],
                    job["cron"],
                    job["suggested"],
                ]

    header = ["minute_utc", "starts_per_day", "starts_per_day_after", "job_id", "job", "cron", "suggested_cron"]
    return csv_response(f"herds-{scope.tenant.slug}", header, rows())


@login_required
@require_POST
def herds_propose(request):
    """Propose the suggested H rewrite of the chosen jobs: one change request each, by the reader,
    reviewed as any other change (nothing is applied here)."""
    scope = scope_for(request.user, request.POST)
    if not (request.user.is_superuser or scope.tenant.pk in tenant_ids(request.user, Action.PROPOSE)):
        reason = "Proposing a stagger needs the author role in the tenant."
        record_denied(request.user, Action.PROPOSE, scope.tenant, reason=reason)
        raise PermissionDenied(reason)
    ids = [int(v) for v in request.POST.getlist("job") if v.isascii() and v.isdigit() and len(v) < 12]
    minutes = [int(v) for v in request.POST.getlist("all_at") if v.isascii() and v.isdigit() and int(v) < herds.MINUTES]
    if minutes:
        entry = herds_entry(scope)
        for minute in minutes:
            ids += herds.jobs_at(entry, scope, minute)
    query = {"tenant": scope.tenant.slug}
    if request.POST.get("threshold"):
        query["threshold"] = request.POST["threshold"][:20]
    target = reverse("insights_herds") + "?" + urlencode(query)
    if not ids:
        messages.error(request, "Choose at least one job to stagger.")
        return redirect(target)
    created, refused = propose_stagger(
        actor=request.user, tenant=scope.tenant, job_ids=ids, justification=request.POST.get("justification", "")
    )
    if created:
        messages.success(
            request,
            f"{len(created)} change request{'s' if len(created) != 1 else ''} opened for review: "
            + ", ".join(f"#{c.pk}" for c in created)
            + ".",
        )
    for name, why in refused:
        messages.error(request, f"{name}: {why}")
    return redirect(target)


@login_required
@require_POST
def refresh(request):
    """Recompute the tenant's forecast (both horizons and the herds) now, unless it was just done."""
    scope = scope_for(request.user, request.POST)
    recent = InsightCache.objects.filter(
        tenant=scope.tenant, kind=forecast.KIND, computed_at__gt=timezone.now() - REFRESH_COOLDOWN
    ).exists()
    if recent:
        messages.info(request, "The insights were computed less than a minute ago.")
    else:
        forecast.refresh([scope.tenant])
        forget_pages(scope.tenant)
        messages.success(request, f"Insights of {scope.tenant.name} recomputed.")
    back = request.POST.get("next") or ""
    if not back.startswith("/insights/") or "//" in back:
        back = reverse("insights_index")
    return redirect(back)
