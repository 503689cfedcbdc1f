"""Attacks that must fail: CSRF, self-approval, privilege escalation, mass assignment, secret traversal."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from approvals.models import ChangeStatus, Review
from governance.models import AuditAction, AuditEvent, Role, ServiceAccount
from governance.services import AccessDenied, grant_role
from governance.tokens import create_service_account, issue_token
from tests.api_support import client_for


def _staging_change(cast, actor):
    return cast.propose_job(actor=actor, environment=cast.staging, justification="x")


def test_approving_in_the_browser_without_a_csrf_token_is_refused(cast):
    change = _staging_change(cast, cast.author)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast.approver)
    response = browser.post(f"/changes/{change.pk}/approve/", {"revision": 1, "comment": "looks fine"})
    assert response.status_code == 403
    assert not Review.objects.exists()
    change.refresh_from_db()
    assert change.status == ChangeStatus.SUBMITTED


def test_approving_in_the_browser_with_the_csrf_token_works(cast):
    change = _staging_change(cast, cast.author)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast.approver)
    browser.get(f"/changes/{change.pk}/")
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        f"/changes/{change.pk}/approve/", {"revision": 1, "comment": "ok", "csrfmiddlewaretoken": token}
    )
    assert response.status_code in (200, 302)
    assert Review.objects.filter(reviewer=cast.approver).exists()


def test_a_superuser_cannot_approve_their_own_change_in_the_browser(cast):
    change = _staging_change(cast, cast.superuser)
    browser = Client()
    browser.force_login(cast.superuser)
    response = browser.post(f"/changes/{change.pk}/approve/", {"revision": 1, "comment": "mine"})
    assert response.status_code == 403
    assert not Review.objects.exists()


@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.APPROVER])
def test_nobody_grants_themselves_a_role(cast, role):
    with pytest.raises(AccessDenied):
        grant_role(cast.author, role, tenant=cast.acme, actor=cast.author)
    with pytest.raises(AccessDenied):
        grant_role(cast.globex_admin, role, tenant=cast.acme, actor=cast.globex_admin)
    assert not AuditEvent.objects.filter(
        action=AuditAction.ROLE_GRANTED, actor__in=[cast.author, cast.globex_admin]
    ).exists()


def test_a_tenant_admin_cannot_reach_role_tables_in_the_django_admin(cast):
    browser = Client()
    browser.force_login(cast.admin)
    response = browser.get("/admin/governance/scopeuserrole/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_service_account_creation_ignores_smuggled_fields(cast):
    admin = client_for(cast.admin)
    response = admin.post(
        "/api/v1/service-accounts/",
        {
            "tenant": "acme",
            "name": "ci",
            "role": "viewer",
            "user": cast.superuser.pk,
            "id": 999,
            "created_by": cast.viewer.pk,
        },
        format="json",
    )
    assert response.status_code == 201
    account = ServiceAccount.objects.get()
    assert account.user != cast.superuser and account.created_by == cast.admin and account.pk != 999


def test_a_service_account_token_cannot_reach_another_tenant(cast):
    job = cast.make_job(cast.globex_prod)
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="ci", role=Role.OPERATOR)
    _, raw = issue_token(account.user, actor=cast.admin)
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert bot.get(f"/api/v1/jobs/{job.pk}/").status_code == 404
    assert bot.post(f"/api/v1/jobs/{job.pk}/trigger/", {}, format="json").status_code == 404
    assert bot.get("/api/v1/jobs/?search=ops").json()["count"] == 0


def test_a_service_account_cannot_approve_even_through_a_later_grant(cast):
    account = create_service_account(actor=cast.admin, tenant=cast.acme, name="ci", role=Role.AUTHOR)
    change = _staging_change(cast, cast.author)
    _, raw = issue_token(account.user, actor=cast.admin)
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert bot.post(f"/api/v1/change-requests/{change.pk}/approve/", {"revision": 1}, format="json").status_code == 403
    assert not Review.objects.exists()


def test_a_secret_reference_into_another_tenant_is_refused_by_the_api(cast):
    body = {
        "action": "create",
        "team": cast.payments.pk,
        "environment": cast.dev.pk,
        "justification": "steal",
        "definition": cast.definition(secrets={"DB": "vault:secret/governor/acme/../globex/db#password"}),
    }
    response = client_for(cast.author).post("/api/v1/change-requests/", body, format="json")
    assert response.status_code == 400
    assert "secrets" in str(response.json())


def test_a_token_in_the_query_string_is_not_accepted(cast):
    _, raw = issue_token(cast.viewer, actor=cast.viewer)
    assert APIClient().get(f"/api/v1/jobs/?token={raw}").status_code in (401, 403)
