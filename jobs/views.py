"""Job and run pages: list, detail, and the operator actions trigger, pause, resume, cancel."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Q, Subquery
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance.access import Action, can, get_object_or_404_for, restrict
from governance.models import Team
from governance.paging import BoundedPaginator
from governance.ui_errors import UIError, service_errors

from . import hooks, pools
from .definitions import diff
from .forms import ReasonForm
from .graph import dependency_graph
from .models import DEFINITION_FIELDS, Criticality, Job, JobStatus, Pool, Run, RunStatus
from .output_reads import note_output_viewed
from .preview import preview_definition
from .services import (
    FAILED_STEP,
    RERUNNABLE,
    cancel_run,
    mark_run_succeeded,
    pause_requires_change,
    rerun_failed_steps,
    rerun_run,
    set_paused,
    trigger_run,
)
from .watch import (
    ACTIVE_STATUSES,
    FAILED_STATUSES,
    job_poll,
    last_runs,
    paused_by,
    timeline,
    trigger_reason,
    with_strip_cutoff,
)
from .watch_views import scope_choices

OPEN_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.SCHEDULED, RunStatus.DEFERRED, RunStatus.RUNNING)


@login_required
def job_list(request):
    user = request.user
    params = request.GET
    last_run = Run.objects.filter(job=OuterRef("pk")).order_by("-scheduled_for", "-id")
    jobs = restrict(Job.objects.select_related("tenant", "team", "environment"), user).annotate(
        last_run_status=Subquery(last_run.values("status")[:1]),
        last_run_at=Subquery(last_run.values("scheduled_for")[:1]),
        last_run_id=Subquery(last_run.values("id")[:1]),
    )
    status = params.get("status", "")
    jobs = jobs.filter(status=status) if status in JobStatus.values else jobs.exclude(status=JobStatus.DELETED)
    if params.get("tenant"):
        jobs = jobs.filter(tenant__slug=params["tenant"])
    if params.get("team", "").isdigit():
        jobs = jobs.filter(team_id=int(params["team"]))
    if params.get("environment"):
        jobs = jobs.filter(environment__slug=params["environment"])
    if params.get("criticality"):
        jobs = jobs.filter(criticality=params["criticality"])
    q = params.get("q", "").strip()
    if q:
        jobs = jobs.filter(Q(name__icontains=q) | Q(description__icontains=q))
    jobs = jobs.order_by("tenant__slug", "environment__order", "name")
    # Keys first: the last-run and strip annotations are computed for the 50 jobs shown only.
    page = BoundedPaginator(with_strip_cutoff(jobs), 50, keys_first_from=0).get_page(params.get("page"))
    listed = list(page.object_list)
    # One query for every strip on the page (each job's newest 20 runs).
    strips = last_runs(listed)
    for job in listed:
        job.strip = strips[job.pk]
    context = {
        "page": page,
        "jobs": listed,
        **scope_choices(user),
        "statuses": JobStatus.choices,
        "criticalities": Criticality.choices,
        "filters": {k: params.get(k, "") for k in ("tenant", "team", "environment", "status", "criticality", "q")},
        "filtered": any(params.get(k) for k in ("tenant", "team", "environment", "status", "criticality", "q")),
        "can_propose": bool(restrict(Team.objects.all(), user, Action.PROPOSE).exists()),
    }
    return render(request, "jobs/job_list.html", context)


def _versions(job: Job) -> list[dict]:
    """Every version of the job's definition, newest first, with its diff (change control adds the
    request that made it: ``approvals.job_page``)."""
    records = list(job.history.select_related("history_user").order_by("history_date", "history_id"))
    versions: list[dict] = []
    for record in records:
        if versions and versions[-1]["version"] == record.version:
            continue
        definition = {field: getattr(record, field) for field in DEFINITION_FIELDS}
        previous = versions[-1]["definition"] if versions else None
        versions.append(
            {
                "version": record.version,
                "date": record.history_date,
                "user": record.history_user,
                "reason": record.history_change_reason,
                "status": record.status,
                "change_request_id": record.change_request_id,
                "definition": definition,
                "changes": diff(previous, definition) if previous is not None else [],
                "deleted": record.status == JobStatus.DELETED,
            }
        )
    versions.reverse()
    return versions


EXTRA_FIELDS = ("parameters", "limits", "retry", "http", "heartbeat", "dependencies")


def _extra_settings(job: Job) -> list[dict]:
    """Execution settings that are set, pretty-printed (the form shows the common ones)."""
    rows = []
    for field in EXTRA_FIELDS:
        value = getattr(job, field, None)
        if value in (None, {}, []):
            continue
        rows.append({"field": field, "value": json.dumps(value, indent=2, sort_keys=True)})
    return rows


def _job_page(request, job: Job, *, forms: dict | None = None, status: int = 200):
    """The job page; ``forms`` carries a refused action's form (trigger, pause, resume) to show its errors."""
    user = request.user
    forms = forms or {}
    runs = _recent_runs(job)
    upcoming = (
        preview_definition(job.definition(), tenant_id=job.tenant_id, environment_id=job.environment_id)
        if job.status != JobStatus.DELETED
        else []
    )
    context = {
        "job": job,
        "upcoming": upcoming,
        "extra_settings": _extra_settings(job),
        "pool": pools.with_usage(Pool.objects.filter(environment_id=job.environment_id, name=job.pool)).first()
        if job.pool
        else None,
        "graph": dependency_graph(job, user),
        "alerts": list(job.alerts.filter(resolved_at__isnull=True).select_related("run").order_by("-created_at")[:5]),
        **_job_live_context(user, job, runs),
        "paused": paused_by(job),
        "versions": _versions(job),
        # Filled in by change control (jobs.hooks): the open requests and the promotion target.
        "open_changes": [],
        "can_trigger": job.status != JobStatus.DELETED and can(user, Action.TRIGGER, job),
        "can_pause": job.status == JobStatus.ENABLED and can(user, Action.PAUSE, job),
        "can_resume": job.status == JobStatus.PAUSED and can(user, Action.RESUME, job),
        # The policy may put pause/resume under change control: the page then offers the proposal instead.
        "pause_needs_change": job.status in (JobStatus.ENABLED, JobStatus.PAUSED) and pause_requires_change(job),
        "can_propose": job.status != JobStatus.DELETED and can(user, Action.PROPOSE, job),
        "promote_to": None,
        "trigger_form": forms.get("trigger") or ReasonForm(),
        "pause_form": forms.get("pause") or ReasonForm(),
        "resume_form": forms.get("resume") or ReasonForm(),
    }
    hooks.fill_job_page(user, job, context)
    return render(request, "jobs/job_detail.html", context, status=status)


def _recent_runs(job: Job) -> list[Run]:
    return list(job.runs.select_related("triggered_by").defer("output").order_by("-scheduled_for", "-id")[:20])


def _job_live_context(user, job: Job, runs: list[Run]) -> dict:
    """The part of the job page that changes while its runs do (``jobs/snippets/job_live.html``)."""
    return {
        "runs": runs,
        "strip": last_runs([job])[job.pk],
        "gantt": timeline(user, job=job),
        "poll": job_poll(job, runs),
    }


def _job(request, pk: int, action: Action = Action.VIEW) -> Job:
    return get_object_or_404_for(
        request.user, action, Job.objects.select_related("tenant", "team", "environment"), pk=pk
    )


@login_required
def job_detail(request, pk: int):
    return _job_page(request, _job(request, pk))


def _job_error_page(request, error: UIError, pk: int, **kwargs):
    """``service_errors`` page for the operations on a job's page: the page again, with the error."""
    messages.error(request, error.message)
    return _job_page(request, _job(request, pk), status=error.status)


@login_required
def job_live(request, pk: int):
    """The job page's live part, polled while a run is queued or running or a slot comes due."""
    job = _job(request, pk)
    context = {"job": job, **_job_live_context(request.user, job, _recent_runs(job))}
    return render(request, "jobs/snippets/job_live.html", context)


@login_required
@require_POST
@service_errors(_job_error_page)
def job_trigger(request, pk: int):
    job = _job(request, pk, Action.TRIGGER)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Triggering needs a reason: nothing was started.")
        return _job_page(request, job, forms={"trigger": form}, status=400)
    run = trigger_run(job, actor=request.user, reason=form.cleaned_data["reason"])
    messages.success(request, f"Run #{run.pk} queued.")
    return redirect("run_detail", pk=run.pk)


def _set_paused(request, pk: int, *, paused: bool):
    name = "pause" if paused else "resume"
    job = _job(request, pk, Action.PAUSE if paused else Action.RESUME)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{'Pausing' if paused else 'Resuming'} needs a reason: nothing was changed.")
        return _job_page(request, job, forms={name: form}, status=400)
    set_paused(job, actor=request.user, paused=paused, reason=form.cleaned_data["reason"])
    messages.success(request, "Job paused: it will not be scheduled until resumed." if paused else "Job resumed.")
    return redirect("job_detail", pk=job.pk)


@login_required
@require_POST
@service_errors(_job_error_page)
def job_pause(request, pk: int):
    return _set_paused(request, pk, paused=True)


@login_required
@require_POST
@service_errors(_job_error_page)
def job_resume(request, pk: int):
    return _set_paused(request, pk, paused=False)


def _run(request, pk: int, action: Action = Action.VIEW) -> Run:
    return get_object_or_404_for(
        request.user,
        action,
        Run.objects.select_related("job", "job__tenant", "job__team", "job__environment", "triggered_by"),
        pk=pk,
    )


def _run_actions(request, run: Run, *, cancel_form=None, settle_form=None) -> dict:
    may_trigger = run.job.status != JobStatus.DELETED and can(request.user, Action.TRIGGER, run)
    # A rerun executes the live definition: offered only while the job may run (not paused).
    may_rerun = may_trigger and run.job.status == JobStatus.ENABLED
    return {
        "can_rerun": may_rerun and run.status in RERUNNABLE,
        "can_rerun_failed": may_rerun and run.status in FAILED_STEP,
        "can_mark_succeeded": may_trigger and run.status in (*FAILED_STEP, RunStatus.SKIPPED),
        "settle_form": settle_form or ReasonForm(),
        "can_cancel": run.status in OPEN_RUN_STATUSES and can(request.user, Action.CANCEL, run),
        "cancel_form": cancel_form or ReasonForm(),
    }


def _run_page(request, run: Run, *, cancel_form=None, settle_form=None, status: int = 200):
    context = {
        **_run_actions(request, run, cancel_form=cancel_form, settle_form=settle_form),
        "run": run,
        "attempts": list(run.attempts.order_by("number")),
        "job": run.job,
        "version_is_live": run.job_version == run.job.version,
        **_run_live_context(run),
    }
    return render(request, "jobs/run_detail.html", context, status=status)


def _run_live_context(run: Run) -> dict:
    return {
        "trigger_reason": trigger_reason(run),
        # On a failure the job's runbook sits beside the output: what to do now.
        "show_runbook": run.status in FAILED_STATUSES,
        "poll": 2 if run.status in ACTIVE_STATUSES else None,
    }


@login_required
def run_live(request, pk: int):
    """The run page's live part (status, timings, output tail), polled while the run lives; the
    response that finds it finished also refreshes the page's actions (rerun, settle)."""
    run = _run(request, pk)
    context = {
        "run": run,
        "job": run.job,
        "attempts": list(run.attempts.order_by("number")),
        "fragment": True,
        **_run_live_context(run),
    }
    if context["poll"] is None:
        context.update(_run_actions(request, run), refresh_actions=True)
    return render(request, "jobs/snippets/run_live.html", context)


@login_required
def run_detail(request, pk: int):
    run = _run(request, pk)
    # Someone reads this job's output (Insights: outputs nobody reads); at most one write an hour.
    note_output_viewed(run)
    return _run_page(request, run)


def _run_error_page(action: Action):
    """``service_errors`` page for the operations on a run's page: the page again, with the error,
    a refusal recorded under ``action``."""

    def page(request, error: UIError, pk: int, **kwargs):
        run = _run(request, pk)
        error.record(request, action, run)
        messages.error(request, error.message)
        return _run_page(request, run, status=error.status)

    return page


@login_required
@require_POST
@service_errors(_run_error_page(Action.CANCEL))
def run_cancel(request, pk: int):
    run = _run(request, pk, Action.CANCEL)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        return _run_page(request, run, cancel_form=form, status=400)
    cancel_run(run, actor=request.user, reason=form.cleaned_data["reason"])
    messages.success(request, "Run cancelled.")
    return redirect("run_detail", pk=run.pk)


RUN_OPERATIONS = {
    "rerun": (rerun_run, "Run queued again as a new attempt."),
    "rerun-failed": (rerun_failed_steps, "The failed steps of this workflow are queued again."),
    "mark-succeeded": (mark_run_succeeded, "Run marked succeeded; downstream steps may proceed."),
}


@login_required
@require_POST
@service_errors(_run_error_page(Action.TRIGGER))
def run_operate(request, pk: int, operation: str):
    """Rerun, rerun the failed steps, or mark succeeded: each needs a reason for the audit trail."""
    run = _run(request, pk, Action.TRIGGER)
    service, done = RUN_OPERATIONS[operation]
    form = ReasonForm(request.POST)
    if not form.is_valid():
        return _run_page(request, run, settle_form=form, status=400)
    result = service(run, actor=request.user, reason=form.cleaned_data["reason"])
    # Rerunning failed steps says how many it queued and how many it left alone (outside your scope).
    messages.success(request, getattr(result, "message", done))
    return redirect("run_detail", pk=run.pk)
