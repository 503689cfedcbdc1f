"""Applying: deferred apply times, freeze windows, emergency changes and their post-review."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.models import ChangeStatus, PostReview
from approvals.services import (
    ChangeError,
    apply_due_changes,
    approve_change,
    complete_post_review,
    create_freeze_window,
    hold_reason,
    open_post_reviews,
    propose_change,
)
from approvals.tasks import sweep
from governance.models import AuditEvent
from governance.services import AccessDenied


def _now():
    return timezone.now()


def _staging_update(cast, job, **kwargs):
    change = propose_change(
        actor=cast.author, action="update", job=job, definition={"timeout_seconds": 120}, justification="x", **kwargs
    )
    return approve_change(change, actor=cast.approver)


def test_an_approved_change_waits_for_its_apply_time(cast):
    job = cast.make_job(cast.staging)
    change = _staging_update(cast, job, apply_after=_now() + timedelta(hours=2))
    assert change.status == ChangeStatus.APPROVED
    assert "apply time" in hold_reason(change)
    assert apply_due_changes() == []
    done = apply_due_changes(now=_now() + timedelta(hours=3))
    assert [c.pk for c in done] == [change.pk]
    change.refresh_from_db()
    job.refresh_from_db()
    assert change.status == ChangeStatus.APPLIED and job.timeout_seconds == 120
    record = job.history.first()
    assert record.history_user is None and "approved by acme-approver" in record.history_change_reason


def test_a_naive_apply_time_is_refused(cast):
    job = cast.make_job(cast.staging)
    with pytest.raises(ValidationError) as info:
        propose_change(
            actor=cast.author,
            action="update",
            job=job,
            definition={"timeout_seconds": 120},
            justification="x",
            apply_after=_now().replace(tzinfo=None),
        )
    assert "apply_after" in info.value.message_dict


def test_a_freeze_holds_approved_changes_until_it_ends(cast):
    job = cast.make_job(cast.staging)
    freeze = create_freeze_window(
        actor=cast.admin,
        tenant=cast.acme,
        starts_at=_now() - timedelta(minutes=1),
        ends_at=_now() + timedelta(hours=1),
        reason="Black Friday",
    )
    change = _staging_update(cast, job)
    assert change.status == ChangeStatus.APPROVED and "Black Friday" in hold_reason(change)
    assert AuditEvent.objects.filter(action="change.held").count() == 1
    assert sweep()["applied"] == []
    assert sweep(now=freeze.ends_at + timedelta(seconds=1))["applied"] == [change.pk]
    job.refresh_from_db()
    assert job.timeout_seconds == 120


def test_an_environment_freeze_does_not_hold_other_environments(cast):
    create_freeze_window(
        actor=cast.admin,
        tenant=cast.acme,
        environment=cast.prod,
        starts_at=_now() - timedelta(minutes=1),
        ends_at=_now() + timedelta(hours=1),
        reason="prod release",
    )
    assert _staging_update(cast, cast.make_job(cast.staging)).status == ChangeStatus.APPLIED


def test_an_emergency_change_applies_during_a_freeze_and_needs_a_post_review(cast):
    job = cast.make_job(cast.staging)
    create_freeze_window(
        actor=cast.admin,
        tenant=cast.acme,
        starts_at=_now() - timedelta(minutes=1),
        ends_at=_now() + timedelta(hours=1),
        reason="release",
    )
    change = _staging_update(cast, job, emergency=True)
    assert change.status == ChangeStatus.APPLIED
    item = PostReview.objects.get(change_request=change)
    assert list(open_post_reviews(cast.approver2)) == [item]
    assert list(open_post_reviews(cast.globex_approver)) == []
    with pytest.raises(AccessDenied):
        complete_post_review(item, actor=cast.author, notes="fine")
    with pytest.raises(ValidationError):
        complete_post_review(item, actor=cast.approver2, notes="")
    complete_post_review(item, actor=cast.approver2, notes="Root cause fixed; change was right.")
    assert list(open_post_reviews(cast.approver2)) == []
    with pytest.raises(ChangeError):
        complete_post_review(item, actor=cast.approver, notes="again")


def test_only_tenant_admins_declare_freezes_and_bad_windows_are_refused(cast):
    start, end = _now(), _now() + timedelta(hours=1)
    for outsider in (cast.author, cast.approver, cast.globex_admin):
        with pytest.raises(AccessDenied):
            create_freeze_window(actor=outsider, tenant=cast.acme, starts_at=start, ends_at=end, reason="x")
    with pytest.raises(ValidationError) as info:
        create_freeze_window(actor=cast.admin, tenant=cast.acme, starts_at=end, ends_at=start, reason="")
    assert set(info.value.message_dict) == {"ends_at", "reason"}
    with pytest.raises(ValidationError) as info:
        create_freeze_window(
            actor=cast.admin, tenant=cast.acme, environment=cast.globex_prod, starts_at=start, ends_at=end, reason="x"
        )
    assert "environment" in info.value.message_dict


def test_a_deferred_change_whose_base_moved_fails_instead_of_overwriting(cast):
    job = cast.make_job(cast.staging)
    deferred = _staging_update(cast, job, apply_after=_now() + timedelta(hours=1))
    other = propose_change(
        actor=cast.author2, action="update", job=job, definition={"description": "other"}, justification="y"
    )
    approve_change(other, actor=cast.approver)
    apply_due_changes(now=_now() + timedelta(hours=2))
    deferred.refresh_from_db()
    job.refresh_from_db()
    assert deferred.status == ChangeStatus.FAILED and "rebase" in deferred.failure_reason
    assert job.timeout_seconds == 60 and job.description == "other"
