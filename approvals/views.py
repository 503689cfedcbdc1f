"""Change-request pages: the review queue, proposal forms, and the review page with its diff."""

from __future__ import annotations

import difflib
import json
from zoneinfo import available_timezones

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, Count, F, IntegerField, Prefetch, Q, Value, When
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.access import Action, can, get_object_or_404_for, restrict
from governance.services import AccessDenied
from governance.views import review_queue
from jobs import schedule
from jobs.models import DEFINITION_FIELDS, Criticality, Job, JobStatus

from .forms import JobDefinitionForm, ProposalForm, ReviewForm
from .models import ChangeAction, ChangeRequest, ChangeStatus, Review, ReviewDecision
from .services import ChangeError, approve_change, propose_change, reject_change, withdraw_change

TABS = ("review", "mine", "all")
MULTILINE_FIELDS = ("command", "description", "runbook")
CRITICALITY_RANK = {c: i for i, c in enumerate(Criticality.values)}


def _criticality_rank():
    whens = [
        When(Q(proposed__criticality=value) | Q(base_definition__criticality=value), then=Value(rank))
        for value, rank in CRITICALITY_RANK.items()
    ]
    return Case(*whens, default=Value(len(CRITICALITY_RANK)), output_field=IntegerField())


def _with_approvals(queryset):
    return queryset.annotate(
        approvals=Count(
            "reviews",
            filter=Q(reviews__decision=ReviewDecision.APPROVE, reviews__revision=F("revision")),
            distinct=True,
        )
    )


@login_required
def change_list(request):
    user = request.user
    queue = review_queue(user)
    queue_count = queue.count()
    tab = request.GET.get("tab") or ("review" if queue_count else "mine")
    if tab not in TABS:
        tab = "all"
    if tab == "review":
        # Most critical first, then oldest first: what has waited longest gets seen.
        changes = queue.annotate(rank=_criticality_rank()).order_by("rank", "created_at", "id")
    elif tab == "mine":
        changes = ChangeRequest.objects.filter(author=user).order_by("-created_at", "-id")
    else:
        changes = restrict(ChangeRequest.objects.all(), user).order_by("-created_at", "-id")
    status = request.GET.get("status", "")
    if tab != "review" and status in ChangeStatus.values:
        changes = changes.filter(status=status)
    changes = _with_approvals(changes.select_related("tenant", "team", "environment", "author", "job"))
    page = Paginator(changes, 50).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    for change in rows:
        change.criticality = (change.proposed or {}).get("criticality") or (change.base_definition or {}).get(
            "criticality", ""
        )
    context = {
        "tab": tab,
        "page": page,
        "changes": rows,
        "queue_count": queue_count,
        "statuses": ChangeStatus.choices,
        "status": status,
        "now": timezone.now(),
    }
    return render(request, "approvals/change_list.html", context)


def _render_form(request, form, *, job=None, status=200, rollback_to=None):
    context = {"form": form, "job": job, "timezones": sorted(available_timezones()), "rollback_to": rollback_to}
    return render(request, "approvals/change_form.html", context, status=status)


def _propose(request, form, **kwargs):
    """Call the service; on refusal put its messages on the form and change nothing."""
    try:
        change = propose_change(
            actor=request.user,
            justification=form.cleaned_data["justification"],
            ticket=form.cleaned_data["ticket"],
            **kwargs,
        )
    except ValidationError as exc:
        if hasattr(form, "add_service_errors"):
            form.add_service_errors(exc)
        else:
            for field, msgs in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, msgs)
        return None
    except (AccessDenied, ChangeError) as exc:
        form.add_error(None, str(exc))
        return None
    if change.status == ChangeStatus.APPLIED:
        messages.success(request, f"CR-{change.pk} applied at once: {change.environment.name} needs no approvals.")
    elif change.status == ChangeStatus.FAILED:
        messages.error(request, f"CR-{change.pk} could not apply: {change.failure_reason}")
    else:
        n = change.required_approvals
        messages.success(request, f"CR-{change.pk} submitted; it needs {n} approval{'s' if n != 1 else ''}.")
    return change


@login_required
def change_new(request):
    if request.method == "POST":
        form = JobDefinitionForm(request.POST, user=request.user)
        if form.is_valid():
            change = _propose(
                request,
                form,
                action=ChangeAction.CREATE,
                team=form.cleaned_data["team"],
                environment=form.cleaned_data["environment"],
                definition=form.definition(),
            )
            if change is not None:
                return redirect("change_detail", pk=change.pk)
        return _render_form(request, form, status=400)
    initial = {k: request.GET[k] for k in ("team", "environment") if request.GET.get(k)}
    form = JobDefinitionForm(user=request.user, initial=initial)
    if not form.fields["team"].queryset.exists():
        raise PermissionDenied("You need the author role in a team to propose jobs.")
    return _render_form(request, form)


def _job_for_change(request, pk: int) -> Job:
    job = get_object_or_404_for(
        request.user, Action.PROPOSE, Job.objects.select_related("tenant", "team", "environment"), pk=pk
    )
    if job.status == JobStatus.DELETED:
        raise PermissionDenied("This job is deleted; propose a new job instead.")
    return job


@login_required
def change_edit(request, pk: int):
    job = _job_for_change(request, pk)
    if request.method == "POST":
        form = JobDefinitionForm(request.POST, user=request.user, job=job)
        if form.is_valid():
            change = _propose(request, form, action=ChangeAction.UPDATE, job=job, definition=form.definition())
            if change is not None:
                return redirect("change_detail", pk=change.pk)
        return _render_form(request, form, job=job, status=400)
    initial = JobDefinitionForm.initial_from(job)
    rollback_to = None
    if request.GET.get("version", "").isdigit():
        # "Propose this version again": prefill with an earlier version; the diff is against live as usual.
        record = job.history.filter(version=int(request.GET["version"])).order_by("history_date").first()
        if record is not None and record.version != job.version:
            rollback_to = record.version
            initial = JobDefinitionForm.initial_from(record)
    form = JobDefinitionForm(user=request.user, job=job, initial=initial)
    if rollback_to:
        form.initial["justification"] = f"Roll back to v{rollback_to}: "
    return _render_form(request, form, job=job, rollback_to=rollback_to)


@login_required
def change_delete(request, pk: int):
    job = _job_for_change(request, pk)
    form = ProposalForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            change = _propose(request, form, action=ChangeAction.DELETE, job=job)
            if change is not None:
                return redirect("change_detail", pk=change.pk)
        return render(request, "approvals/change_delete.html", {"form": form, "job": job}, status=400)
    return render(request, "approvals/change_delete.html", {"form": form, "job": job})


def _display(field: str, value) -> str:
    if value is None:
        return ""
    if field == "command" and isinstance(value, list):
        return "\n".join(str(item) for item in value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _line_diff(before: str, after: str) -> tuple[list[dict], list[dict]]:
    """Lines of both sides, each marked removed / added / same, for a side-by-side view."""
    left: list[dict] = []
    right: list[dict] = []
    a, b = before.splitlines(), after.splitlines()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        for line in a[i1:i2]:
            left.append({"text": line, "kind": "same" if op == "equal" else "removed"})
        for line in b[j1:j2]:
            right.append({"text": line, "kind": "same" if op == "equal" else "added"})
    return left, right


def definition_diff(change: ChangeRequest) -> list[dict]:
    before = change.base_definition if change.action != ChangeAction.CREATE else None
    after = change.proposed if change.action != ChangeAction.DELETE else None
    rows = []
    for field in DEFINITION_FIELDS:
        old = _display(field, (before or {}).get(field)) if before is not None else None
        new = _display(field, (after or {}).get(field)) if after is not None else None
        changed = old != new
        left, right = _line_diff(old or "", new or "") if changed else ([], [])
        rows.append(
            {
                "field": field,
                "before": old,
                "after": new,
                "changed": changed,
                "multiline": field in MULTILINE_FIELDS,
                "left": left,
                "right": right,
            }
        )
    return rows


def _next_runs(change: ChangeRequest, definition: dict | None) -> list:
    if not definition:
        return []
    try:
        return schedule.next_n(
            definition["cron"],
            definition["timezone"],
            timezone.now(),
            5,
            gap=definition.get("gap") or "shift",
            overlap=definition.get("overlap") or "once",
            seed=schedule.job_seed(change.tenant_id, change.environment_id, definition.get("name", "")),
        )
    except (KeyError, schedule.ScheduleError, ValueError):
        return []


def _change(request, pk: int) -> ChangeRequest:
    return get_object_or_404_for(
        request.user,
        Action.VIEW,
        ChangeRequest.objects.select_related("tenant", "team", "environment", "author", "job").prefetch_related(
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer"))
        ),
        pk=pk,
    )


def _change_page(request, change: ChangeRequest, *, form=None, error: str = "", status: int = 200):
    user = request.user
    reviews = list(change.reviews.all())
    current = [r for r in reviews if r.revision == change.revision]
    approvals = [r for r in current if r.decision == ReviewDecision.APPROVE]
    reviewed = any(r.reviewer_id == user.pk for r in current)
    may_review = can(user, Action.REVIEW, change)
    is_author = change.author_id == user.pk
    submitted = change.status == ChangeStatus.SUBMITTED
    if not submitted:
        review_note = ""
    elif is_author:
        review_note = "You wrote this change: someone else must review it."
    elif reviewed:
        review_note = "You have reviewed this revision."
    elif not may_review:
        review_note = "Reviewing needs the approver role for this team and environment."
    else:
        review_note = ""
    before = change.base_definition if change.action != ChangeAction.CREATE else None
    after = change.proposed if change.action != ChangeAction.DELETE else None
    stale = (
        change.is_open
        and change.job is not None
        and change.action != ChangeAction.CREATE
        and change.job.version != change.base_version
    )
    schedule_keys = ("cron", "timezone", "gap", "overlap")
    schedule_changed = bool(before and after and any(before.get(key) != after.get(key) for key in schedule_keys))
    required = change.required_approvals or change.environment.required_approvals
    rows = definition_diff(change)
    context = {
        "change": change,
        "diff": rows,
        "changed_count": sum(1 for row in rows if row["changed"]),
        "reviews": reviews,
        "approvals": len(approvals),
        "required": required,
        "approval_slots": [i < len(approvals) for i in range(required)],
        "can_review": submitted and not is_author and may_review and not reviewed,
        "review_note": review_note,
        "can_withdraw": is_author and change.status in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED),
        "form": form or ReviewForm(),
        "error": error,
        "stale": stale,
        "criticality": (after or before or {}).get("criticality", ""),
        "timezone": (after or before or {}).get("timezone", "UTC"),
        "runs_before": _next_runs(change, before) if schedule_changed or after is None else [],
        "runs_after": _next_runs(change, after),
        "schedule_changed": schedule_changed,
    }
    return render(request, "approvals/change_detail.html", context, status=status)


@login_required
def change_detail(request, pk: int):
    return _change_page(request, _change(request, pk))


def _decide(request, pk: int, service, verb: str):
    change = _change(request, pk)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        return _change_page(request, change, form=form, status=400)
    try:
        change = service(change, actor=request.user, comment=form.cleaned_data["comment"])
    except AccessDenied as exc:
        return _change_page(request, _change(request, pk), form=form, error=str(exc), status=403)
    except ChangeError as exc:
        return _change_page(request, _change(request, pk), form=form, error=exc.message, status=409)
    if change.status == ChangeStatus.APPLIED:
        messages.success(request, f"You {verb} CR-{change.pk}; that was the last approval needed, so it is now live.")
    elif change.status == ChangeStatus.FAILED:
        messages.error(request, f"CR-{change.pk} was approved but could not apply: {change.failure_reason}")
    else:
        messages.success(request, f"You {verb} CR-{change.pk}.")
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
def change_approve(request, pk: int):
    return _decide(request, pk, approve_change, "approved")


@login_required
@require_POST
def change_reject(request, pk: int):
    return _decide(request, pk, reject_change, "rejected")


@login_required
@require_POST
def change_withdraw(request, pk: int):
    change = _change(request, pk)
    try:
        withdraw_change(change, actor=request.user, reason=request.POST.get("reason", "").strip())
    except AccessDenied as exc:
        return _change_page(request, _change(request, pk), error=str(exc), status=403)
    except ChangeError as exc:
        return _change_page(request, _change(request, pk), error=exc.message, status=409)
    messages.success(request, f"CR-{change.pk} withdrawn.")
    return redirect("change_detail", pk=change.pk)
