"""A rejection carries its reason to the author, who may revise and resubmit the same request."""

import pytest
from django.core.exceptions import ValidationError

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import ChangeError, approve_change, propose_change, reject_change, resubmit_change
from governance.models import AuditAction, AuditEvent
from jobs.models import Job
from tests.api_support import client_for, counts


def proposed(cast, **overrides):
    return propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.prod,
        definition=cast.definition(**overrides),
        justification="Nightly ledger reconciliation.",
    )


def rejected(cast):
    change = approve_change(proposed(cast), actor=cast.approver, revision=1)
    return reject_change(change, actor=cast.approver2, reason="Timeout of 60 s is too short for month end.")


def url(change, verb=""):
    return f"/api/v1/change-requests/{change.pk}/{verb + '/' if verb else ''}"


@pytest.mark.parametrize("body", [{"revision": 1}, {"revision": 1, "reason": "  "}, {"revision": 1, "comment": ""}])
def test_an_api_reject_without_a_reason_is_400_naming_reason_and_writes_nothing(cast, body):
    change = proposed(cast)
    before = counts()
    response = client_for(cast.approver).post(url(change, "reject"), body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["reason"]
    assert "author reads" in response.json()["reason"][0]
    assert counts() == before
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED and change.rejection_reason == ""


def test_the_service_refuses_a_rejection_without_a_reason(cast):
    change = proposed(cast)
    with pytest.raises(ValidationError) as caught:
        reject_change(change, actor=cast.approver, reason=" ")
    assert "reason" in caught.value.message_dict
    assert not Review.objects.exists()


def test_the_reason_is_stored_and_shown_to_the_author_in_the_api(cast):
    change = proposed(cast)
    response = client_for(cast.approver).post(
        url(change, "reject"), {"revision": 1, "reason": "Wrong team prefix."}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    body = client_for(cast.author).get(url(change)).json()
    assert body["rejection_reason"] == "Wrong team prefix."
    assert body["reviews"][0]["decision"] == "reject" and body["reviews"][0]["comment"] == "Wrong team prefix."
    listed = client_for(cast.author).get("/api/v1/change-requests/", {"mine": "true"}).json()["results"]
    assert listed[0]["rejection_reason"] == "Wrong team prefix."
    event = AuditEvent.objects.get(action=AuditAction.CHANGE_REJECTED)
    assert event.data["reason"] == "Wrong team prefix." and event.tenant == cast.acme


def test_the_database_refuses_a_rejected_request_without_a_reason(cast):
    from django.db import IntegrityError, transaction

    change = proposed(cast)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChangeRequest.objects.filter(pk=change.pk).update(status=ChangeStatus.REJECTED, rejection_reason="")


def test_resubmitting_makes_a_new_revision_with_reviews_reset_and_audited(cast):
    change = rejected(cast)
    assert change.revision == 1 and Review.objects.filter(revision=1).count() == 2
    change = resubmit_change(
        change,
        actor=cast.author,
        based_on_revision=1,
        definition={**change.proposed, "timeout_seconds": 900},
        justification="Longer timeout for month end.",
    )
    assert change.pk == ChangeRequest.objects.get().pk
    assert change.status == ChangeStatus.SUBMITTED and change.revision == 2
    assert change.rejection_reason == "" and change.decided_at is None
    assert change.proposed["timeout_seconds"] == 900 and change.justification == "Longer timeout for month end."
    # The rejected revision's reviews stay in the history; none counts for revision 2.
    assert Review.objects.filter(change_request=change, revision=1).count() == 2
    assert not Review.objects.filter(change_request=change, revision=2).exists()
    resubmitted = AuditEvent.objects.get(action=AuditAction.CHANGE_RESUBMITTED)
    assert resubmitted.actor == cast.author and resubmitted.tenant == cast.acme
    assert resubmitted.data == {
        "revision": 2,
        "rejected_revision": 1,
        "reviews_reset": 2,
        "definition_changed": True,
    }
    submits = AuditEvent.objects.filter(action=AuditAction.CHANGE_SUBMITTED, object_id=str(change.pk))
    assert submits.count() == 2
    # It is reviewed again from scratch: two fresh approvals apply it.
    approve_change(change, actor=cast.approver, revision=2)
    change = approve_change(change, actor=cast.approver2, revision=2)
    assert change.status == ChangeStatus.APPLIED
    assert Job.objects.get().timeout_seconds == 900


def test_the_api_resubmits_with_only_the_changed_fields(cast):
    change = rejected(cast)
    response = client_for(cast.author).post(
        url(change, "resubmit"), {"based_on_revision": 1, "definition": {"timeout_seconds": 1200}}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "submitted" and body["revision"] == 2 and body["rejection_reason"] == ""
    assert body["proposed"]["timeout_seconds"] == 1200 and body["proposed"]["cron"] == "*/5 * * * *"
    assert body["approvals"] == 0
    assert [(r["revision"], r["current"]) for r in body["reviews"]] == [(1, False), (1, False)]


@pytest.mark.parametrize("state", ["submitted", "approved-applied", "withdrawn"])
def test_resubmitting_a_request_that_is_not_rejected_is_409_and_writes_nothing(cast, state):
    change = proposed(cast)
    if state == "approved-applied":
        approve_change(change, actor=cast.approver)
        change = approve_change(change, actor=cast.approver2)
    elif state == "withdrawn":
        from approvals.services import withdraw_change

        change = withdraw_change(change, actor=cast.author)
    before = counts()
    response = client_for(cast.author).post(url(change, "resubmit"), {"based_on_revision": 1}, format="json")
    assert response.status_code == 409
    assert "Only a rejected request can be revised and resubmitted" in response.json()["detail"]
    assert counts() == before
    fresh = ChangeRequest.objects.get(pk=change.pk)
    assert (fresh.status, fresh.revision) == (change.status, 1)


def test_only_the_author_resubmits(cast):
    change = rejected(cast)
    before = counts()
    response = client_for(cast.author2).post(url(change, "resubmit"), {"based_on_revision": 1}, format="json")
    assert response.status_code == 403
    assert counts() == {**before, "audit_events": before["audit_events"] + 1}  # the denial only
    assert ChangeRequest.objects.get().status == ChangeStatus.REJECTED


def test_another_tenant_cannot_even_see_the_request_to_resubmit(cast):
    change = rejected(cast)
    response = client_for(cast.globex_author).post(url(change, "resubmit"), {"based_on_revision": 1}, format="json")
    assert response.status_code == 404


def test_a_bad_revision_or_definition_is_refused_with_field_errors_and_nothing_written(cast):
    change = rejected(cast)
    before = counts()
    client = client_for(cast.author)
    stale = client.post(url(change, "resubmit"), {"based_on_revision": 7}, format="json")
    assert stale.status_code == 409 and "revision 1" in stale.json()["detail"]
    bad = client.post(
        url(change, "resubmit"), {"based_on_revision": 1, "definition": {"cron": "61 * * * *"}}, format="json"
    )
    assert bad.status_code == 400 and "cron" in bad.json()
    blank = client.post(url(change, "resubmit"), {"based_on_revision": 1, "justification": " "}, format="json")
    assert blank.status_code == 400 and list(blank.json()) == ["justification"]
    unknown = client.post(url(change, "resubmit"), {"based_on_revision": 1, "status": "approved"}, format="json")
    assert unknown.status_code == 400
    assert counts() == before
    assert ChangeRequest.objects.get().status == ChangeStatus.REJECTED


def test_resubmitting_unchanged_is_allowed_with_a_new_justification(cast):
    change = rejected(cast)
    with pytest.raises(ChangeError):
        resubmit_change(change, actor=cast.author, based_on_revision=2)
    change = resubmit_change(
        change, actor=cast.author, based_on_revision=1, justification="Timeout is fine: see OPS-7."
    )
    assert change.status == ChangeStatus.SUBMITTED and change.revision == 2
    assert AuditEvent.objects.get(action=AuditAction.CHANGE_RESUBMITTED).data["definition_changed"] is False
