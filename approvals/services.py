"""Change control: propose, edit, submit, review, rebase, withdraw, expire and apply.

Every path that changes a job or an approval policy (API, UI, admin, commands,
background tasks) goes through these functions. Each runs in one transaction
that also writes the audit events; the request row is locked first
(``select_for_update``; IMMEDIATE transactions on SQLite), so concurrent
reviews of one request are serialised and end in exactly one terminal state.

This module is the state machine only. What differs per kind of change (job, job state, policy,
window, calendar, pool: validation, rule, live version, staleness, rebase, apply, who proposes) is
asked of the request's kind (``approvals.kinds.kind_of``); who may review is
``approvals.policies.review_refusal`` / ``reviewable``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Model, OuterRef, Q, QuerySet
from django.utils import timezone

from governance import audit
from governance.access import Action, can_over, distinct_identities, identity_keys, prime_grants
from governance.actors import SYSTEM
from governance.history import save_with_history
from governance.models import AuditAction, Environment, Team, Tenant
from governance.secrets import SecretScope, rebase_references
from governance.services import AccessDenied
from jobs import services as job_services
from jobs.definitions import diff
from jobs.models import DEFINITION_FIELDS, Job, JobStatus

from . import config_changes, notify, policies
from .errors import ChangeError, check_apply_after
from .kinds import JOB, JOB_STATE, POLICY, kind_of
from .kinds.base import Actor, Definition
from .models import (
    ChangeAction,
    ChangeRequest,
    ChangeStatus,
    Comment,
    FreezeWindow,
    PostReview,
    Review,
    ReviewDecision,
    TargetKind,
)
from .policies import User

__all__ = ["ChangeError"]  # re-exported: callers catch services.ChangeError

_UNSET: Any = object()


def _expiry(now: datetime) -> datetime:
    return now + timedelta(hours=settings.GOVERNOR_CHANGE_EXPIRY_HOURS)


def _open_change(
    change: ChangeRequest, *, actor: User, justification: str, ticket: str, submit: bool, audit_data: dict[str, Any]
) -> ChangeRequest:
    """Save a validated proposal (built unsaved by its kind) as a draft (author, trimmed justification
    and ticket, expiry), record it, and submit it when asked. Every kind of proposal ends here; call it
    inside the caller's transaction."""
    change.author = actor
    change.justification = justification.strip()
    change.ticket = (ticket or "").strip()
    change.status = ChangeStatus.DRAFT
    change.expires_at = _expiry(timezone.now())
    change.save()
    audit.record(AuditAction.CHANGE_CREATED, actor=actor, obj=change, data=audit_data)
    return submit_change(change, actor=actor) if submit else change


def propose_change(
    *,
    actor: User,
    action: ChangeAction | str,
    justification: str,
    definition: Definition | None = None,
    job: Job | None = None,
    team: Team | None = None,
    environment: Environment | None = None,
    ticket: str = "",
    submit: bool = True,
    emergency: bool = False,
    apply_after: datetime | None = None,
) -> ChangeRequest:
    """Create a change request for a job (and submit it unless ``submit`` is False).

    Raises ValidationError for bad fields, AccessDenied when the actor may not
    propose for that team and environment, ChangeError for workflow rules.
    """
    action = ChangeAction(action)
    change = JOB.new_change(
        actor=actor,
        action=action,
        justification=justification,
        definition=definition,
        job=job,
        team=team,
        environment=environment,
        apply_after=apply_after,
        emergency=emergency,
    )
    with transaction.atomic():
        return _open_change(
            change,
            actor=actor,
            justification=justification,
            ticket=ticket,
            submit=submit,
            audit_data={"action": action.value, "emergency": bool(emergency)},
        )


def propose_policy_change(
    *,
    actor: User,
    environment: Environment,
    rule: object,
    justification: str,
    ticket: str = "",
    submit: bool = True,
) -> ChangeRequest:
    """Propose a new approval rule for an environment (and one criticality, or the default).

    Only tenant admins propose; approvers of the whole environment review it, and
    at least one approval is always needed, so nobody weakens review alone.
    """
    change = POLICY.new_change(actor=actor, environment=environment, rule=rule, justification=justification)
    with transaction.atomic():
        return _open_change(
            change,
            actor=actor,
            justification=justification,
            ticket=ticket,
            submit=submit,
            audit_data={"action": "policy", "rule": change.proposed},
        )


def propose_pause_change(
    job: Job,
    *,
    actor: User,
    paused: bool,
    justification: str,
    ticket: str = "",
    emergency: bool = False,
    apply_after: datetime | None = None,
    submit: bool = True,
) -> ChangeRequest:
    """Propose pausing (or resuming) a job whose policy puts that under change control.

    Operators propose (it is their action); approvers of the job's team and environment approve
    under the same rule as an update, never the author. An *emergency* pause applies at once,
    before any approval, and opens a post-review that an approver must complete; resuming is
    never an emergency.
    """
    with transaction.atomic():
        change = JOB_STATE.new_change(
            job,
            actor=actor,
            paused=paused,
            justification=justification,
            emergency=emergency,
            apply_after=apply_after,
        )
        return _open_change(
            change,
            actor=actor,
            justification=justification,
            ticket=ticket,
            submit=submit,
            audit_data={"action": change.action, "emergency": bool(emergency)},
        )


def _applies_before_review(change: ChangeRequest) -> bool:
    return kind_of(change).applies_before_review(change)


def _locked(change: ChangeRequest) -> ChangeRequest:
    return (
        ChangeRequest.objects.select_for_update(of=("self",))
        .select_related("environment", "job", "team", "tenant")
        .get(pk=change.pk)
    )


def _rule(change: ChangeRequest) -> policies.Rule:
    return kind_of(change).rule(change)


def submit_change(change: ChangeRequest, *, actor: User) -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        if change.author_id != actor.pk:
            raise AccessDenied("Only the author can submit this change request.")
        if change.status != ChangeStatus.DRAFT:
            raise ChangeError(
                f"Only a draft can be submitted; this request is {change.get_status_display().lower()}.",
                conflict=True,
                code="not_draft",
            )
        rule = _rule(change)
        now = timezone.now()
        change.status = ChangeStatus.SUBMITTED
        change.submitted_at = now
        change.expires_at = _expiry(now)
        change.required_approvals = rule.required_approvals
        change.requires_independent_approver = rule.separation_of_duties
        change.save()
        audit.record(
            AuditAction.CHANGE_SUBMITTED,
            actor=actor,
            obj=change,
            data={
                "required_approvals": change.required_approvals,
                "separation_of_duties": change.requires_independent_approver,
            },
        )
        if change.required_approvals == 0 or _applies_before_review(change):
            # Ungoverned environment (or an emergency pause): applies at once, still recorded as a
            # change request; the emergency pause then waits for its post-review.
            change.status = ChangeStatus.APPROVED
            change.decided_at = now
            change.save()
            _apply_or_hold(change, actor=actor)
        else:
            notify.waiting_for_review(change)
    return change


def _check_not_stale(change: ChangeRequest) -> None:
    kind_of(change).check_not_stale(change)


def approve_change(
    change: ChangeRequest, *, actor: User, comment: str = "", revision: int | None = None
) -> ChangeRequest:
    """Approve ``revision``, the one the reviewer read (the API and the UI always name it); a request
    edited since answers 409 and records nothing. ``None`` (internal callers: seed, tests) means the
    current revision."""
    return _review(change, actor=actor, decision=ReviewDecision.APPROVE, comment=comment, revision=revision)


def reject_change(
    change: ChangeRequest, *, actor: User, reason: str = "", comment: str = "", revision: int | None = None
) -> ChangeRequest:
    """Reject ``revision`` for ``reason`` (required: the author reads it on the request, and may revise
    and resubmit, see ``resubmit_change``). The rejection is recorded against a revision, so it too must
    be the one the reviewer read (a fixed revision is not rejected for the faults of an earlier one).
    ``comment`` is the older name of ``reason``."""
    reason = (reason or comment or "").strip()
    if not reason:
        # Someone who may not review is told that first, not what their rejection lacks.
        refusal = policies.review_refusal(actor, change)
        if refusal:
            raise AccessDenied(refusal)
        raise ValidationError({"reason": ["Say why you reject this change: its author reads the reason."]})
    if len(reason) > 5000:
        raise ValidationError({"reason": ["At most 5000 characters."]})
    return _review(change, actor=actor, decision=ReviewDecision.REJECT, comment=reason, revision=revision)


def awaiting_review(user: User, queryset: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """Submitted requests the user may review (``policies.reviewable``) and has not reviewed at this
    revision. One query whatever the number of grants: the UI queue, its nav badge and the API filter
    share it."""

    reviewed = Review.objects.filter(change_request=OuterRef("pk"), revision=OuterRef("revision"), reviewer=user)
    return policies.reviewable(user, queryset).filter(status=ChangeStatus.SUBMITTED).exclude(Exists(reviewed))


def _review(
    change: ChangeRequest, *, actor: User, decision: ReviewDecision, comment: str, revision: int | None = None
) -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        refusal = policies.review_refusal(actor, change)
        if refusal:
            raise AccessDenied(refusal)
        if change.status != ChangeStatus.SUBMITTED:
            raise ChangeError(
                f"Only a submitted request can be reviewed; this one is {change.get_status_display().lower()}.",
                conflict=True,
                code=f"not_submitted:{change.status}",
            )
        if revision is not None and revision != change.revision:
            raise ChangeError(
                f"You reviewed revision {revision}, but the author changed the request since: it is now at "
                f"revision {change.revision}. Nothing was recorded; read the new revision and decide again.",
                conflict=True,
                code="stale_revision",
            )
        if Review.objects.filter(change_request=change, revision=change.revision, reviewer=actor).exists():
            raise ChangeError("You have already reviewed this revision.", conflict=True, code="already_reviewed")
        if decision == ReviewDecision.APPROVE:
            _check_not_stale(change)
        Review.objects.create(
            change_request=change,
            revision=change.revision,
            reviewer=actor,
            change_author_id=change.author_id,
            decision=decision,
            comment=(comment or "").strip(),
        )
        now = timezone.now()
        if decision == ReviewDecision.REJECT:
            change.status = ChangeStatus.REJECTED
            change.decided_at = now
            change.rejection_reason = comment.strip()
            change.save()
            audit.record(
                AuditAction.CHANGE_REJECTED,
                actor=actor,
                obj=change,
                data={"comment": comment, "reason": change.rejection_reason, "revision": change.revision},
            )
            notify.decided(change, actor=actor)
            return change
        audit.record(
            AuditAction.CHANGE_APPROVED,
            actor=actor,
            obj=change,
            data={"comment": comment, "revision": change.revision},
        )
        progress = approval_progress(change)
        if progress["complete"]:
            change.status = ChangeStatus.APPROVED
            change.decided_at = now
            change.save()
            notify.decided(change, actor=actor)
            _apply_or_hold(change, actor=actor)
    return change


def approval_progress(
    change: ChangeRequest, reviews: list[Review] | None = None, keys: dict[int, frozenset[int]] | None = None
) -> dict[str, Any]:
    """Approvals of the current revision that still count, against the policy snapshot taken at
    submit. An approval counts only while its reviewer may still review the request under today's
    grants (``review_refusal``); one identity (a person and the service accounts they control)
    counts once, and never when it is the author's. ``reviews`` may be prefetched with reviewers,
    ``keys`` the identity keys of the author and reviewers (``approval_progress_for`` batches both)."""
    if reviews is None:
        reviews = list(
            change.reviews.filter(revision=change.revision, decision=ReviewDecision.APPROVE).select_related("reviewer")
        )
    approvers = [r.reviewer for r in reviews if r.revision == change.revision and r.decision == ReviewDecision.APPROVE]
    if approvers and keys is None:
        keys = identity_keys([change.author_id, *(u.pk for u in approvers)])
    prime_grants(approvers)
    keys = keys or {}
    author_keys = keys.get(change.author_id, frozenset({change.author_id}))
    valid = [
        u
        for u in approvers
        if not (keys.get(u.pk, frozenset({u.pk})) & author_keys)
        and not policies.review_refusal(u, change, author_identity=False)
    ]
    by_pk = {u.pk: u for u in valid}
    counted = [by_pk[group[0]] for group in distinct_identities([u.pk for u in valid], keys)]
    independent = [
        u.get_username()
        for u in valid
        if policies.is_independent(u, tenant_id=change.tenant_id, owning_team_id=change.team_id)
    ]
    needs_independent = change.requires_independent_approver and not independent
    return {
        "approvals": len(counted),
        "required": change.required_approvals,
        "approvers": [u.get_username() for u in counted],
        "no_longer_counting": [u.get_username() for u in approvers if u.pk not in by_pk],
        "needs_independent_approver": needs_independent,
        "complete": len(counted) >= change.required_approvals and not needs_independent,
    }


def approval_progress_for(changes: list[ChangeRequest]) -> dict[int, dict[str, Any]]:
    """``approval_progress`` of many requests in a few queries whatever their number (list pages)."""

    reviews = list(
        Review.objects.filter(
            change_request__in=[c.pk for c in changes],
            decision=ReviewDecision.APPROVE,
            revision=F("change_request__revision"),
        ).select_related("reviewer")
    )
    users: dict[int, Any] = {}
    for review in reviews:
        # One object per reviewer, so its grants load once for the whole page.
        review.reviewer = users.setdefault(review.reviewer_id, review.reviewer)
    prime_grants(list(users.values()))
    by_change: dict[int, list[Review]] = {}
    for review in reviews:
        by_change.setdefault(review.change_request_id, []).append(review)
    keys = identity_keys([*users, *(c.author_id for c in changes if c.pk in by_change)]) if reviews else {}
    return {c.pk: approval_progress(c, by_change.get(c.pk, []), keys) for c in changes}


def with_valid_approvals(changes: list[ChangeRequest]) -> list[ChangeRequest]:
    """Set ``change.approvals`` to the approvals that still count (``approval_progress``), for a page
    of rows in a few queries whatever their number."""
    progress = approval_progress_for(changes)
    for change in changes:
        change.approvals = progress[change.pk]["approvals"]  # type: ignore[attr-defined]
    return changes


def comment_on_change(change: ChangeRequest, *, actor: User, body: str) -> Comment:
    """Authors and anyone who may review add remarks; comments never count as approvals."""
    body = (body or "").strip()
    if not body:
        raise ValidationError({"body": ["Write a comment."]})
    if len(body) > 10000:
        raise ValidationError({"body": ["At most 10000 characters."]})
    if change.author_id != actor.pk and policies.review_refusal(actor, change):
        raise AccessDenied("Only the author and approvers of this team and environment can comment.")
    with transaction.atomic():
        change = _locked(change)
        comment = Comment.objects.create(change_request=change, revision=change.revision, author=actor, body=body)
        audit.record(AuditAction.CHANGE_COMMENTED, actor=actor, obj=change, data={"comment": comment.pk})
    return comment


def _require_author_and_open(change: ChangeRequest, actor: User, verb: str) -> None:
    if change.author_id != actor.pk:
        raise AccessDenied(f"Only the author can {verb} this change request.")
    if change.status not in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED):
        raise ChangeError(
            f"Only a draft or submitted request can be {verb}ed; this one is {change.get_status_display().lower()}.",
            conflict=True,
            code=f"not_open:{change.status}",
        )


def _new_revision(change: ChangeRequest) -> int:
    """Bump the revision; approvals of older revisions stop counting. Returns how many were reset."""
    reset = change.reviews.filter(revision=change.revision, decision=ReviewDecision.APPROVE).count()
    change.revision += 1
    if change.status == ChangeStatus.SUBMITTED:
        rule = _rule(change)
        change.required_approvals = rule.required_approvals
        change.requires_independent_approver = rule.separation_of_duties
    return reset


def _revise_fields(
    change: ChangeRequest,
    *,
    verb: str,
    definition: Definition | None,
    justification: str | None,
    ticket: str | None,
    apply_after: datetime | None = _UNSET,
) -> None:
    """Check and set the fields an edit or a resubmission sends (None: unchanged). Every bad field is
    named in one ValidationError, and then nothing is set."""
    errors: dict[str, list[str]] = {}
    if justification is not None and not justification.strip():
        errors["justification"] = ["A justification is required: say why this change is needed."]
    if apply_after is not _UNSET:
        check_apply_after(apply_after, errors)
    proposed = change.proposed
    if definition is not None:
        if change.action == ChangeAction.DELETE:
            errors["definition"] = [f"A delete request has no definition to {verb}."]
        else:
            try:
                proposed = kind_of(change).clean(change, definition)
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    change.proposed = proposed
    if definition is not None:
        kind_of(change).on_edit(change)
    if justification is not None:
        change.justification = justification.strip()
    if ticket is not None:
        change.ticket = ticket.strip()


def edit_change(
    change: ChangeRequest,
    *,
    actor: User,
    based_on_revision: int,
    definition: Definition | None = None,
    justification: str | None = None,
    ticket: str | None = None,
    apply_after: datetime | None = _UNSET,
) -> ChangeRequest:
    """Edit a draft or submitted request. ``based_on_revision`` is the revision the editor saw:
    an edit made on an older revision is refused (optimistic concurrency). Every edit bumps the
    revision, so approvals given to the earlier revision no longer count."""
    with transaction.atomic():
        change = _locked(change)
        _require_author_and_open(change, actor, "edit")
        if based_on_revision != change.revision:
            raise ChangeError(
                f"This request was changed meanwhile (you edited revision {based_on_revision}, it is now at "
                f"revision {change.revision}); reload it and edit again.",
                conflict=True,
                code="stale_edit",
            )
        before = change.diff()
        _revise_fields(
            change,
            verb="edit",
            definition=definition,
            justification=justification,
            ticket=ticket,
            apply_after=apply_after,
        )
        if apply_after is not _UNSET:
            change.apply_after = apply_after
        reset = _new_revision(change)
        save_with_history(change, actor=actor, reason=f"edited to revision {change.revision}")
        audit.record(
            AuditAction.CHANGE_EDITED,
            actor=actor,
            obj=change,
            data={
                "revision": change.revision,
                "approvals_reset": reset,
                "definition_changed": before != change.diff(),
            },
        )
        # A new revision of a submitted request waits for its reviewers again.
        notify.waiting_for_review(change)
    return change


def rebase_change(change: ChangeRequest, *, actor: User) -> ChangeRequest:
    """Move a request onto the live version: the author's changes are replayed on top of the
    live definition (fields the author did not touch take the live values), approvals reset."""
    with transaction.atomic():
        change = _locked(change)
        _require_author_and_open(change, actor, "rebas")
        if change.action == ChangeAction.CREATE:
            raise ChangeError("A create request has no live base to rebase onto.", conflict=True, code="no_base")
        conflicts = kind_of(change).rebase(change)
        reset = _new_revision(change)
        save_with_history(change, actor=actor, reason=f"rebased to revision {change.revision}")
        audit.record(
            AuditAction.CHANGE_REBASED,
            actor=actor,
            obj=change,
            data={
                "revision": change.revision,
                "base_version": change.base_version,
                "approvals_reset": reset,
                "conflicting_fields": conflicts,
            },
        )
    return change


def withdraw_change(change: ChangeRequest, *, actor: User, reason: str = "") -> ChangeRequest:
    with transaction.atomic():
        change = _locked(change)
        if change.author_id != actor.pk:
            raise AccessDenied("Only the author can withdraw this change request.")
        if change.status not in OPEN_FOR_WITHDRAW:
            raise ChangeError(
                "Only a draft, submitted or approved-but-not-applied request can be withdrawn; "
                f"this one is {change.get_status_display().lower()}.",
                conflict=True,
                code=f"not_open:{change.status}",
            )
        change.status = ChangeStatus.WITHDRAWN
        change.decided_at = timezone.now()
        change.save()
        audit.record(AuditAction.CHANGE_WITHDRAWN, actor=actor, obj=change, data={"reason": reason})
    return change


OPEN_FOR_WITHDRAW = (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED, ChangeStatus.APPROVED)


def expire_changes(*, now: datetime | None = None) -> int:
    """Expire drafts and submitted requests past their deadline; returns how many expired."""
    now = now or timezone.now()
    due = list(
        ChangeRequest.objects.filter(
            status__in=[ChangeStatus.DRAFT, ChangeStatus.SUBMITTED], expires_at__lte=now
        ).values_list("pk", flat=True)
    )
    expired = 0
    for pk in due:
        with transaction.atomic():
            change = _locked(ChangeRequest(pk=pk))
            # Re-checked under the lock: an approval may have landed meanwhile.
            expires_at = change.expires_at
            if change.status not in (ChangeStatus.DRAFT, ChangeStatus.SUBMITTED) or not expires_at or expires_at > now:
                continue
            change.status = ChangeStatus.EXPIRED
            change.decided_at = now
            save_with_history(change, actor=SYSTEM, reason="expired")
            audit.record(
                AuditAction.CHANGE_EXPIRED,
                actor=SYSTEM,
                obj=change,
                data={"expires_at": expires_at.isoformat()},
            )
            expired += 1
    return expired


# Freeze windows and deferred applies


def active_freeze(environment: Environment, at: datetime | None = None) -> FreezeWindow | None:
    at = at or timezone.now()
    return (
        FreezeWindow.objects.filter(tenant_id=environment.tenant_id, starts_at__lte=at, ends_at__gt=at)
        .filter(Q(environment__isnull=True) | Q(environment=environment))
        .order_by("ends_at")
        .last()
    )


def create_freeze_window(
    *,
    actor: User,
    tenant: Tenant,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    environment: Environment | None = None,
) -> FreezeWindow:
    """Add a release-calendar freeze (tenant admins)."""
    errors: dict[str, list[str]] = {}
    if not (reason or "").strip():
        errors["reason"] = ["Say why changes are frozen (e.g. the release or event)."]
    if timezone.is_naive(starts_at) or timezone.is_naive(ends_at):
        errors["starts_at"] = ["Give instants with a time zone (UTC, ISO 8601 with Z)."]
    elif ends_at <= starts_at:
        errors["ends_at"] = ["A freeze must end after it starts."]
    if environment is not None and environment.tenant_id != tenant.pk:
        errors["environment"] = ["The environment belongs to another tenant."]
    if errors:
        raise ValidationError(errors)
    if not can_over(actor, Action.ADMINISTER, tenant.pk, None, environment.pk if environment else None):
        raise AccessDenied(
            "Only a tenant admin of the whole tenant (or, for one environment, of that environment) may declare freezes."
        )
    with transaction.atomic():
        freeze = FreezeWindow.objects.create(
            tenant=tenant,
            environment=environment,
            starts_at=starts_at,
            ends_at=ends_at,
            reason=reason.strip(),
            created_by=actor,
        )
        audit.record(
            AuditAction.FREEZE_CREATED,
            actor=actor,
            obj=freeze,
            tenant=tenant,
            environment_id=environment.pk if environment else None,
            data={"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(), "reason": freeze.reason},
        )
    return freeze


def freeze_for(change: ChangeRequest, at: datetime | None = None) -> FreezeWindow | None:
    if change.environment is not None:
        return active_freeze(change.environment, at)
    # A tenant-wide object touches every environment: a freeze of any of them holds it.
    at = at or timezone.now()
    return (
        FreezeWindow.objects.filter(tenant_id=change.tenant_id, starts_at__lte=at, ends_at__gt=at)
        .order_by("ends_at")
        .last()
    )


def hold_reason(change: ChangeRequest, now: datetime | None = None) -> str:
    """Why an approved request has not applied yet ('' when it may apply now)."""
    now = now or timezone.now()
    if change.apply_after and change.apply_after > now:
        return f"waits for its apply time {change.apply_after.isoformat()}"
    freeze = freeze_for(change, now)
    if freeze is not None and not change.emergency:
        return f"held by the freeze until {freeze.ends_at.isoformat()} ({freeze.reason})"
    return ""


def _apply_or_hold(change: ChangeRequest, *, actor: Actor) -> None:
    reason = hold_reason(change)
    if reason:
        audit.record(AuditAction.CHANGE_HELD, actor=actor, obj=change, data={"reason": reason})
        return
    _apply(change, actor=actor)


def apply_due_changes(*, now: datetime | None = None) -> list[ChangeRequest]:
    """Apply approved requests whose apply time has come and that no freeze holds.

    Called by ``manage.py apply_due_changes`` / ``lifecycle_sweep`` (cron, the scheduler or
    a django-q2 schedule); safe to run concurrently: each request is locked and re-checked.
    """
    now = now or timezone.now()
    due = list(
        ChangeRequest.objects.filter(status=ChangeStatus.APPROVED)
        .filter(Q(apply_after__isnull=True) | Q(apply_after__lte=now))
        .values_list("pk", flat=True)
    )
    applied = []
    for pk in due:
        with transaction.atomic():
            change = _locked(ChangeRequest(pk=pk))
            if change.status != ChangeStatus.APPROVED or hold_reason(change, now):
                continue
            _apply(change, actor=SYSTEM)
            if change.status != ChangeStatus.SUBMITTED:
                applied.append(change)
    return applied


def _apply_reason(change: ChangeRequest) -> str:
    approvers = approval_progress(change)["approvers"]
    reason = f"change request #{change.pk} ({change.get_action_display().lower()}) by {change.author.get_username()}"
    if approvers:
        reason += f", approved by {', '.join(approvers)}"
    elif _applies_before_review(change):
        reason += ", emergency: review after the fact"
    else:
        reason += ", no approval required"
    if change.emergency and not _applies_before_review(change):
        reason += ", emergency"
    return reason[:100]


def _approvals_lapsed(change: ChangeRequest, *, actor: Actor) -> bool:
    """Has an approved request fallen below its required approvals (an approver lost the role or
    was narrowed past it)? Then it returns to submitted, waiting for more, and the hold is audited."""
    if change.status != ChangeStatus.APPROVED or _applies_before_review(change):
        return False
    progress = approval_progress(change)
    if progress["complete"]:
        return False
    change.status = ChangeStatus.SUBMITTED
    change.decided_at = None
    save_with_history(change, actor=actor, reason="approvals no longer count")
    reason = f"approvals no longer count: {progress['approvals']} of {progress['required']} still valid"
    if progress["no_longer_counting"]:
        reason += f" ({', '.join(progress['no_longer_counting'])} may no longer review it)"
    audit.record(
        AuditAction.CHANGE_HELD,
        actor=actor,
        obj=change,
        data={
            "reason": reason,
            "approvals": progress["approvals"],
            "required": progress["required"],
            "no_longer_counting": progress["no_longer_counting"],
        },
    )
    return True


def _apply(change: ChangeRequest, *, actor: Actor) -> None:
    """Make the change live in one savepoint; on failure nothing of it is applied and the request
    is marked failed with the reason. The approvals are counted again first, under today's grants:
    a request whose approvers lost their role meanwhile goes back to waiting for approvals."""
    if _approvals_lapsed(change, actor=actor):
        return
    reason = _apply_reason(change)
    try:
        with transaction.atomic():
            _check_not_stale(change)
            freeze = freeze_for(change)
            version = kind_of(change).apply(change, actor=actor, reason=reason)
            change.status = ChangeStatus.APPLIED
            change.applied_at = timezone.now()
            change.applied_version = version
            save_with_history(change, actor=actor, reason=reason)
            if change.emergency and (freeze is not None or _applies_before_review(change)):
                PostReview.objects.create(change_request=change)
            audit.record(
                AuditAction.CHANGE_APPLIED,
                actor=actor,
                obj=change,
                data={
                    "job": change.job_id,
                    "kind": change.target_kind,
                    "target": change.target_id,
                    "version": version,
                    "emergency_during_freeze": bool(change.emergency and freeze is not None),
                    "emergency_before_review": _applies_before_review(change),
                },
            )
            notify.decided(change, actor=actor)
    except (ChangeError, job_services.JobStateError, ValidationError, IntegrityError) as exc:
        if isinstance(exc, ChangeError):
            reason = exc.message
        elif isinstance(exc, job_services.JobStateError):
            reason = str(exc)
        else:
            reason = _describe(exc)
        change.status = ChangeStatus.FAILED
        change.failure_reason = reason
        change.save()
        audit.record(AuditAction.CHANGE_FAILED, actor=actor, obj=change, data={"reason": reason})
        notify.decided(change, actor=actor)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "message_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return "The change conflicts with the live data (for example a job name that was taken meanwhile)."


# Post-reviews of emergency changes


def open_post_reviews(user: User) -> QuerySet[PostReview]:
    return PostReview.objects.filter(
        reviewed_at__isnull=True, change_request__in=policies.reviewable(user).values("pk")
    ).select_related("change_request")


def complete_post_review(item: PostReview, *, actor: User, notes: str) -> PostReview:
    """An approver (never the change's author) reviews an emergency change after the fact."""
    if not (notes or "").strip():
        raise ValidationError({"notes": ["Record what the review found."]})
    with transaction.atomic():
        item = PostReview.objects.select_for_update().select_related("change_request").get(pk=item.pk)
        change = item.change_request
        refusal = policies.review_refusal(actor, change)
        if refusal:
            raise AccessDenied(refusal)
        if item.reviewed_at is not None:
            raise ChangeError("This emergency change was already reviewed.", conflict=True, code="already_reviewed")
        item.reviewer = actor
        item.reviewed_at = timezone.now()
        item.notes = notes.strip()
        save_with_history(item, actor=actor, reason=None)
        audit.record(AuditAction.CHANGE_POST_REVIEWED, actor=actor, obj=change, data={"notes": item.notes})
    return item


# Rollback and promotion: both end in an ordinary change request, reviewed like any other.


def _historical_definition(record: Any) -> Definition:
    definition: Definition = {}
    for field in DEFINITION_FIELDS:
        value: Any = getattr(record, field, None)
        definition[field] = value.isoformat() if hasattr(value, "isoformat") else value
    return definition


def propose_rollback(
    job: Job, *, actor: User, version: int, justification: str, ticket: str = "", submit: bool = True
) -> ChangeRequest:
    """Propose an earlier version of a job again: a change request whose diff is against live."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationError({"version": ["Give the version number to roll back to."]})
    if job.status == JobStatus.DELETED:
        raise ChangeError("This job is deleted; it cannot be rolled back.", conflict=True, code="deleted")
    record = job.history.filter(version=version).order_by("-history_date", "-history_id").first()
    if record is None or record.status == JobStatus.DELETED:
        raise ValidationError({"version": [f"{job.name} has no version {version} to roll back to."]})
    definition = _historical_definition(record)
    if not diff(job.definition(), definition):
        raise ValidationError({"version": [f"Version {version} is what is live now (v{job.version})."]})
    return propose_change(
        actor=actor,
        action=ChangeAction.UPDATE,
        job=job,
        definition=definition,
        justification=f"Roll back to v{version}: {(justification or '').strip()}" if justification else "",
        ticket=ticket,
        submit=submit,
    )


def next_environment(environment: Environment) -> Environment | None:
    """The environment after this one in the tenant's promotion order (dev → staging → prod)."""
    return (
        Environment.objects.filter(tenant_id=environment.tenant_id, order__gt=environment.order)
        .order_by("order", "slug")
        .first()
    )


def propose_promotion(
    job: Job,
    *,
    actor: User,
    justification: str,
    target: Environment | None = None,
    parameter_values: dict[str, Any] | None = None,
    ticket: str = "",
    submit: bool = True,
) -> ChangeRequest:
    """Copy a job to the next environment, with that environment's parameter values, as a change
    request there (create, or update of the job of the same name). The definition is validated
    for the target before the request exists, so an invalid promotion never reaches review."""
    if job.status == JobStatus.DELETED:
        raise ChangeError("This job is deleted; it cannot be promoted.", conflict=True, code="deleted")
    following = next_environment(job.environment)
    if target is None:
        target = following
    if target is None:
        raise ValidationError({"environment": [f"{job.environment.slug} is the last environment; nothing follows."]})
    if following is None or target.pk != following.pk:
        expected = following.slug if following else "none"
        raise ValidationError(
            {
                "environment": [
                    f"Promote step by step: after {job.environment.slug} comes {expected}, not {target.slug}."
                ]
            }
        )
    definition = job.definition()
    if definition.get("secrets"):
        # Each environment reads its own secrets: the same paths under the target's prefix.
        definition["secrets"] = rebase_references(
            definition["secrets"],
            SecretScope.of(job.tenant, job.environment, job.team),
            SecretScope.of(job.tenant, target, job.team),
        )
    existing = (
        Job.objects.filter(tenant_id=job.tenant_id, environment=target, name=job.name)
        .exclude(status=JobStatus.DELETED)
        .first()
    )
    if parameter_values is None and existing is not None:
        # The target keeps its own values unless new ones are given.
        parameter_values = ((existing.parameters or {}).get("values") or {}).get(target.slug)
    if parameter_values is not None:
        if not isinstance(parameter_values, dict):
            raise ValidationError({"parameters": [f"values for {target.slug} must be an object."]})
        parameters = dict(definition.get("parameters") or {})
        parameters["values"] = {**(parameters.get("values") or {}), target.slug: parameter_values}
        definition["parameters"] = parameters
    text = (justification or "").strip()
    justification = f"Promote from {job.environment.slug} v{job.version}: {text}" if text else ""
    if existing is not None:
        if existing.team_id != job.team_id:
            raise ValidationError({"name": [f"{job.name} in {target.slug} belongs to another team."]})
        return propose_change(
            actor=actor,
            action=ChangeAction.UPDATE,
            job=existing,
            definition=definition,
            justification=justification,
            ticket=ticket,
            submit=submit,
        )
    return propose_change(
        actor=actor,
        action=ChangeAction.CREATE,
        team=job.team,
        environment=target,
        definition=definition,
        justification=justification,
        ticket=ticket,
        submit=submit,
    )


def propose_config_change(
    *,
    actor: User,
    kind: TargetKind | str,
    action: ChangeAction | str,
    justification: str,
    tenant: Tenant | None = None,
    environment: Environment | None = None,
    target: Model | None = None,
    definition: Definition | None = None,
    ticket: str = "",
    submit: bool = True,
    emergency: bool = False,
    apply_after: datetime | None = None,
) -> ChangeRequest:
    """Propose creating, updating or deleting a maintenance window, holiday calendar or pool.

    A create names the tenant (and the environment, where the kind has one); an update or a
    delete names the live ``target``, whose tenant and environment it keeps. Raises
    ValidationError with field errors, AccessDenied when the actor may not propose here,
    ChangeError for workflow rules. Nothing is saved unless the proposal is valid.
    """
    spec = config_changes.kind_of(kind)
    try:
        action = ChangeAction(action)
    except ValueError:
        raise ValidationError({"action": ["Must be create, update or delete."]}) from None
    errors: dict[str, list[str]] = {}
    if action == ChangeAction.POLICY:
        errors["action"] = ["Must be create, update or delete."]
    if not (justification or "").strip():
        errors["justification"] = ["A justification is required: say why this change is needed."]
    if action == ChangeAction.CREATE:
        if target is not None:
            errors["target"] = [f"A create request must not name an existing {spec.label}."]
        if tenant is None and environment is not None:
            tenant = environment.tenant
        if tenant is None:
            errors["tenant"] = ["Choose the tenant."]
        if environment is not None and tenant is not None and environment.tenant_id != tenant.pk:
            errors["environment"] = ["The environment belongs to another tenant."]
        if spec.environment == "never" and environment is not None:
            errors["environment"] = [f"A {spec.label} is tenant-wide: give no environment."]
        if spec.environment == "required" and environment is None:
            errors["environment"] = [f"A {spec.label} belongs to one environment: choose it."]
    elif target is None:
        errors["target"] = [f"Name the {spec.label} to {action.value}."]
    else:
        if not isinstance(target, spec.model):
            raise ValidationError({"target": [f"Not a {spec.label}."]})
        tenant, environment = target.tenant, config_changes.environment_of(target)  # type: ignore[attr-defined]
    check_apply_after(apply_after, errors)
    if errors:
        raise ValidationError(errors)
    assert tenant is not None
    change = ChangeRequest(
        tenant=tenant,
        team=None,
        environment=environment,
        target_kind=spec.kind,
        target_id=target.pk if target is not None else None,
        action=action,
        emergency=bool(emergency),
        apply_after=apply_after,
    )
    refusal = kind_of(change).proposal_refusal(actor, change)
    if refusal:
        raise AccessDenied(refusal)

    base = spec.definition(target) if target is not None else None
    proposed: Definition = {}
    if action == ChangeAction.DELETE:
        config_changes.check_deletable(spec, target)
    else:
        proposed = spec.clean(definition or {}, tenant=tenant, environment=environment, target=target)
        if base is not None and base == proposed:
            raise ValidationError({"definition": [f"The proposed {spec.label} is identical to the live one."]})

    change.proposed = proposed
    change.base_definition = base
    with transaction.atomic():
        return _open_change(
            change,
            actor=actor,
            justification=justification,
            ticket=ticket,
            submit=submit,
            audit_data={"action": action.value, "kind": spec.kind.value, "target": target.pk if target else None},
        )


# --- revise and resubmit (issue 17) ---


def resubmit_change(
    change: ChangeRequest,
    *,
    actor: User,
    based_on_revision: int,
    definition: Definition | None = None,
    justification: str | None = None,
    ticket: str | None = None,
) -> ChangeRequest:
    """The author revises a rejected request and submits it again: the same request, a new revision.

    Reviews of the rejected revision stay in its history but no longer count; the policy is read
    again (as at submit), and a request that now needs no approval applies at once. Anything but a
    rejected request is refused (409, code ``not_rejected``), as is a stale ``based_on_revision``;
    a bad definition or a blank justification is a field error. Nothing is written on refusal."""
    with transaction.atomic():
        change = _locked(change)
        if change.author_id != actor.pk:
            raise AccessDenied("Only the author can resubmit this change request.")
        if change.status != ChangeStatus.REJECTED:
            raise ChangeError(
                "Only a rejected request can be revised and resubmitted; this one is "
                f"{change.get_status_display().lower()}.",
                conflict=True,
                code=f"not_rejected:{change.status}",
            )
        if based_on_revision != change.revision:
            raise ChangeError(
                f"You revised revision {based_on_revision}, but the request is at revision {change.revision}; "
                "reload it and revise again.",
                conflict=True,
                code="stale_edit",
            )
        before = change.diff()
        _revise_fields(change, verb="revise", definition=definition, justification=justification, ticket=ticket)
        rejected_revision = change.revision
        reviews_reset = change.reviews.filter(revision=rejected_revision).count()
        change.revision += 1
        change.status = ChangeStatus.DRAFT
        change.decided_at = None
        change.rejection_reason = ""
        save_with_history(change, actor=actor, reason=f"revised after rejection as revision {change.revision}")
        audit.record(
            AuditAction.CHANGE_RESUBMITTED,
            actor=actor,
            obj=change,
            data={
                "revision": change.revision,
                "rejected_revision": rejected_revision,
                "reviews_reset": reviews_reset,
                "definition_changed": before != change.diff(),
            },
        )
        # Submitted like a new draft: policy snapshot, expiry, and at once when nothing is required.
        return submit_change(change, actor=actor)
