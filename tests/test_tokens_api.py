"""API tokens: hashed at rest, expiring, revocable, last use recorded; service accounts confined to a tenant."""

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import PASSWORD
from governance.models import ApiToken, AuditAction, AuditEvent, Role, ServiceAccount
from governance.services import AccessDenied
from governance.tokens import create_service_account, issue_token


def _bearer(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def _login(username):
    return APIClient().post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")


def test_the_token_endpoint_returns_a_token_that_is_stored_only_as_a_hash(cast):
    response = _login("acme-viewer")
    assert response.status_code == 200
    raw = response.json()["token"]
    assert raw.startswith("gov_") and response.json()["expires_at"].endswith("Z")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM governance_apitoken")
        rows = repr(cursor.fetchall())
    assert raw not in rows and raw[8:] not in rows
    assert hashlib.sha256(raw.encode()).hexdigest() in rows
    assert _bearer(raw).get("/api/v1/jobs/").status_code == 200


def test_issuing_a_token_is_audited_without_the_token(cast):
    raw = _login("acme-viewer").json()["token"]
    event = AuditEvent.objects.filter(action=AuditAction.TOKEN_ISSUED).get()
    assert event.actor == cast.viewer and event.data["kind"] == "user"
    assert raw not in repr(event.data)


def test_a_wrong_password_gets_no_token(cast):
    response = APIClient().post("/api/v1/auth/token/", {"username": "acme-viewer", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_an_expired_token_is_refused(cast):
    token, raw = issue_token(cast.viewer, actor=cast.viewer)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _bearer(raw).get("/api/v1/jobs/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid, expired or revoked token."


def test_a_revoked_token_is_refused_and_the_revocation_audited(cast):
    token, raw = issue_token(cast.viewer, actor=cast.viewer)
    client = _bearer(raw)
    assert client.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/jobs/").status_code == 401
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED, actor=cast.viewer).exists()


def test_last_use_is_recorded(cast):
    token, raw = issue_token(cast.viewer, actor=cast.viewer)
    assert token.last_used_at is None
    _bearer(raw).get("/api/v1/jobs/", REMOTE_ADDR="10.1.2.3")
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_ip == "10.1.2.3"


def test_someone_cannot_see_or_revoke_another_users_token(cast):
    token, _ = issue_token(cast.author, actor=cast.author)
    _, raw = issue_token(cast.viewer, actor=cast.viewer)
    client = _bearer(raw)
    assert [t["id"] for t in client.get("/api/v1/auth/tokens/").json()["results"]] != [token.pk]
    assert client.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_token_lifetime_is_bounded(cast, settings):
    with pytest.raises(ValidationError):
        issue_token(cast.viewer, actor=cast.viewer, expires_in_days=settings.GOVERNOR_TOKEN_MAX_DAYS + 1)


def test_a_tenant_admin_creates_a_service_account_and_issues_it_a_token(cast):
    admin = APIClient()
    admin.force_authenticate(cast.admin)
    response = admin.post(
        "/api/v1/service-accounts/", {"tenant": "acme", "name": "ci-deploy", "role": "operator"}, format="json"
    )
    assert response.status_code == 201, response.json()
    account = ServiceAccount.objects.get()
    issued = admin.post(f"/api/v1/service-accounts/{account.pk}/tokens/", {"name": "gitlab"}, format="json")
    assert issued.status_code == 201
    raw = issued.json()["token"]
    bot = _bearer(raw)
    assert bot.get("/api/v1/tenants/").json()["results"][0]["slug"] == "acme"
    assert len(bot.get("/api/v1/tenants/").json()["results"]) == 1
    event = AuditEvent.objects.filter(action=AuditAction.TOKEN_ISSUED).get()
    assert event.tenant == cast.acme and event.data["kind"] == "service_account"


def test_a_service_account_cannot_log_in_with_a_password(cast):
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="ci", role=Role.VIEWER)
    assert not account.user.has_usable_password()
    assert not APIClient().login(username=account.user.username, password="")


@pytest.mark.parametrize("role", [Role.APPROVER, Role.TENANT_ADMIN])
def test_service_accounts_may_not_approve_or_administer(cast, role):
    with pytest.raises(ValidationError) as info:
        create_service_account(actor=cast.admin, tenant=cast.acme, name="bot", role=role)
    assert "role" in info.value.message_dict


def test_only_a_tenant_admin_creates_service_accounts(cast):
    with pytest.raises(AccessDenied):
        create_service_account(actor=cast.author, tenant=cast.acme, name="bot", role=Role.VIEWER)
    with pytest.raises(AccessDenied):
        create_service_account(actor=cast.globex_admin, tenant=cast.acme, name="bot", role=Role.VIEWER)
    client = APIClient()
    client.force_authenticate(cast.globex_admin)
    response = client.post(
        "/api/v1/service-accounts/", {"tenant": "acme", "name": "x", "role": "viewer"}, format="json"
    )
    assert response.status_code == 400 and "tenant" in response.json()
    assert not ServiceAccount.objects.exists()


def test_another_tenants_admin_cannot_issue_tokens_for_a_service_account(cast):
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="ci", role=Role.OPERATOR)
    client = APIClient()
    client.force_authenticate(cast.globex_admin)
    assert client.post(f"/api/v1/service-accounts/{account.pk}/tokens/", {}, format="json").status_code == 404
    with pytest.raises(AccessDenied):
        issue_token(account.user, actor=cast.author)
    assert not ApiToken.objects.exists()


def test_a_team_narrowed_service_account_sees_only_its_team(cast):
    cast.make_job(cast.dev)
    cast.make_job(cast.dev, team=cast.data)
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="ci", role=Role.VIEWER, team=cast.data)
    _, raw = issue_token(account.user, actor=cast.admin)
    names = [job["name"] for job in _bearer(raw).get("/api/v1/jobs/").json()["results"]]
    assert names == ["data.warehouse.load"]
