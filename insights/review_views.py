"""The review pages of Insights: right-sizing (with "propose"), zombie jobs, overhead and efficiency.

Each page reads its parameters (a bad one: 400 naming it, nothing computed), computes from the run
history what the user may see, and answers HTML with SVG charts and tables, or CSV (``format=csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance.access import Action, can, get_object_or_404_for, record_denied
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
    csv_response,
    live_jobs,
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
    result = rightsizing.review(request.user, **values)
    if fmt == "csv" and status == 200:
        return csv_response("rightsizing", rightsizing.CSV_HEADER, rightsizing.csv_rows(result))
    rows = []
    for sizing in result.sized:
        job = sizing.job
        rows.append(
            {
                "sizing": sizing,
                "summary": sizing.summary(),
                "can_propose": can(request.user, Action.PROPOSE, job),
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
    context = {
        "result": result,
        "rows": rows,
        "chart": chart,
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
    result = zombies.review(request.user, **values)
    if fmt == "csv":
        return csv_response("zombie-jobs", zombies.CSV_HEADER, zombies.csv_rows(result))
    counts = result.counts()
    chart = bar_chart(
        [
            {"label": c["kind"].label, "value": c["n"], "text": f"{c['n']} job{'s' if c['n'] != 1 else ''}"}
            for c in counts
        ],
        unit="jobs",
    )
    context = {
        "result": result,
        "counts": counts,
        "shown": result.findings[:PAGE_FINDINGS],
        "chart": chart,
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
    result = overhead.review(request.user, **values)
    if fmt == "csv":
        return csv_response("overhead", overhead.CSV_HEADER, overhead.csv_rows(result))
    context = {
        "result": result,
        "parts": overhead.PARTS,
        "fields": _fields(request, OVERHEAD_PARAMS, values),
        "csv_query": _csv_query(request),
    }
    return render(request, OVERHEAD_TEMPLATE, context)
