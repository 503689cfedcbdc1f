"""Pages for watching jobs (issue 17): the runs list, the now page, and the fragments live pages
poll (htmx) while something is queued or running. They read jobs and governance models only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from governance.access import restrict
from governance.models import Environment, Team, Tenant
from governance.paging import CURSOR_ERROR, time_page

from .filters import RunFilter
from .models import Job, Run, RunStatus, TriggerKind
from .run_scope import restrict_runs
from .watch import now_board, timeline


def scope_choices(user) -> dict:
    """The tenants, teams and environment slugs the user may see: the choices of a list's filters."""
    environments = restrict(Environment.objects.all(), user).values_list("slug", flat=True).distinct().order_by()
    return {
        "tenants": list(restrict(Tenant.objects.all(), user)),
        "teams": list(restrict(Team.objects.select_related("tenant"), user)),
        "environment_slugs": sorted(set(environments)),
    }


RUN_FILTERS = ("job", "status", "trigger", "tenant", "team", "environment", "since", "until")
PANEL_LIMIT = 8


def now_panel_context(user) -> dict:
    """What the dashboard's now panel (``jobs/snippets/now_panel.html``) needs: include the
    template and merge this into the dashboard's context."""
    return {"now_board": now_board(user, limit=PANEL_LIMIT), "now_panel": True}


@login_required
def run_list(request):
    """Every run the user may see, newest first, filtered exactly as ``GET /api/v1/runs/``.

    A filter value that does not parse answers 400 with the message beside its field, and no
    runs (the API refuses it the same way)."""
    user = request.user
    runs = restrict_runs(
        Run.objects.select_related("job", "job__environment", "job__team", "job__tenant", "triggered_by").defer(
            "output", "definition", "job__command", "job__runbook", "job__description"
        ),
        user,
    ).order_by("-scheduled_for", "-id")
    filterset = RunFilter(request.GET, queryset=runs, request=request)
    valid = filterset.is_valid()
    errors = {name: [str(e) for e in errors] for name, errors in filterset.errors.items()}
    try:
        page = time_page(filterset.qs if valid else Run.objects.none(), request.GET, "scheduled_for")
    except ValueError:
        valid = False
        errors["before" if request.GET.get("before") else "after"] = [CURSOR_ERROR]
        page = time_page(Run.objects.none(), {}, "scheduled_for")
    job = None
    job_id = request.GET.get("job", "")
    if valid and job_id.isdigit():
        job = restrict(Job.objects.only("id", "name", "tenant_id", "team_id", "environment_id"), user).filter(
            pk=int(job_id)
        )
        job = job.first()
    context = {
        "page": page,
        "runs": page.object_list,
        "errors": errors,
        "filters": {name: request.GET.get(name, "") for name in RUN_FILTERS},
        "selected_statuses": request.GET.getlist("status"),
        "filtered": any(request.GET.get(name) for name in RUN_FILTERS),
        "job": job,
        **scope_choices(user),
        "statuses": RunStatus.choices,
        "triggers": TriggerKind.choices,
    }
    return render(request, "jobs/run_list.html", context, status=200 if valid else 400)


@login_required
def now_page(request):
    """What runs now, waits, is deferred (and why) or is late, and the last 24 hours per job."""
    now = timezone.now()
    context = {"now_board": now_board(request.user, now), "gantt": timeline(request.user, now=now)}
    return render(request, "jobs/now.html", context)


@login_required
def now_fragment(request, variant: str):
    """The live part of the now page (``board``) or of the dashboard (``panel``), polled by htmx."""
    if variant == "panel":
        return render(request, "jobs/snippets/now_panel.html", now_panel_context(request.user))
    return render(request, "jobs/snippets/now_board.html", {"now_board": now_board(request.user)})
