"""Every way the change page refuses a rejection or a resubmission: the status, the message and where
it stands (a banner above the page, or beside the field it is about), the form kept, the denial audited,
and nothing else written."""

import re

import pytest
from django.urls import reverse

from approvals.models import ApprovalPolicy, ChangeStatus
from approvals.services import edit_change, propose_change, propose_pause_change, reject_change
from governance.models import AuditAction, AuditEvent
from tests.api_support import counts

NOT_A_REVIEWER = "You need the approver role for this team and environment to review changes."
OWN_CHANGE = "Nobody reviews their own change, administrators included."


def propose_prod(cast):
    return propose_change(
        actor=cast.author,
        action="create",
        team=cast.payments,
        environment=cast.prod,
        definition=cast.definition(),
        justification="nightly reconciliation",
    )


def rejected_pause(cast):
    """A rejected request with no form of its own: resubmitted on the change page (operator's)."""
    job = cast.make_job(cast.staging)
    ApprovalPolicy.objects.filter(environment=cast.staging).update(pause_requires_change=True)
    change = propose_pause_change(job, actor=cast.operator, paused=True, justification="noisy")
    return reject_change(change, actor=cast.approver, reason="Say which incident.")


def post(client, view, change, body):
    return client.post(reverse(view, args=[change.pk]), body)


def banner(message: str) -> str:
    return f'data-testid="error">Refused: {message} Nothing was changed.</div>'


def field_errors(html: str, field_id: str) -> list[str]:
    block = re.search(rf'<div id="{field_id}_error">((?:<div class="field-error" role="alert">.*?</div>)*)</div>', html)
    return re.findall(r'<div class="field-error" role="alert">(.*?)</div>', block.group(1)) if block else []


def denials() -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).order_by("pk")
    return [(event.data["action"], event.data["reason"]) for event in events]


# --- reject ---


@pytest.mark.parametrize("reason", ["Looks wrong.", ""])
def test_a_lesser_role_rejecting_is_403_with_the_reason_and_the_denial_audited(client, cast, reason):
    change = propose_prod(cast)
    client.force_login(cast.operator)
    before = counts()
    response = post(client, "change_reject", change, {"revision": 1, "reason": reason})
    # Told that they may not review, not what their rejection lacks.
    assert response.status_code == 403
    html = response.content.decode()
    assert banner(NOT_A_REVIEWER) in html
    assert 'data-testid="reject-box"' not in html and "reject_reason_error" not in html
    assert denials() == [("review", NOT_A_REVIEWER)]
    assert counts() == {**before, "audit_events": before["audit_events"] + 1}
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED


def test_the_author_rejecting_their_own_change_is_403(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.author)
    response = post(client, "change_reject", change, {"revision": 1, "reason": "Never mind."})
    assert response.status_code == 403
    assert banner(OWN_CHANGE) in response.content.decode()
    assert denials() == [("review", OWN_CHANGE)]


def test_a_reject_without_a_reason_is_400_beside_the_reason_without_a_banner(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.approver)
    before = counts()
    response = post(client, "change_reject", change, {"revision": 1, "reason": ""})
    assert response.status_code == 400
    html = response.content.decode()
    assert field_errors(html, "reject_reason") == ["Say why you reject this change: its author reads the reason."]
    assert 'data-testid="error"' not in html
    assert counts() == before


def test_a_reject_without_its_revision_is_400_with_the_reason_kept(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.approver)
    response = post(client, "change_reject", change, {"reason": "Timeout too short."})
    assert response.status_code == 400
    html = response.content.decode()
    assert banner("The form did not say which revision you reviewed; reload the page and decide again.") in html
    assert '<details class="reject-box" data-testid="reject-box" open>' in html
    assert ">\nTimeout too short.</textarea>" in html
    assert not change.reviews.exists()


def test_rejecting_a_revision_edited_since_is_409_with_the_reason_kept_on_the_new_revision(client, cast):
    change = propose_prod(cast)
    edit_change(
        change,
        actor=cast.author,
        based_on_revision=1,
        definition=cast.definition(timeout_seconds=900),
        justification="longer timeout",
    )
    client.force_login(cast.approver)
    before = counts()
    response = post(client, "change_reject", change, {"revision": 1, "reason": " Timeout too short. "})
    assert response.status_code == 409
    html = response.content.decode()
    assert (
        banner(
            "You reviewed revision 1, but the author changed the request since: it is now at revision 2. "
            "Nothing was recorded; read the new revision and decide again."
        )
        in html
    )
    # The confirmation step now carries revision 2 and the reason (trimmed), closed: no field is wrong.
    assert re.search(r'<input type="hidden" name="revision" value="2"[^>]*id="reject_revision"', html)
    assert ">\nTimeout too short.</textarea>" in html
    assert '<details class="reject-box" data-testid="reject-box">' in html
    assert counts() == before
    assert denials() == []


def test_rejecting_a_request_already_rejected_is_409(client, cast):
    change = reject_change(propose_prod(cast), actor=cast.approver2, reason="Wrong team.")
    client.force_login(cast.approver)
    before = counts()
    response = post(client, "change_reject", change, {"revision": 1, "reason": "Also wrong."})
    assert response.status_code == 409
    assert banner("Only a submitted request can be reviewed; this one is rejected.") in response.content.decode()
    assert counts() == before


# --- resubmit ---


def test_a_resubmit_without_a_justification_is_400_beside_the_field_without_a_banner(client, cast):
    change = rejected_pause(cast)
    client.force_login(cast.operator)
    before = counts()
    response = post(client, "change_resubmit", change, {"justification": " ", "based_on_revision": 1})
    assert response.status_code == 400
    html = response.content.decode()
    assert field_errors(html, "id_justification") == ["A justification is required: say why this change is needed."]
    assert 'data-testid="error"' not in html
    assert counts() == before


@pytest.mark.parametrize("who", ["approver", "author", "admin"])
def test_only_the_author_resubmits_on_the_page_others_get_403_and_are_audited(client, cast, who):
    change = rejected_pause(cast)
    client.force_login(getattr(cast, who))
    before = counts()
    response = post(client, "change_resubmit", change, {"justification": "x", "based_on_revision": 1})
    assert response.status_code == 403
    html = response.content.decode()
    assert banner("Only the author can resubmit this change request.") in html
    assert 'data-testid="resubmit"' not in html
    assert denials() == [("resubmit", "Only the author can resubmit this change request.")]
    assert counts() == {**before, "audit_events": before["audit_events"] + 1}
    change.refresh_from_db()
    assert (change.status, change.revision) == (ChangeStatus.REJECTED, 1)


@pytest.mark.parametrize("based_on", ["5", "", "one"])
def test_resubmitting_another_revision_is_409_with_the_justification_kept(client, cast, based_on):
    change = rejected_pause(cast)
    client.force_login(cast.operator)
    before = counts()
    body = {"justification": "INC-42 floods the channel.", "based_on_revision": based_on}
    response = post(client, "change_resubmit", change, body)
    assert response.status_code == 409
    html = response.content.decode()
    revision = based_on if based_on.isdigit() else "-1"
    assert (
        banner(f"You revised revision {revision}, but the request is at revision 1; reload it and revise again.")
        in html
    )
    assert ">\nINC-42 floods the channel.</textarea>" in html and field_errors(html, "id_justification") == []
    assert counts() == before


def test_resubmitting_a_request_that_is_not_rejected_is_409_with_the_state_named(client, cast):
    change = propose_prod(cast)
    client.force_login(cast.author)
    before = counts()
    response = post(client, "change_resubmit", change, {"justification": "x", "based_on_revision": 1})
    assert response.status_code == 409
    assert banner("Only a rejected request can be revised and resubmitted; this one is submitted.") in (
        response.content.decode()
    )
    assert counts() == before
    assert denials() == []


@pytest.mark.parametrize(
    ("view", "body"),
    [
        ("change_reject", {"revision": 1, "reason": "no"}),
        ("change_resubmit", {"justification": "x", "based_on_revision": 1}),
    ],
)
def test_another_tenant_gets_404_as_for_a_missing_request(client, cast, view, body):
    change = rejected_pause(cast) if view == "change_resubmit" else propose_prod(cast)
    client.force_login(cast.globex_admin)
    assert post(client, view, change, body).status_code == 404
    assert client.post(reverse(view, args=[999999]), body).status_code == 404
    change.refresh_from_db()
    assert change.revision == 1 and not change.reviews.filter(reviewer=cast.globex_admin).exists()
