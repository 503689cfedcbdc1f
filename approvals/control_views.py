"""Pages around the review flow: approval policies, the freeze calendar, the post-review queue,
rollback and promotion of jobs, and the overdue-review list with recertification.

Every write goes through a service of ``approvals.services`` / ``approvals.lifecycle``; these
views only pick what the user may see (``governance.access``) and show the services' answers.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.access import Action, can, can_in, get_object_or_404_for, record_denied, restrict
from governance.models import Environment
from governance.ui_errors import form_error, service_errors
from jobs.definitions import diff
from jobs.models import DEFINITION_FIELDS, Criticality, Job, JobStatus

from . import lifecycle, policies
from .control_forms import FreezeForm, PolicyChangeForm, PromotionForm, RecertifyForm, RollbackForm
from .forms import add_service_errors
from .models import OPEN_STATUSES, ChangeAction, ChangeRequest, FreezeWindow, PostReview
from .services import (
    ChangeError,
    create_freeze_window,
    next_environment,
    propose_policy_change,
    propose_promotion,
    propose_rollback,
)
from .views import _job_for_change

PAST_FREEZES_SHOWN = 20


def _announce(request, change: ChangeRequest) -> None:
    n = change.required_approvals
    if change.status == "applied":
        messages.success(
            request, f"CR-{change.pk} applied at once: {(change.environment or change.tenant).name} needs no approvals."
        )
    elif change.status == "failed":
        messages.error(request, f"CR-{change.pk} could not apply: {change.failure_reason}")
    else:
        messages.success(request, f"CR-{change.pk} submitted; it needs {n} approval{'s' if n != 1 else ''}.")


# Approval policies


def _policy_context(user) -> dict:
    environments = list(restrict(Environment.objects.select_related("tenant"), user).order_by("tenant__slug", "order"))
    rules = policies.effective_rules(environments)
    pending: dict[int | None, list[ChangeRequest]] = {}
    open_changes = restrict(
        ChangeRequest.objects.filter(action=ChangeAction.POLICY, status__in=OPEN_STATUSES), user
    ).select_related("author")
    for change in open_changes.order_by("created_at"):
        pending.setdefault(change.environment_id, []).append(change)
    rows = [
        {
            "environment": env,
            "rules": rules[env.pk]["rules"],
            "policy_change": rules[env.pk]["policy_change"],
            "pending": pending.get(env.pk, []),
            "can_propose": can_in(user, Action.ADMINISTER, env.tenant_id, None, env.pk),
        }
        for env in environments
    ]
    return {
        "rows": rows,
        "multi_tenant": len({env.tenant_id for env in environments}) > 1,
        "can_propose_any": any(row["can_propose"] for row in rows),
    }


@login_required
def policy_list(request):
    return render(request, "approvals/policy_list.html", _policy_context(request.user))


@login_required
@service_errors()
def policy_propose(request):
    user = request.user
    if not PolicyChangeForm(user=user).fields["environment"].queryset.exists():
        raise PermissionDenied("Only a tenant admin may propose approval policy changes.")
    if request.method == "POST":
        form = PolicyChangeForm(request.POST, user=user)
        if form.is_valid():
            try:
                change = propose_policy_change(
                    actor=user,
                    environment=form.cleaned_data["environment"],
                    rule=form.rule(),
                    justification=form.cleaned_data["justification"],
                    ticket=form.cleaned_data["ticket"],
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                _announce(request, change)
                return redirect("change_detail", pk=change.pk)
        return render(request, "approvals/policy_form.html", {"form": form}, status=400)
    choices = PolicyChangeForm(user=user).fields["environment"].queryset
    initial = {}
    env_id, criticality = request.GET.get("environment", ""), request.GET.get("criticality", "")
    env = choices.filter(pk=int(env_id)).first() if env_id.isdigit() else None
    if env is not None:
        criticality = criticality if criticality in Criticality.values else ""
        initial["environment"] = env.pk
        initial["criticality"] = criticality
        # Prefilled with what applies today (an inherited default included), so the form shows the diff's base.
        current = policies.rule_for(env, [criticality] if criticality else [])
        initial["required_approvals"] = current.required_approvals
        initial["separation_of_duties"] = current.separation_of_duties
        initial["pause_requires_change"] = policies.pause_requires_change(env, criticality)
    return render(request, "approvals/policy_form.html", {"form": PolicyChangeForm(user=user, initial=initial)})


# Freeze windows (the release calendar)


@login_required
@service_errors()
def freeze_list(request):
    user = request.user
    form = FreezeForm(request.POST or None, user=user)
    status = 200
    if request.method == "POST":
        if not form.offered:
            raise PermissionDenied("Only a tenant admin may declare freeze windows.")
        if form.is_valid():
            tenant, environment = form.place()
            try:
                freeze = create_freeze_window(
                    actor=user,
                    tenant=tenant,
                    environment=environment,
                    starts_at=form.cleaned_data["starts_at"],
                    ends_at=form.cleaned_data["ends_at"],
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Freeze declared: {freeze}.")
                return redirect("freeze_list")
        status = 400
    now = timezone.now()
    freezes = restrict(FreezeWindow.objects.select_related("environment", "tenant", "created_by"), user)
    slug = request.GET.get("environment", "")
    if slug:
        freezes = freezes.filter(Q(environment__slug=slug) | Q(environment__isnull=True))
    context = {
        "form": form,
        "can_create": form.offered,
        "now": now,
        "current": list(freezes.filter(starts_at__lte=now, ends_at__gt=now).order_by("ends_at")),
        "upcoming": list(freezes.filter(starts_at__gt=now).order_by("starts_at")),
        "past": list(freezes.filter(ends_at__lte=now).order_by("-ends_at")[:PAST_FREEZES_SHOWN]),
        "past_limit": PAST_FREEZES_SHOWN,
        "environment": slug,
        "environment_slugs": sorted(set(restrict(Environment.objects.all(), user).values_list("slug", flat=True))),
        "multi_tenant": len(set(restrict(Environment.objects.all(), user).values_list("tenant_id", flat=True))) > 1,
    }
    return render(request, "approvals/freeze_list.html", context, status=status)


# Post-reviews of emergency changes


@login_required
def post_review_list(request):
    user = request.user
    items = (
        restrict(PostReview.objects.all(), user, Action.REVIEW)
        .select_related("reviewer", "change_request__author", "change_request__environment", "change_request__team")
        .order_by("reviewed_at", "-created_at")
    )
    show_done = request.GET.get("show") == "done"
    items = items.filter(reviewed_at__isnull=not show_done)
    rows = list(items[:100])
    for item in rows:
        item.mine = item.change_request.author_id == user.pk
    context = {
        "items": rows,
        "show_done": show_done,
        "is_reviewer": bool(restrict(Environment.objects.all(), user, Action.REVIEW).exists()),
    }
    return render(request, "approvals/post_review_list.html", context)


# Rollback and promotion


@login_required
@service_errors()
def job_rollback(request, pk: int, version: int):
    """Confirm "propose this version again": the version's diff against live, then a justification."""
    job = _job_for_change(request, pk)
    record = job.history.filter(version=version).order_by("-history_date", "-history_id").first()
    form = RollbackForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                change = propose_rollback(
                    job,
                    actor=request.user,
                    version=version,
                    justification=form.cleaned_data["justification"],
                    ticket=form.cleaned_data["ticket"],
                )
            except (ValidationError, ChangeError) as exc:
                form_error(form, exc)
            else:
                _announce(request, change)
                return redirect("change_detail", pk=change.pk)
        status = 400
    changes = []
    if record is not None:
        changes = diff(job.definition(), {field: getattr(record, field) for field in DEFINITION_FIELDS})
    context = {"job": job, "version": version, "record": record, "changes": changes, "form": form}
    return render(request, "approvals/rollback_form.html", context, status=status)


def _promotion_values(job: Job, target: Environment) -> dict:
    """Prefill: the values the job already declares for the target, else those of the job of the
    same name living there."""
    values = ((job.parameters or {}).get("values") or {}).get(target.slug)
    if values is None:
        existing = (
            Job.objects.filter(tenant_id=job.tenant_id, environment=target, name=job.name)
            .exclude(status=JobStatus.DELETED)
            .only("parameters")
            .first()
        )
        values = ((existing.parameters or {}).get("values") or {}).get(target.slug) if existing else None
    return values or {}


@login_required
@service_errors()
def job_promote(request, pk: int):
    job = get_object_or_404_for(
        request.user, Action.VIEW, Job.objects.select_related("tenant", "team", "environment"), pk=pk
    )
    target = next_environment(job.environment)
    if job.status == JobStatus.DELETED or target is None:
        reason = (
            "This job is deleted." if target else f"{job.environment.slug} is the last environment; nothing follows."
        )
        record_denied(request.user, Action.PROPOSE, job, reason=reason)
        raise PermissionDenied(reason)
    if not can_in(request.user, Action.PROPOSE, job.tenant_id, job.team_id, target.pk):
        record_denied(request.user, Action.PROPOSE, job, reason="role does not allow proposing in the next environment")
        raise PermissionDenied(f"You need the author role for {job.team.name} in {target.name} to promote this job.")
    schema = (job.parameters or {}).get("schema")
    if request.method == "POST":
        form = PromotionForm(request.POST, schema=schema)
        if form.is_valid():
            try:
                change = propose_promotion(
                    job,
                    actor=request.user,
                    target=target,
                    parameter_values=form.values(),
                    justification=form.cleaned_data["justification"],
                    ticket=form.cleaned_data["ticket"],
                )
            except ValidationError as exc:
                form.add_promotion_errors(exc, target.slug)
            except ChangeError as exc:
                form_error(form, exc)
            else:
                _announce(request, change)
                return redirect("change_detail", pk=change.pk)
        return render(request, "approvals/promote_form.html", {"job": job, "target": target, "form": form}, status=400)
    initial = {PromotionForm.PREFIX + name: value for name, value in _promotion_values(job, target).items()}
    initial = {k: ("true" if v is True else "false" if v is False else v) for k, v in initial.items()}
    form = PromotionForm(schema=schema, initial=initial)
    return render(request, "approvals/promote_form.html", {"job": job, "target": target, "form": form})


# Lifecycle: reviews falling due, recertification, sunsets


def _overdue_page(request, *, error_job: int | None = None, form=None, status: int = 200):
    user = request.user
    today = timezone.now().date()
    # Jobs decorated for the template (days_left, days_ago, can_recertify): not plain Job rows.
    due: list[Any] = list(lifecycle.due_for_review(user, today=today))
    sunset: list[Any] = list(lifecycle.sunset_jobs(user, today=today))
    for job in due:
        job.days_left = (job.review_due_on - today).days
        job.days_ago = -job.days_left
        job.can_recertify = can(user, Action.PROPOSE, job)
    for job in sunset:
        job.days_left = (job.sunset_on - today).days
        job.days_ago = -job.days_left
    context = {
        "today": today,
        "overdue": [j for j in due if j.days_left < 0],
        "due_soon": [j for j in due if j.days_left >= 0],
        "sunset": sunset,
        "error_job": error_job,
        "form": form,
    }
    return render(request, "approvals/overdue_list.html", context, status=status)


@login_required
def overdue_list(request):
    return _overdue_page(request)


@login_required
@require_POST
@service_errors()
def job_recertify(request, pk: int):
    job = get_object_or_404_for(request.user, Action.PROPOSE, Job.objects.select_related("team", "environment"), pk=pk)
    form = RecertifyForm(request.POST)
    if form.is_valid():
        try:
            job = lifecycle.recertify_job(job, actor=request.user, note=form.cleaned_data["note"])
        except ValidationError as exc:
            form_error(form, exc)
        except ChangeError as exc:
            return _overdue_page(request, error_job=job.pk, form=form, status=form_error(form, exc))
        else:
            messages.success(request, f"{job.name} recertified; next review due {job.review_due_on}.")
            return redirect("overdue_list")
    return _overdue_page(request, error_job=job.pk, form=form, status=400)
