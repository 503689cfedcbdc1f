"""The review pages of Insights: right-sizing (with "propose"), zombie jobs, overhead and efficiency.

Each page reads its parameters (a bad one: 400 naming it, nothing computed), computes from the run
history what the user may see, and answers HTML with SVG charts and tables, or CSV (``format=csv``)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from governance.access import Action, can, can_over, get_object_or_404_for, record_denied, tenant_ids
from governance.errors import ServiceError
from governance.services import AccessDenied

from . import overhead, rightsizing, zombies
from .common import (
    MIN_SAMPLES,
    PERIODS,
    THRESHOLD,
    TOP,
    WINDOW,
    FloatParam,
    IntParam,
    ParamError,
    bar_chart,
    cached_page,
    csv_response,
    live_jobs,
    page_tenant,
    parse_format,
    parse_params,
)


def _params(request: HttpRequest, specs: Sequence[IntParam | FloatParam]) -> tuple[dict[str, Any], str]:
    """The page's parameters and format; ValidationError naming every bad one."""
    errors: dict[str, list[str]] = {}
    fmt = "html"
    try:
        fmt = parse_format(request.GET)
    except ParamError as exc:
        errors.update(exc.as_dict())
    try:
        values = parse_params(request.GET, specs)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        values = {}
    if errors:
        raise ValidationError(errors)
    return values, fmt


def _fields(request: HttpRequest, specs: Sequence[IntParam | FloatParam], values: dict[str, Any]) -> list[dict]:
    """The parameter form: each field with the text the user typed (or the value in use)."""
    return [
        {
            "name": spec.name,
            "value": request.GET.get(spec.name, "") or values.get(spec.name, spec.default),
            "help": spec.help,
            "kind": "numeric" if isinstance(spec, IntParam) else "decimal",
        }
        for spec in specs
    ]


def _bad_request(request, template: str, specs, exc: ValidationError, extra: dict | None = None) -> HttpResponse:
    context = {"errors": exc.message_dict, "fields": _fields(request, specs, {}), "invalid": True, **(extra or {})}
    return render(request, template, context, status=400)


def _body(request: HttpRequest, template: str, kind: str, params: dict, context, *, tenant=None) -> str:
    """The page's results: rendered from ``context()`` (which reads the run history) for this reader,
    or, for a reader who sees the whole of one tenant (``tenant``), from the tenant's cached page.
    Rendered without the request: the CSRF token of its forms is a placeholder put in here."""
    placeholder = "csrf-" + secrets.token_hex(16)

    def draw() -> str:
        return render_to_string(template, {**context(), "csrf_token": placeholder, "csrf_placeholder": placeholder})

    if tenant is None:
        html = draw()
    else:
        html = cached_page(tenant, kind, params, lambda: f"{placeholder}\n{draw()}")
        placeholder, _, html = html.partition("\n")
    # The placeholder is random per rendering, so no text of a job can spell it.
    return mark_safe(html.replace(placeholder, get_token(request)))  # noqa: S308 (rendered by a template)


def _csv_query(request: HttpRequest) -> str:
    query = request.GET.copy()
    query["format"] = "csv"
    return query.urlencode()


# --- right-sizing -------------------------------------------------------------------------------------

RIGHTSIZING_PARAMS: list[IntParam | FloatParam] = [WINDOW, MIN_SAMPLES, THRESHOLD]
RIGHTSIZING_TEMPLATE = "insights/review_rightsizing.html"


def _rightsizing_page(request: HttpRequest, *, status: int = 200, error: str = "") -> HttpResponse:
    try:
        values, fmt = _params(request, RIGHTSIZING_PARAMS)
    except ValidationError as exc:
        return _bad_request(request, RIGHTSIZING_TEMPLATE, RIGHTSIZING_PARAMS, exc)
    if fmt == "csv" and status == 200:
        result = rightsizing.review(request.user, **values)
        return csv_response("rightsizing", rightsizing.CSV_HEADER, rightsizing.csv_rows(result))
    tenant = page_tenant(request.user)
    proposes = None
    if tenant is not None:
        # One cached page per tenant for readers who may propose for every job, one for those who may for none.
        proposes = can_over(request.user, Action.PROPOSE, tenant.pk)
        if not proposes and tenant.pk in tenant_ids(request.user, Action.PROPOSE):
            tenant = None

    def results() -> dict[str, Any]:
        result = rightsizing.review(request.user, **values)
        rows = []
        for sizing in result.sized:
            job = sizing.job
            rows.append(
                {
                    "sizing": sizing,
                    "summary": sizing.summary(),
                    "can_propose": proposes if tenant is not None else can(request.user, Action.PROPOSE, job),
                    "proposal": {r.resource: r.recommended for r in sizing.recommendations},
                }
            )
        chart = bar_chart(
            [
                {
                    "label": f"{s.job.name} · {r.label}",
                    "value": r.ratio if r.direction == "lower" else 1.0 / max(r.ratio, 1e-9),
                    "text": f"{r.current} → {r.recommended} {r.unit}",
                }
                for s, r in result.recommendations[:25]
            ],
            unit="×",
        )
        return {"result": result, "rows": rows, "chart": chart}

    kind = "rightsizing_page_author" if proposes else "rightsizing_page"
    context = {
        "body": _body(request, "insights/review_snippets/rightsizing_body.html", kind, values, results, tenant=tenant),
        "fields": _fields(request, RIGHTSIZING_PARAMS, values),
        "csv_query": _csv_query(request),
        "error": error,
    }
    return render(request, RIGHTSIZING_TEMPLATE, context, status=status)


@login_required
def rightsizing_page(request: HttpRequest) -> HttpResponse:
    return _rightsizing_page(request)


@login_required
@require_POST
def rightsizing_propose(request: HttpRequest, pk: int) -> HttpResponse:
    """Open a draft change request with the job's new limits and timeout (author role, as the user)."""
    job = get_object_or_404_for(request.user, Action.PROPOSE, live_jobs(), pk=pk)
    try:
        values = rightsizing.proposal_values(request.POST)
        change = rightsizing.propose_right_size(
            job, actor=request.user, values=values, justification=request.POST.get("justification", "")
        )
    except ValidationError as exc:
        text = "; ".join(f"{name}: {' '.join(m)}" for name, m in exc.message_dict.items())
        return _rightsizing_page(request, status=400, error=f"Nothing was proposed for {job.name}. {text}")
    except AccessDenied as exc:
        record_denied(request.user, Action.PROPOSE, job, reason=str(exc))
        raise PermissionDenied(str(exc)) from None
    except ServiceError as exc:
        return _rightsizing_page(
            request, status=409 if exc.conflict else 400, error=f"Nothing was proposed: {exc.reason}"
        )
    messages.success(
        request,
        f"Draft change request #{change.pk} opened for {job.name}: check the diff and submit it for review. "
        "Nothing changes until it is approved.",
    )
    return redirect("change_detail", pk=change.pk)


# --- zombie jobs ----------------------------------------------------------------------------------------

ZOMBIE_PARAMS = [WINDOW, PERIODS]
# The page lists this many findings (a tenant of thousands of idle jobs made a 7 MB page); the
# CSV and the API list every one.
PAGE_FINDINGS = 200
ZOMBIE_TEMPLATE = "insights/review_zombies.html"


@login_required
def zombies_page(request: HttpRequest) -> HttpResponse:
    try:
        values, fmt = _params(request, ZOMBIE_PARAMS)
    except ValidationError as exc:
        return _bad_request(request, ZOMBIE_TEMPLATE, ZOMBIE_PARAMS, exc)
    if fmt == "csv":
        result = zombies.review(request.user, **values)
        return csv_response("zombie-jobs", zombies.CSV_HEADER, zombies.csv_rows(result))

    def results() -> dict[str, Any]:
        result = zombies.review(request.user, **values)
        counts = result.counts()
        chart = bar_chart(
            [
                {"label": c["kind"].label, "value": c["n"], "text": f"{c['n']} job{'s' if c['n'] != 1 else ''}"}
                for c in counts
            ],
            unit="jobs",
        )
        return {"result": result, "counts": counts, "shown": result.findings[:PAGE_FINDINGS], "chart": chart}

    tenant = page_tenant(request.user)
    context = {
        "body": _body(
            request, "insights/review_snippets/zombies_body.html", "zombies_page", values, results, tenant=tenant
        ),
        "fields": _fields(request, ZOMBIE_PARAMS, values),
        "csv_query": _csv_query(request),
    }
    return render(request, ZOMBIE_TEMPLATE, context)


# --- overhead and efficiency -----------------------------------------------------------------------------

OVERHEAD_PARAMS = [WINDOW, TOP]
OVERHEAD_TEMPLATE = "insights/review_overhead.html"


@login_required
def overhead_page(request: HttpRequest) -> HttpResponse:
    try:
        values, fmt = _params(request, OVERHEAD_PARAMS)
    except ValidationError as exc:
        return _bad_request(request, OVERHEAD_TEMPLATE, OVERHEAD_PARAMS, exc)
    if fmt == "csv":
        result = overhead.review(request.user, **values)
        return csv_response("overhead", overhead.CSV_HEADER, overhead.csv_rows(result))

    def results() -> dict[str, Any]:
        return {"result": overhead.review(request.user, **values), "parts": overhead.PARTS}

    tenant = page_tenant(request.user)
    context = {
        "body": _body(
            request, "insights/review_snippets/overhead_body.html", "overhead_page", values, results, tenant=tenant
        ),
        "fields": _fields(request, OVERHEAD_PARAMS, values),
        "csv_query": _csv_query(request),
    }
    return render(request, OVERHEAD_TEMPLATE, context)
