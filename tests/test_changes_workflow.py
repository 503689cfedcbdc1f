"""Change requests: editing, rebasing, expiry, comments, bad input and the history they leave."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from approvals.models import ChangeStatus, Comment, Review
from approvals.services import (
    ChangeError,
    approval_progress,
    approve_change,
    comment_on_change,
    edit_change,
    propose_change,
    rebase_change,
    reject_change,
    withdraw_change,
)
from governance.models import AuditEvent
from governance.services import AccessDenied
from jobs.models import Job


def _update(cast, job, actor=None, **fields):
    return propose_change(
        actor=actor or cast.author, action="update", job=job, definition=fields, justification="tune it"
    )


def _snapshot(change):
    change.refresh_from_db()
    return (change.status, change.revision, change.proposed, change.base_version, change.reviews.count())


def test_editing_a_submitted_request_resets_its_approvals(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    change = approve_change(change, actor=cast.approver)
    assert approval_progress(change)["approvals"] == 1
    change = edit_change(change, actor=cast.author, based_on_revision=1, definition={"timeout_seconds": 300})
    assert change.revision == 2 and change.proposed["timeout_seconds"] == 300
    assert approval_progress(change)["approvals"] == 0
    event = AuditEvent.objects.filter(action="change.edited").get()
    assert event.data["approvals_reset"] == 1
    # The earlier reviewer may review the new revision again; one more is still needed.
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.SUBMITTED
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.APPLIED
    job.refresh_from_db()
    assert job.timeout_seconds == 300


def test_a_stale_edit_is_refused_and_changes_nothing(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    edit_change(change, actor=cast.author, based_on_revision=1, justification="better reason")
    before = _snapshot(change)
    with pytest.raises(ChangeError) as info:
        edit_change(change, actor=cast.author, based_on_revision=1, definition={"timeout_seconds": 5})
    assert info.value.code == "stale_edit" and info.value.conflict
    assert "revision 2" in info.value.message
    assert _snapshot(change) == before


def test_an_invalid_edit_is_refused_with_field_errors_and_changes_nothing(cast):
    job = cast.make_job(cast.prod)
    change = approve_change(_update(cast, job, timeout_seconds=120), actor=cast.approver)
    before = _snapshot(change)
    with pytest.raises(ValidationError) as info:
        edit_change(
            change,
            actor=cast.author,
            based_on_revision=1,
            justification=" ",
            definition={"cron": "nope", "name": "data.x.y"},
        )
    assert set(info.value.message_dict) == {"justification", "cron", "name"}
    assert _snapshot(change) == before


def test_only_the_author_edits_and_only_while_open(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    for other in (cast.author2, cast.approver, cast.superuser):
        with pytest.raises(AccessDenied):
            edit_change(change, actor=other, based_on_revision=1, definition={"timeout_seconds": 5})
    withdraw_change(change, actor=cast.author)
    with pytest.raises(ChangeError) as info:
        edit_change(change, actor=cast.author, based_on_revision=1, definition={"timeout_seconds": 5})
    assert info.value.code == "not_open:withdrawn"


def test_approving_twice_or_after_the_end_is_refused(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    approve_change(change, actor=cast.approver)
    with pytest.raises(ChangeError) as info:
        approve_change(change, actor=cast.approver)
    assert info.value.code == "already_reviewed"
    approve_change(change, actor=cast.approver2)
    with pytest.raises(ChangeError) as info:
        reject_change(change, actor=cast.approver2, reason="too late")
    assert info.value.code == "not_submitted:applied"

    withdrawn = _update(cast, job, timeout_seconds=99)
    withdraw_change(withdrawn, actor=cast.author)
    with pytest.raises(ChangeError) as info:
        approve_change(withdrawn, actor=cast.approver)
    assert info.value.code == "not_submitted:withdrawn"
    assert Review.objects.filter(change_request=withdrawn).count() == 0


def test_a_request_on_an_old_version_must_be_rebased_before_approval(cast):
    job = cast.make_job(cast.staging)
    mine = _update(cast, job, timeout_seconds=120)
    theirs = _update(cast, job, actor=cast.author2, description="New words.")
    approve_change(theirs, actor=cast.approver)
    job.refresh_from_db()
    assert job.version == 2
    with pytest.raises(ChangeError) as info:
        approve_change(mine, actor=cast.approver)
    assert info.value.code == "stale" and "rebase" in info.value.message
    assert not mine.reviews.exists()

    mine = rebase_change(mine, actor=cast.author)
    assert mine.base_version == 2 and mine.revision == 2
    # The author's change replays on top of live: the other request's edit is kept.
    assert mine.proposed["description"] == "New words." and mine.proposed["timeout_seconds"] == 120
    assert [row["field"] for row in mine.diff()] == ["timeout_seconds"]
    mine = approve_change(mine, actor=cast.approver)
    assert mine.status == ChangeStatus.APPLIED
    job.refresh_from_db()
    assert (job.version, job.description, job.timeout_seconds) == (3, "New words.", 120)


def test_rebase_resets_approvals_and_reports_conflicting_fields(cast):
    job = cast.make_job(cast.prod)
    mine = approve_change(_update(cast, job, timeout_seconds=120), actor=cast.approver)
    theirs = _update(cast, job, actor=cast.author2, timeout_seconds=240)
    approve_change(theirs, actor=cast.approver)
    approve_change(theirs, actor=cast.approver2)
    mine = rebase_change(mine, actor=cast.author)
    assert approval_progress(mine)["approvals"] == 0
    event = AuditEvent.objects.filter(action="change.rebased").get()
    assert event.data["conflicting_fields"] == ["timeout_seconds"] and event.data["approvals_reset"] == 1
    assert mine.proposed["timeout_seconds"] == 120


def test_rebasing_onto_a_deleted_job_is_refused_and_changes_nothing(cast):
    job = cast.make_job(cast.staging)
    mine = _update(cast, job, timeout_seconds=120)
    deletion = propose_change(actor=cast.author2, action="delete", job=job, justification="retire")
    approve_change(deletion, actor=cast.approver)
    before = _snapshot(mine)
    with pytest.raises(ChangeError) as info:
        rebase_change(mine, actor=cast.author)
    assert info.value.code == "deleted"
    with pytest.raises(ChangeError) as info:
        approve_change(mine, actor=cast.approver)
    assert info.value.code == "deleted"
    assert _snapshot(mine) == before


def test_rebasing_a_current_request_is_refused(cast):
    job = cast.make_job(cast.staging)
    mine = _update(cast, job, timeout_seconds=120)
    with pytest.raises(ChangeError) as info:
        rebase_change(mine, actor=cast.author)
    assert info.value.code == "current"


def test_old_requests_expire_from_the_command(cast, settings):
    job = cast.make_job(cast.prod)
    old = _update(cast, job, timeout_seconds=120)
    fresh = _update(cast, job, actor=cast.author2, timeout_seconds=180)
    type(old).objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    call_command("expire_changes", stdout=(out := __import__("io").StringIO()))
    assert "1 request(s) expired" in out.getvalue()
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.status, fresh.status) == (ChangeStatus.EXPIRED, ChangeStatus.SUBMITTED)
    with pytest.raises(ChangeError):
        approve_change(old, actor=cast.approver)


def test_expiry_time_is_configurable(cast, settings):
    settings.GOVERNOR_CHANGE_EXPIRY_HOURS = 2
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    assert timedelta(hours=1, minutes=59) < change.expires_at - timezone.now() <= timedelta(hours=2)


def test_comments_are_kept_per_revision_and_never_count_as_approvals(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    comment_on_change(change, actor=cast.approver, body="Why 120?")
    comment_on_change(change, actor=cast.author, body="Load test showed 90s.")
    assert [c.body for c in Comment.objects.filter(change_request=change)] == ["Why 120?", "Load test showed 90s."]
    assert approval_progress(change)["approvals"] == 0
    with pytest.raises(AccessDenied):
        comment_on_change(change, actor=cast.globex_admin, body="hi")
    with pytest.raises(ValidationError):
        comment_on_change(change, actor=cast.approver, body="  ")


def test_applied_history_names_the_request_the_author_and_every_approver(cast):
    job = cast.make_job(cast.prod)
    change = _update(cast, job, timeout_seconds=120)
    approve_change(change, actor=cast.approver)
    change = approve_change(change, actor=cast.approver2)
    record = Job.objects.get(pk=job.pk).history.first()
    assert record.version == 2 and record.history_user == cast.approver2
    assert record.history_change_reason == (
        f"change request #{change.pk} (update job) by acme-author, approved by acme-approver, acme-approver2"
    )
    assert change.history.first().history_change_reason == record.history_change_reason
