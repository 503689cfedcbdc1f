"""Change-request pages: the review queue, proposal forms, and the review page with its diff."""

from __future__ import annotations

import difflib
from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Prefetch, Q, Value, When
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.access import Action, get_object_or_404_for, record_denied, restrict
from governance.models import Team
from governance.services import AccessDenied
from governance.ui_errors import UI_ERRORS, UIError, form_error, service_errors
from jobs.models import DEFINITION_FIELDS, Criticality, Job, JobStatus
from jobs.preview import compare_definitions, preview_definition, window_warnings

from .config_changes import is_stale as config_stale
from .forms import (
    CommentForm,
    JobDefinitionForm,
    PauseProposalForm,
    PostReviewForm,
    ProposalForm,
    RejectForm,
    ResubmitForm,
    ReviewForm,
    name_prefix,
)
from .models import STATE_ACTIONS, ChangeAction, ChangeRequest, ChangeStatus, Comment, Review, ReviewDecision
from .policies import review_refusal
from .review_view import display_value as _display
from .review_view import reviewer_create_view
from .services import (
    OPEN_FOR_WITHDRAW,
    approval_progress,
    approve_change,
    awaiting_review,
    comment_on_change,
    complete_post_review,
    edit_change,
    freeze_for,
    hold_reason,
    propose_change,
    propose_pause_change,
    rebase_change,
    reject_change,
    resubmit_change,
    with_valid_approvals,
    withdraw_change,
)

TABS = ("review", "mine", "all")
MULTILINE_FIELDS = ("command", "description", "runbook")
CRITICALITY_RANK = {c: i for i, c in enumerate(Criticality.values)}


def _criticality_rank():
    whens = [
        When(Q(proposed__criticality=value) | Q(base_definition__criticality=value), then=Value(rank))
        for value, rank in CRITICALITY_RANK.items()
    ]
    return Case(*whens, default=Value(len(CRITICALITY_RANK)), output_field=IntegerField())


@login_required
def change_list(request):
    user = request.user
    queue = awaiting_review(user)
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
    changes = changes.select_related("tenant", "team", "environment", "author", "job")
    page = Paginator(changes, 50).get_page(request.GET.get("page"))
    rows = with_valid_approvals(list(page.object_list))
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
        "can_propose": restrict(Team.objects.all(), user, Action.PROPOSE).exists(),
        "now": timezone.now(),
    }
    return render(request, "approvals/change_list.html", context)


def _form_teaching(form, job=None, *, team=None, environment=None) -> dict:
    """What the propose form shows beside its fields: the errors as a linked summary, the name
    prefix of the chosen team, and whether the chosen environment is governed (the button reads
    "Create" where nothing needs approval)."""
    team = job.team if job is not None else team
    environment = job.environment if job is not None else environment
    if job is None and "team" in form.fields:
        chosen = form.data.get("team") if form.is_bound else form.initial.get("team")
        team = next((t for t in form.fields["team"].queryset if str(t.pk) == str(chosen)), None)
        chosen = form.data.get("environment") if form.is_bound else form.initial.get("environment")
        environment = next((e for e in form.fields["environment"].queryset if str(e.pk) == str(chosen)), None)
    return {
        "field_errors": [(field, error) for field in form.visible_fields() for error in field.errors],
        "name_prefix": name_prefix(team) if team is not None else "",
        "governed": environment.governed if environment is not None else None,
    }


def _render_form(request, form, *, job=None, status=200, rollback_to=None):
    context = {"form": form, "job": job, "timezones": sorted(available_timezones()), "rollback_to": rollback_to}
    context.update(_form_teaching(form, job))
    return render(request, "approvals/change_form.html", context, status=status)


def _propose(request, form, **kwargs):
    """Call the service; on refusal put its messages on the form and change nothing."""
    try:
        change = propose_change(
            actor=request.user,
            **form.proposal(),
            **kwargs,
        )
    except (ValidationError, *UI_ERRORS) as exc:
        form_error(form, exc)
        return None
    announce(request, change)
    return change


def announce(request, change: ChangeRequest) -> None:
    """Tell the proposer what became of a request just submitted (applied, held, failed or waiting)."""
    if change.status == ChangeStatus.APPLIED:
        where = change.environment.name if change.environment is not None else change.tenant.name
        messages.success(request, f"CR-{change.pk} applied at once: {where} needs no approvals.")
    elif change.status == ChangeStatus.APPROVED:
        messages.info(request, f"CR-{change.pk} needs no approvals but {hold_reason(change) or 'waits to apply'}.")
    elif change.status == ChangeStatus.FAILED:
        messages.error(request, f"CR-{change.pk} could not apply: {change.failure_reason}")
    else:
        n = change.required_approvals
        messages.success(request, f"CR-{change.pk} submitted; it needs {n} approval{'s' if n != 1 else ''}.")


def _refuse_without_author_role(form) -> None:
    """Nobody without the author role somewhere gets the form, or gets to post it."""
    if not form.fields["team"].queryset.exists():
        raise PermissionDenied("You need the author role in a team to propose jobs.")


@login_required
def change_new(request):
    if request.method == "POST":
        form = JobDefinitionForm(request.POST, user=request.user)
        _refuse_without_author_role(form)
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
    _refuse_without_author_role(form)
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


@login_required
def change_pause(request, pk: int, paused: bool):
    """Propose pausing or resuming a job whose policy puts that under change control (operators)."""
    action = Action.PAUSE if paused else Action.RESUME
    job = get_object_or_404_for(
        request.user, action, Job.objects.select_related("tenant", "team", "environment"), pk=pk
    )
    form = PauseProposalForm(request.POST or None, paused=paused)
    context = {"form": form, "job": job, "paused": paused}
    if request.method != "POST":
        return render(request, "approvals/change_pause.html", context)
    status = 400
    if form.is_valid():
        try:
            change = propose_pause_change(
                job,
                actor=request.user,
                paused=paused,
                **form.proposal(),
            )
        except (ValidationError, *UI_ERRORS) as exc:
            status = form_error(form, exc)
        else:
            verb = "paused" if paused else "resumed"
            if change.status == ChangeStatus.APPLIED:
                note = "an approver reviews it after the fact" if change.emergency else "no approval was needed"
                messages.success(request, f"CR-{change.pk} applied: the job is {verb} ({note}).")
            elif change.status == ChangeStatus.FAILED:
                messages.error(request, f"CR-{change.pk} could not apply: {change.failure_reason}")
            else:
                n = change.required_approvals
                messages.success(
                    request,
                    f"CR-{change.pk} submitted: the job is {verb} once {n} approver{'s' if n != 1 else ''} approve.",
                )
            return redirect("change_detail", pk=change.pk)
    return render(request, "approvals/change_pause.html", context, status=status)


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
    """Every field of the definition (or policy rule) with both sides and whether it changes."""
    before = change.base_definition if change.action != ChangeAction.CREATE else None
    after = change.proposed if change.action != ChangeAction.DELETE else None
    if change.action == ChangeAction.POLICY or change.action in STATE_ACTIONS or change.is_config_change:
        fields = change.field_order(before, after)
    else:
        fields = list(DEFINITION_FIELDS)
    rows = []
    for field in fields:
        old = _display(field, (before or {}).get(field)) if before is not None else None
        new = _display(field, (after or {}).get(field)) if after is not None else None
        changed = old != new
        multiline = field in MULTILINE_FIELDS or "\n" in (old or "") or "\n" in (new or "")
        left, right = _line_diff(old or "", new or "") if changed and multiline else ([], [])
        rows.append(
            {
                "field": field,
                "before": old,
                "after": new,
                "changed": changed,
                "multiline": multiline,
                "left": left,
                "right": right,
            }
        )
    return rows


def _change(request, pk: int) -> ChangeRequest:
    return get_object_or_404_for(
        request.user,
        Action.VIEW,
        ChangeRequest.objects.select_related("tenant", "team", "environment", "author", "job").prefetch_related(
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer")),
            Prefetch("comments", queryset=Comment.objects.select_related("author")),
        ),
        pk=pk,
    )


def _post_review(change: ChangeRequest):
    try:
        return change.post_review
    except ChangeRequest.post_review.RelatedObjectDoesNotExist:
        return None


def _change_page(
    request,
    change: ChangeRequest,
    *,
    form=None,
    comment_form=None,
    post_form=None,
    reject_form=None,
    resubmit_form=None,
    error: str = "",
    status: int = 200,
):
    user = request.user
    reviews = list(change.reviews.all())
    current = [r for r in reviews if r.revision == change.revision]
    reviewed = any(r.reviewer_id == user.pk for r in current)
    refusal = review_refusal(user, change)
    reviewer_ok = not refusal
    is_author = change.author_id == user.pk
    submitted = change.status == ChangeStatus.SUBMITTED
    if not submitted:
        review_note = ""
    elif is_author:
        review_note = "You wrote this change: someone else must review it."
    elif reviewed:
        review_note = "You have reviewed this revision."
    elif not reviewer_ok:
        review_note = refusal or ""
    else:
        review_note = ""
    progress = approval_progress(change, [r for r in current if r.decision == ReviewDecision.APPROVE])
    before = change.base_definition if change.action not in (ChangeAction.CREATE,) else None
    after = change.proposed if change.action != ChangeAction.DELETE else None
    is_job_change = change.is_job_change
    is_definition_change = is_job_change and change.action not in STATE_ACTIONS
    stale = (change.is_config_change and config_stale(change)) or (
        change.is_open
        and is_definition_change
        and change.job is not None
        and change.action != ChangeAction.CREATE
        and change.job.version != change.base_version
    )
    rows = definition_diff(change)
    changed = [row for row in rows if row["changed"]]
    unchanged = [row for row in rows if not row["changed"]]
    schedule = None
    upcoming = []
    warnings_for_reviewers = []
    if is_definition_change:
        where: dict[str, Any] = {"tenant_id": change.tenant_id, "environment_id": change.environment_id}
        if change.action == ChangeAction.UPDATE:
            schedule = compare_definitions(before, after, **where)
        else:
            upcoming = preview_definition(after or before or {}, **where)
        if after:
            warnings_for_reviewers = window_warnings(after, **where)
    post_review = _post_review(change)
    # The review that rejected it (the newest), for the reason shown to the author.
    rejection = next((r for r in reversed(reviews) if r.decision == ReviewDecision.REJECT), None)
    create_view = reviewer_create_view(change, rows) if is_definition_change and change.action == "create" else None
    context = {
        "change": change,
        "is_job_change": is_job_change,
        "window_warnings": warnings_for_reviewers,
        "diff": rows,
        "changed_rows": changed,
        "unchanged_rows": unchanged,
        "changed_count": len(changed),
        "reviews": reviews,
        "comments": list(change.comments.all()),
        "progress": progress,
        "approval_slots": [i < progress["approvals"] for i in range(progress["required"])],
        "can_review": submitted and not is_author and reviewer_ok and not reviewed,
        "review_note": review_note,
        "can_comment": is_author or reviewer_ok,
        "can_withdraw": is_author and change.status in OPEN_FOR_WITHDRAW,
        "can_edit": is_author
        and is_definition_change
        and change.status in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED),
        "can_rebase": is_author and stale and change.status in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED),
        "form": form or ReviewForm(initial={"revision": change.revision}),
        "reject_form": reject_form or RejectForm(initial={"revision": change.revision}),
        "rejection": rejection,
        "can_resubmit": is_author and change.status == ChangeStatus.REJECTED,
        "resubmit_in_form": is_definition_change and change.action != ChangeAction.DELETE,
        "resubmit_form": resubmit_form or ResubmitForm(initial={"justification": change.justification}),
        "create_view": create_view,
        "comment_form": comment_form or CommentForm(),
        "post_review": post_review,
        "can_post_review": post_review is not None and post_review.is_open and not is_author and reviewer_ok,
        "post_form": post_form or PostReviewForm(),
        "error": error,
        "stale": stale,
        "held": hold_reason(change) if change.status == ChangeStatus.APPROVED else "",
        "freeze": freeze_for(change) if change.is_open else None,
        "criticality": (after or before or {}).get("criticality", ""),
        "schedule": schedule,
        "upcoming": upcoming,
    }
    return render(request, "approvals/change_detail.html", context, status=status)


@login_required
def change_detail(request, pk: int):
    return _change_page(request, _change(request, pk))


def _change_error_page(action: str, form: type[forms.Form] | None = None, form_arg: str = ""):
    """``service_errors`` page for the actions on a change request's page: the page again, with the
    error (and the posted form, for a refusal), a refusal recorded under ``action``."""

    def page(request, error: UIError, pk: int, **kwargs):
        change = _change(request, pk)
        error.record(request, action, change)
        bound = {form_arg: form(request.POST)} if form is not None else {}
        return _change_page(request, change, error=error.message, status=error.status, **bound)

    return page


def _review_error_page(request, error: UIError, pk: int, **kwargs):
    change = _change(request, pk)
    if error.denied:
        error.record(request, Action.REVIEW, change)
        form = ReviewForm(request.POST)
        form.is_valid()
    else:
        # The page now shows the current revision; the form carries it, keeping the comment.
        comment = (request.POST.get("comment") or "").strip()
        form = ReviewForm(initial={"revision": change.revision, "comment": comment})
    return _change_page(request, change, form=form, error=error.message, status=error.status)


def _decide(request, pk: int, service, verb: str):
    change = _change(request, pk)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        error = " ".join(str(e) for e in form.errors.get("revision", []))
        if set(form.errors) == {"revision"}:
            form = ReviewForm(initial={"revision": change.revision, "comment": form.data.get("comment", "")})
        return _change_page(request, change, form=form, error=error, status=400)
    change = service(
        change,
        actor=request.user,
        comment=form.cleaned_data["comment"],
        revision=form.cleaned_data["revision"],
    )
    if change.status == ChangeStatus.APPLIED:
        messages.success(request, f"You {verb} CR-{change.pk}; that was the last approval needed, so it is now live.")
    elif change.status == ChangeStatus.FAILED:
        messages.error(request, f"CR-{change.pk} was approved but could not apply: {change.failure_reason}")
    else:
        messages.success(request, f"You {verb} CR-{change.pk}.")
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
@service_errors(_review_error_page)
def change_approve(request, pk: int):
    return _decide(request, pk, approve_change, "approved")


def _reject_error_page(request, error: UIError, pk: int, **kwargs):
    """``service_errors`` page of a refused rejection: the page again with the error, a refusal recorded.
    After a conflict the confirmation step carries the current revision, keeping the reason."""
    change = _change(request, pk)
    error.record(request, Action.REVIEW, change)
    form = RejectForm(initial={"revision": change.revision, "reason": (request.POST.get("reason") or "").strip()})
    return _change_page(request, change, reject_form=form, error=error.message, status=error.status)


@login_required
@require_POST
@service_errors(_reject_error_page)
def change_reject(request, pk: int):
    """The confirmation step of a rejection posts here; without a reason nothing is recorded."""
    change = _change(request, pk)
    refusal = review_refusal(request.user, change)
    if refusal:
        # Someone who may not review learns that, not what the form lacks.
        raise AccessDenied(refusal)
    form = RejectForm(request.POST)
    if not form.is_valid():
        error = " ".join(str(message) for message in form.errors.get("revision", []))
        return _change_page(request, change, reject_form=form, error=error, status=400)
    try:
        change = reject_change(
            change, actor=request.user, reason=form.cleaned_data["reason"], revision=form.cleaned_data["revision"]
        )
    except ValidationError as exc:
        form.add_error("reason", exc.message_dict.get("reason", exc.messages))
        return _change_page(request, change, reject_form=form, status=400)
    messages.success(request, f"You rejected CR-{change.pk}; its author sees your reason and may resubmit it.")
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
@service_errors(_change_error_page("resubmit", ResubmitForm, "resubmit_form"))
def change_resubmit(request, pk: int):
    """Resubmit a rejected request with a new justification and the same proposal (the edit form
    revises and resubmits job definitions)."""
    change = _change(request, pk)
    form = ResubmitForm(request.POST)
    if not form.is_valid():
        return _change_page(request, change, resubmit_form=form, status=400)
    try:
        based_on = int(request.POST.get("based_on_revision", ""))
    except ValueError:
        based_on = -1
    try:
        change = resubmit_change(
            change, actor=request.user, based_on_revision=based_on, justification=form.cleaned_data["justification"]
        )
    except ValidationError as exc:
        form.add_error("justification", exc.message_dict.get("justification", exc.messages))
        return _change_page(request, change, resubmit_form=form, status=400)
    announce(request, change)
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
@service_errors(_change_error_page("withdraw"))
def change_withdraw(request, pk: int):
    change = _change(request, pk)
    withdraw_change(change, actor=request.user, reason=request.POST.get("reason", "").strip()[:1000])
    messages.success(request, f"CR-{change.pk} withdrawn.")
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
@service_errors(_change_error_page("comment", CommentForm, "comment_form"))
def change_comment(request, pk: int):
    change = _change(request, pk)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _change_page(request, change, comment_form=form, status=400)
    try:
        comment_on_change(change, actor=request.user, body=form.cleaned_data["body"])
    except ValidationError as exc:
        form.add_error("body", exc.message_dict.get("body", exc.messages))
        return _change_page(request, change, comment_form=form, status=400)
    messages.success(request, "Comment added.")
    return redirect(reverse("change_detail", args=[change.pk]) + "#comments")


@login_required
@require_POST
@service_errors(_change_error_page("rebase"))
def change_rebase(request, pk: int):
    change = _change(request, pk)
    try:
        change = rebase_change(change, actor=request.user)
    except ValidationError as exc:
        return _change_page(request, _change(request, pk), error=" ".join(exc.messages), status=400)
    messages.success(
        request, f"CR-{change.pk} rebased onto v{change.base_version}; it is now revision {change.revision}."
    )
    return redirect("change_detail", pk=change.pk)


@login_required
@require_POST
@service_errors(_change_error_page(Action.REVIEW, PostReviewForm, "post_form"))
def change_post_review(request, pk: int):
    change = _change(request, pk)
    item = _post_review(change)
    if item is None:
        raise Http404("This change needs no review after the fact.")
    form = PostReviewForm(request.POST)
    if not form.is_valid():
        return _change_page(request, change, post_form=form, status=400)
    complete_post_review(item, actor=request.user, notes=form.cleaned_data["notes"])
    messages.success(request, "Review after the fact recorded.")
    return redirect("change_detail", pk=change.pk)


@login_required
def change_revise(request, pk: int):
    """The author edits an open request; every edit is a new revision and resets approvals."""
    change = _change(request, pk)
    if change.author_id != request.user.pk:
        record_denied(request.user, "edit", change, reason="only the author edits a change request")
        raise PermissionDenied("Only the author can edit this change request.")
    resubmitting = change.status == ChangeStatus.REJECTED
    if (
        not change.is_job_change
        or change.action in STATE_ACTIONS
        or change.status not in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED, ChangeStatus.REJECTED)
    ):
        raise PermissionDenied("Only an open or rejected job change request can be edited here.")
    with_definition = change.action != ChangeAction.DELETE
    form_class: type[Any] = JobDefinitionForm if with_definition else ProposalForm
    kwargs = {"user": request.user, "job": change.job, "fixed_place": True} if with_definition else {}
    if request.method == "POST":
        form = form_class(request.POST, **kwargs)
        if form.is_valid():
            try:
                based_on = int(request.POST.get("based_on_revision", ""))
            except ValueError:
                based_on = -1
            definition = None
            if with_definition:
                # Fields the form does not show (HTTP, parameters, ...) keep their proposed values.
                definition = {**change.proposed, **form.definition()}
            # A rejected request is revised and resubmitted; an open one edited in place.
            service = resubmit_change if resubmitting else edit_change
            try:
                change = service(
                    change,
                    actor=request.user,
                    based_on_revision=based_on,
                    definition=definition,
                    justification=form.cleaned_data["justification"],
                    ticket=form.cleaned_data["ticket"],
                )
            except (ValidationError, *UI_ERRORS) as exc:
                form_error(form, exc)
            else:
                if resubmitting:
                    announce(request, change)
                    return redirect("change_detail", pk=change.pk)
                messages.success(
                    request, f"CR-{change.pk} is now revision {change.revision}; earlier approvals no longer count."
                )
                return redirect("change_detail", pk=change.pk)
        return _render_revise(request, change, form, status=400)
    initial = {"justification": change.justification, "ticket": change.ticket}
    if with_definition:
        initial.update(JobDefinitionForm.initial_from_definition(change.proposed))
    return _render_revise(request, change, form_class(initial=initial, **kwargs))


def _render_revise(request, change, form, status=200):
    context = {
        "form": form,
        "change": change,
        "job": change.job,
        "revising": True,
        "resubmitting": change.status == ChangeStatus.REJECTED,
        "timezones": sorted(available_timezones()),
        **_form_teaching(form, change.job, team=change.team, environment=change.environment),
    }
    template = "approvals/change_form.html" if isinstance(form, JobDefinitionForm) else "approvals/change_delete.html"
    return render(request, template, context, status=status)
